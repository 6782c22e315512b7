"""Where the ranker's gap to the simulator's oracle lies (``newsfeed.feed.oracle_gap``): the
ranker over every unseen post of a sample of users, whole and as its post part (one order for
every reader), beside the oracle's post part; then how much of the oracle's post part the
posts' own features could reveal: a gradient-boosted model cross-fitted over posts (5 folds)
from each post's counters, age, topic, media and its author's other posts to the post's mean
true value. That model learns from the truth, so it is a ceiling for any estimate of a post's
appeal from those features, not a ranker. The ranker's post part is also split into its
order within each topic and the topics' means (readers' care for a topic, which the world's
drift moves). Then the same kind of model learnt from the logs
(every impression before the test period: the post's counters, age, topic and media then, and
the position, to the engagement it earned), scored at position 0: the appeal the logs can
teach; and once more with each impression's realised engagement replaced by its true expected
engagement had it been shown first, which parts what the logs lack into label noise (with the
position's effect, which a model of the realised labels must learn) and selection (which posts
were shown to whom and when, against the pool). Last, the ranker itself trained as the served
one is, on the same impressions with every reaction label replaced by its true probability:
how far its features and architecture reach without label noise.

    .venv/bin/python benchmarks/oracle_gap.py [--home .newsfeed] [--users 300]

Needs a trained home of simulated data (`make bench-home`). Writes benchmarks/results/oracle_gap.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from newsfeed.schema import MEDIA_TYPES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("NEWSFEED_HOME", ".newsfeed")))
    parser.add_argument("--users", type=int, default=300, help="users sampled (every n-th by id)")
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/oracle_gap.json"))
    args = parser.parse_args()
    if args.users < 10 or args.limit < 1:
        parser.error("--users >= 10, --limit >= 1")
    from newsfeed.data.world import World
    from newsfeed.feed import offline, oracle_gap
    from newsfeed.scoring import load_weights

    world = World.of_dataset(args.home / "data")
    if world is None:
        parser.error(f"{args.home}/data: not simulated data (no world to judge by); run `make bench-home`")
    t0 = time.perf_counter()
    service, users = offline.judged_service(args.home, args.users)
    arm = service.experiments.current().arms[0]
    now, corpus = service.clock.now(), service.corpus
    pool = offline.unseen_pool(service, corpus, world, users, now, load_weights())
    ranker = offline.rank_whole_pool(service, arm, corpus, pool, now)
    post_ids = corpus.post_ids[pool.rows]
    report = oracle_gap.gap(pool, post_ids, ranker, args.limit)
    for name, scores in topic_split(post_ids, corpus.topic_ids[pool.rows], pool.value, ranker).items():
        report["feed"][name] = offline.judge(pool, scores, args.limit)
    ceilings = appeal_ceiling(corpus.frame, corpus.popularity, post_ids, pool.value, now)
    logged = logged_impressions(args.home)
    ceilings.update(appeal_from_logs(logged[logged["split"] != "test"], world, corpus.frame, now))
    for name, row_scores in ceilings.items():
        scores = row_scores[pd.Index(corpus.post_ids).get_indexer(post_ids)]
        report["feed"][name] = offline.judge(pool, scores, args.limit)
    model, report["noise_free_test_feeds"] = noise_free_ranker(logged, world)
    report["feed"][NOISE_FREE] = offline.judge(pool, offline.rank_whole_pool(service, arm, corpus, pool, now, model),
                                               args.limit)
    report.update(users=len(users), pool_posts_per_user=len(pool.rows) / len(users), limit=args.limit,
                  seconds=time.perf_counter() - t0)

    print(f"feed of {args.limit} over every unseen post ({len(users)} users, "
          f"{report['pool_posts_per_user']:,.0f} posts each): engagement vs oracle [95% CI]")
    for name, row in report["feed"].items():
        v = "engagement_vs_oracle"
        print(f"  {name:<68} {row[v]:.3f} [{row[v + '_low']:.3f}, {row[v + '_high']:.3f}]")
    row = report["noise_free_test_feeds"]
    print(f"{NOISE_FREE}, on the test period's logged feeds: {row['engagement_vs_oracle']:.3f} "
          f"[{row['engagement_vs_oracle_low']:.3f}, {row['engagement_vs_oracle_high']:.3f}]")
    print(f"personal parts within each reader, ranker against oracle: correlation {report['personal_correlation']:.2f}, "
          f"sd {report['personal_sd']['ranker']:.2f} against {report['personal_sd']['oracle']:.2f}")
    print(f"{report['seconds']:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(args.out)
    print(f"wrote {args.out}")


def topic_split(post_ids: np.ndarray, topics: np.ndarray, truth: np.ndarray, ranker: np.ndarray) -> dict:
    """The ranker's post part as two feeds: its order within each topic alone (each topic's
    mean removed), and that order with the oracle's topic means under it: what knowing how
    much readers care for each topic now (a drift moves it) would add."""
    from newsfeed.feed.oracle_gap import post_and_personal

    def topic_mean(scores):
        return pd.Series(scores).groupby(np.asarray(topics)).transform("mean").to_numpy()
    ranker_post, truth_post = post_and_personal(post_ids, ranker)[0], post_and_personal(post_ids, truth)[0]
    within = ranker_post - topic_mean(ranker_post)
    return {"ranker's post part within each topic (topic means removed)": within,
            "ranker's post part within each topic + the oracle's topic means": within + topic_mean(truth_post)}


COUNTERS = "post_engagement__"
"""The post's reactions so far as the ranker reads them (the snapshot view; the live counts
online are the same totals, kept current)."""


def post_inputs(frame: pd.DataFrame, age_hours) -> pd.DataFrame:
    """A post's counters, age, topic and media: the inputs of every appeal model here."""
    counters = [c for c in frame.columns if c.startswith(COUNTERS)]
    x = frame[counters].apply(pd.to_numeric, errors="coerce").astype(float).reset_index(drop=True)
    x["age_hours"] = np.asarray(age_hours, float)
    x["topic"] = pd.to_numeric(frame["post_content__topic_id"], errors="coerce").fillna(-1).astype(int).to_numpy()
    x["media"] = pd.Categorical(frame["post_content__media_type"], categories=MEDIA_TYPES).codes
    return x


def age_now(frame: pd.DataFrame, now_unix: float) -> pd.Series:
    return (now_unix - pd.to_numeric(frame["post_content__created_unix"], errors="coerce")) / 3600


def appeal_model(columns: list[str]):
    """The gradient-boosted regressor every appeal row fits, topic and media as categories."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, random_state=0,
                                         categorical_features=[columns.index(c) for c in ("topic", "media")])


def logged_impressions(home: Path) -> pd.DataFrame:
    """Every logged impression with the ranker's point-in-time features and its ``split``."""
    from newsfeed.features.store import open_store
    from newsfeed.models import datasets

    return datasets.impression_set(home, open_store(home), datasets.load(home, home / "data"), "ranker")


def appeal_from_logs(logged: pd.DataFrame, world, corpus_frame: pd.DataFrame, now_unix: float) -> dict[str, np.ndarray]:
    """Per corpus row: a post's appeal at position 0 as learnt from the ``logged`` impressions
    (those before the test period, as the ranker's refit sees them), from their realised
    engagement and from their true expected engagement at position 0."""
    from newsfeed.scoring import load_weights, realised_engagement

    weights = load_weights()
    x = post_inputs(logged, logged["request_features__post_age_hours"])
    x["position"] = logged["position"].to_numpy()
    ts = pd.to_datetime(logged["event_timestamp"]).astype("int64").to_numpy()
    labels = {
        "post features learnt from the logs (realised engagement)":
            realised_engagement({r: logged[r].to_numpy(float) for r in weights}, weights),
        "the same, learnt from the logged impressions' true expected engagement at position 0":
            world.engagement(logged["user_id"].to_numpy(), logged["post_id"].to_numpy(), ts,
                             np.zeros(len(logged), np.int64), weights),
    }
    served = post_inputs(corpus_frame, age_now(corpus_frame, now_unix))
    served["position"] = 0
    return {name: appeal_model(list(x.columns)).fit(x, target).predict(served) for name, target in labels.items()}


NOISE_FREE = "the ranker trained on the same impressions' true reaction probabilities (no label noise)"


def noise_free_ranker(logged: pd.DataFrame, world) -> tuple[object, dict]:
    """(the default ranker trained as ``pipeline run`` trains it, on the ``logged`` impressions
    with every head's label replaced by its true probability at the logged position: soft
    labels, the same rows, features and settings, no teachers; its feed measures on the test
    period's logged feeds)."""
    from newsfeed.models import runs
    from newsfeed.models.ranker import HEADS, RankerConfig
    from newsfeed.models.settings import RANKER_TRAINING
    from newsfeed.scoring import load_weights

    parts = runs.split_parts(logged)
    truth = {}
    for name in ("train", "val"):
        rows = parts[name].copy()
        ts = pd.to_datetime(rows["event_timestamp"]).astype("int64").to_numpy()
        p = world.probabilities(rows["user_id"].to_numpy(), rows["post_id"].to_numpy(), ts, rows["position"].to_numpy())
        rows[list(HEADS)] = np.column_stack([p[f"p_{h}"] for h in HEADS]).astype(np.float32)
        truth[name] = rows
    weights = load_weights()
    # Not distilled: the true probabilities have no noise for teachers to average out.
    train = RANKER_TRAINING.model_copy(update={"teachers": 0})
    model, _ = runs.fit_ranker(RankerConfig(), train, truth["train"], truth["val"], weights, show_progress=False)
    # Judged on the realised test feeds' true expected engagement, as every ranker run is.
    report = runs.evaluate_ranker(model, parts["test"], parts["val"], weights, world)
    return model, report["ranking"]["ranker"]


def appeal_ceiling(frame: pd.DataFrame, popularity: np.ndarray, pool_post_ids: np.ndarray, value: np.ndarray,
                   now_unix: float) -> dict[str, np.ndarray]:
    """Per corpus row: the post's mean true value over the pool as cross-fitted from its own
    features, with and without its counters (NaN where no pooled user has the post unseen)."""
    from sklearn.model_selection import KFold

    x = post_inputs(frame, age_now(frame, now_unix))
    counters = [c for c in x.columns if c.startswith(COUNTERS)]
    # The author's posts in the corpus: a prior for a post too fresh to have counters of its own.
    by_author = pd.Series(popularity).groupby(frame["author_id"].to_numpy())
    x["author_popularity"], x["author_posts"] = by_author.transform("mean").to_numpy(), by_author.transform("size")
    target = pd.Series(frame["post_id"].to_numpy()).map(pd.Series(value).groupby(pool_post_ids).mean()).to_numpy()
    known = np.flatnonzero(~np.isnan(target))
    out = {}
    for name, columns in (("post features' ceiling: counters, age, topic, media, author", list(x.columns)),
                          ("post features' ceiling without the post's counters",
                           [c for c in x.columns if c not in counters])):
        predicted = np.full(len(frame), np.nan)
        for train, test in KFold(5, shuffle=True, random_state=0).split(known):
            model = appeal_model(columns)
            model.fit(x[columns].iloc[known[train]], target[known[train]])
            predicted[known[test]] = model.predict(x[columns].iloc[known[test]])
        out[name] = predicted
    return out


if __name__ == "__main__":
    main()
