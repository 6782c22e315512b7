"""Where the ranker's gap to the simulator's oracle lies (``newsfeed.feed.oracle_gap``): the
ranker over every unseen post of a sample of users, whole and as its post part (one order for
every reader), beside the oracle's post part; then how much of the oracle's post part the
posts' own features could reveal: a gradient-boosted model cross-fitted over posts (5 folds)
from each post's counters, age, topic, media and its author's other posts to the post's mean
true value. That model learns from the truth, so it is a ceiling for any estimate of a post's
appeal from those features, not a ranker.

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
    from newsfeed.feed.service import FeedService
    from newsfeed.scoring import load_weights

    world = World.of_dataset(args.home / "data")
    if world is None:
        parser.error(f"{args.home}/data: not simulated data (no world to judge by); run `make bench-home`")
    t0 = time.perf_counter()
    service = FeedService.open(args.home)
    service.slide_window()  # the corpus a replica holds now, as feed_quality.py judges it
    users = np.array(sorted(service.directory.known_users))
    users = users[:: max(1, len(users) // args.users)][: args.users]
    arm = service.experiments.current().arms[0]
    now, corpus = service.clock.now(), service.corpus
    pool = offline.unseen_pool(service, corpus, world, users, now, load_weights())
    ranker = offline.rank_whole_pool(service, arm, corpus, pool, now)
    post_ids = corpus.post_ids[pool.rows]
    report = oracle_gap.gap(pool, post_ids, ranker, args.limit)
    ceilings = appeal_ceiling(corpus.frame, corpus.popularity, post_ids, pool.value, now)
    for name, row_scores in ceilings.items():
        scores = row_scores[pd.Index(corpus.post_ids).get_indexer(post_ids)]
        report["feed"][name] = offline.judge(pool, scores, args.limit)
    report.update(users=len(users), pool_posts_per_user=len(pool.rows) / len(users), limit=args.limit,
                  seconds=time.perf_counter() - t0)

    print(f"feed of {args.limit} over every unseen post ({len(users)} users, "
          f"{report['pool_posts_per_user']:,.0f} posts each): engagement vs oracle [95% CI]")
    for name, row in report["feed"].items():
        v = "engagement_vs_oracle"
        print(f"  {name:<68} {row[v]:.3f} [{row[v + '_low']:.3f}, {row[v + '_high']:.3f}]")
    print(f"personal parts within each reader, ranker against oracle: correlation {report['personal_correlation']:.2f}, "
          f"sd {report['personal_sd']['ranker']:.2f} against {report['personal_sd']['oracle']:.2f}")
    print(f"{report['seconds']:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(args.out)
    print(f"wrote {args.out}")


def appeal_ceiling(frame: pd.DataFrame, popularity: np.ndarray, pool_post_ids: np.ndarray, value: np.ndarray,
                   now_unix: float) -> dict[str, np.ndarray]:
    """Per corpus row: the post's mean true value over the pool as cross-fitted from its own
    features, with and without its counters (NaN where no pooled user has the post unseen)."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.model_selection import KFold

    counters = [c for c in frame.columns if c.startswith("post_engagement")]
    x = frame[counters].apply(pd.to_numeric, errors="coerce").astype(float)
    x["age_hours"] = (now_unix - pd.to_numeric(frame["post_content__created_unix"], errors="coerce")) / 3600
    x["topic"] = pd.to_numeric(frame["post_content__topic_id"], errors="coerce").fillna(-1).astype(int)
    x["media"] = frame["post_content__media_type"].astype("category").cat.codes
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
        categorical = [columns.index(c) for c in ("topic", "media")]
        for train, test in KFold(5, shuffle=True, random_state=0).split(known):
            model = HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, categorical_features=categorical,
                                                  random_state=0)
            model.fit(x[columns].iloc[known[train]], target[known[train]])
            predicted[known[test]] = model.predict(x[columns].iloc[known[test]])
        out[name] = predicted
    return out


if __name__ == "__main__":
    main()
