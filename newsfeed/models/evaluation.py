"""Offline evaluation on the held-out later period, with baselines measured in the same run.

Ranking (the ranker): per-head ROC-AUC, PR-AUC and calibration error; on simulator data
the true expected engagement of each feed as ordered (negatives counted), normalised so a
random order is 0 and the oracle's 1, with a 95% interval over users; the same of the
engagement each impression really earned (any data, negatives counted); NDCG@10 per request
of the realised engagement (weighted labels, negatives clipped to 0), and NDCG@10 against
the true expected engagement. Scorers: the model, random,
most-popular (engagement so far, from the feature store), most-recent, and the oracle.

Retrieval (the two-tower model): each test request is a query over the corpus serving's ANN
source searches at that time (posts published within the freshness horizon, those already
shown to the user left out); Recall@50/100/500 with intervals over users and NDCG@10 of the
posts the user engaged with, the pairs no retriever could return counted apart; against
random, most-popular (decayed engagements before the request) and most-recent.

Baselines are tuned like the models, on the validation period (``tune_*``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from newsfeed import metrics
from newsfeed.data.world import World, examine_probability
from newsfeed.features.catalog import TIMESTAMP
from newsfeed.gate import GUARDED_AUC_HEADS
from newsfeed.models import datasets
from newsfeed.models.datasets import RetrievalQueries, RetrievalSet
from newsfeed.models.ranker import HEADS
from newsfeed.schema import REACTIONS
from newsfeed.scoring import engagement_score, realised_engagement

RECALL_KS = (50, 100, 500)
ENGAGEMENT = "engagement_vs_oracle"
"""The true expected engagement of each request's feed as ordered, hides and blocks counted,
under the world's position bias: 0 = a random order, 1 = the oracle's (simulator data)."""
REALISED = "engagement_vs_best"
"""The same for logged data: the engagement each impression really earned (hides and blocks
negative), NDCG's position discount, 0 = a random order, 1 = the best order of those labels."""


def oracle_engagement(world: World, frame: pd.DataFrame, weights: Mapping[str, float]) -> np.ndarray:
    """True expected engagement of each (user, post) at its time, shown first (position 0)."""
    ts_ns = pd.to_datetime(frame[TIMESTAMP], utc=True).astype("datetime64[ns, UTC]").array.asi8
    return world.engagement(frame["user_id"].to_numpy(), frame["post_id"].to_numpy(), ts_ns,
                            np.zeros(len(frame), np.int64), weights)


def head_metrics(test: pd.DataFrame, predictions: pd.DataFrame) -> dict[str, float]:
    out = {}
    for head in HEADS:
        y, p = test[head].to_numpy(), predictions[f"p_{head}"].to_numpy()
        out[f"auc_{head}"] = metrics.roc_auc(y, p)
        out[f"pr_auc_{head}"] = metrics.pr_auc(y, p)
        out[f"calibration_error_{head}"] = metrics.calibration_error(y, p)
    if "dwell_seconds" in predictions:
        out["dwell_mae_log"] = float(np.mean(np.abs(np.log1p(predictions["dwell_seconds"].to_numpy())
                                                    - np.log1p(test["dwell_seconds"].fillna(0).to_numpy()))))
    return out


POPULARITY_PRIORS = (0.0, 10.0, 100.0, 1000.0)
"""The most-popular ranker's grid, chosen per run on the validation period's feeds: 0 ranks by
the engagement a post earned so far (totals); a number ranks by engagement per impression,
shrunk toward the average rate by that many impressions (a post shown twice and liked once
is not the best post)."""


def popularity_so_far(frame: pd.DataFrame, weights: Mapping[str, float], prior_impressions: float = 0.0) -> np.ndarray:
    """Most-popular baseline from the post's engagement before the request (feature store)."""
    def so_far(column: str) -> np.ndarray:
        return np.expm1(pd.to_numeric(frame[f"post_engagement__{column}_log1p"], errors="coerce").fillna(0).to_numpy())

    total = engagement_score({r: so_far(r) for r in weights}, weights)
    if not prior_impressions:
        return total
    shown = so_far("impressions")
    average = total.sum() / max(shown.sum(), 1.0)
    return (total + prior_impressions * average) / (shown + prior_impressions)


def ranking_scorers(test: pd.DataFrame, model_scores: np.ndarray, weights: Mapping[str, float],
                    world: World | None, popularity_prior: float = 0.0, seed: int = 0) -> dict[str, np.ndarray]:
    scorers = {"ranker": model_scores}
    scorers["random"] = np.random.default_rng(seed).random(len(test))
    scorers["most_popular"] = popularity_so_far(test, weights, popularity_prior)
    scorers["most_recent"] = pd.to_numeric(test["post_content__created_unix"], errors="coerce").fillna(0).to_numpy()
    if world is not None:
        scorers["oracle"] = oracle_engagement(world, test, weights)
    return scorers


def tune_ranking_popularity(val: pd.DataFrame, weights: Mapping[str, float], world: World | None,
                            grid=POPULARITY_PRIORS) -> tuple[float, dict[float, float]]:
    """(best prior, the primary feed measure per prior) of the most-popular ranker on the
    validation period's feeds."""
    oracle = oracle_engagement(world, val, weights) if world is not None else None
    name, (values, discount) = next(iter(engagement_measures(val, weights, oracle).items()))
    groups = val["request_id"].to_numpy()
    tried = {prior: metrics.normalised_slate_value(groups, values, popularity_so_far(val, weights, prior), discount).value
             for prior in grid}
    return max(tried, key=tried.get), tried


def engagement_measures(test: pd.DataFrame, weights: Mapping[str, float],
                        oracle: np.ndarray | None) -> dict[str, tuple[np.ndarray, Callable]]:
    """name -> (each impression's value, position discount) of the feed measures: the
    realised engagement on any data; the oracle's expected engagement where there is a world."""
    realised = realised_engagement({r: test[r].to_numpy() for r in weights}, weights)
    measures = {REALISED: (realised, metrics.log_discount)}
    if oracle is not None:
        measures = {ENGAGEMENT: (oracle, examine_probability), **measures}
    return measures


def ranking_report(test: pd.DataFrame, scorers: dict[str, np.ndarray], weights: Mapping[str, float],
                   k: int = 10) -> dict[str, dict[str, float]]:
    """Per scorer: the feed measures with their intervals over users, NDCG@k of realised
    engagement and (simulator) of the oracle's expectation."""
    groups, users = test["request_id"].to_numpy(), test["user_id"].to_numpy()
    measures = engagement_measures(test, weights, scorers.get("oracle"))
    realised = measures[REALISED][0]
    out = {}
    for name, scores in scorers.items():
        row = {}
        for measure, (values, discount) in measures.items():
            row.update(metrics.normalised_slate_value(groups, values, scores, discount, clusters=users)
                       .as_dict(measure))
        row[f"ndcg@{k}"] = metrics.ndcg_at_k(groups, realised, scores, k)
        if "oracle" in scorers:
            row[f"ndcg@{k}_vs_oracle"] = metrics.ndcg_at_k(groups, scorers["oracle"], scores, k)
        out[name] = row
    return out


def paired_ranking(test: pd.DataFrame, challenger: np.ndarray, champion: np.ndarray, weights: Mapping[str, float],
                   world: World | None) -> dict[str, dict[str, float]]:
    """Challenger minus champion on the same feeds, both judged by ``weights`` (the
    engagement the platform values), each difference with its paired 95% interval over
    users (keys as in the run's metrics)."""
    groups, users = test["request_id"].to_numpy(), test["user_id"].to_numpy()
    oracle = oracle_engagement(world, test, weights) if world is not None else None
    out = {}
    for name, (values, discount) in engagement_measures(test, weights, oracle).items():
        d = metrics.paired_slate_difference(groups, values, challenger, champion, discount, clusters=users)
        out[f"ranker.{name}"] = {"difference": d.value, "low": d.low, "high": d.high, "requests": d.requests}
    return out


def paired_heads(test: pd.DataFrame, challenger: pd.DataFrame, champion: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Challenger minus champion on the same test impressions for the heads the gate guards:
    ROC-AUC of hide and block, every reaction's calibration error; predictions at the logged
    positions (``head_metrics``), intervals resampling users."""
    users = test["user_id"].to_numpy()
    out = {}
    for metric, heads, measure in (("auc", GUARDED_AUC_HEADS, metrics.weighted_auc),
                                   ("calibration_error", REACTIONS, metrics.weighted_calibration_error)):
        for head in heads:
            y = test[head].to_numpy()
            d = metrics.paired_weighted_difference(measure(y, challenger[f"p_{head}"].to_numpy()),
                                                   measure(y, champion[f"p_{head}"].to_numpy()), users)
            out[f"{metric}_{head}"] = {"difference": d.value, "low": d.low, "high": d.high, "requests": d.requests}
    return out


def top_k(scores: np.ndarray, seen: list[np.ndarray], post_ids: np.ndarray, k: int) -> np.ndarray:
    """Top-k post ids per user row of ``scores`` with each user's seen posts excluded."""
    scores = scores.astype(np.float32, copy=True)
    position = pd.Index(post_ids)
    for i, s in enumerate(seen):
        if len(s):
            cols = position.get_indexer(s)
            scores[i, cols[cols >= 0]] = -np.inf
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
    return post_ids[np.take_along_axis(part, order, axis=1)]


POPULARITY_HALF_LIVES_DAYS = (0.25, 1.0, 3.0, 10.0)
"""The most-popular retriever's grid: how fast an engagement's weight halves. Chosen per run
on the validation period's requests, the split the two-tower early-stops on."""
DAY_NS = 86_400 * 10**9


def popularity_as_of(engagements: pd.DataFrame, post_ids: np.ndarray, request_ns: np.ndarray,
                     half_life_days: float) -> np.ndarray:
    """(requests, posts): each post's engagements before each request, each weighted by
    2^-(age / half-life), scaled so each row's most popular post is 1."""
    column = pd.Index(post_ids).get_indexer(engagements["post_id"].to_numpy())
    times = engagements["ns"].to_numpy(np.int64)
    keep = column >= 0
    column, times = column[keep], times[keep]
    # Relative to the newest engagement, so weights only shrink (no overflow); a row's scale is
    # the same for every post, so the order is the decayed count's.
    weight = np.exp2((times - (times.max() if len(times) else 0)) / (half_life_days * DAY_NS))
    out = np.zeros((len(request_ns), len(post_ids)), np.float32)
    running = np.zeros(len(post_ids))
    done = 0
    for row in np.argsort(request_ns, kind="stable"):
        upto = np.searchsorted(times, request_ns[row], side="left")
        np.add.at(running, column[done:upto], weight[done:upto])
        done = max(done, upto)
        top = running.max()
        out[row] = running / top if top > 0 else running
    return out


def two_tower_scores(rs: RetrievalSet, model) -> np.ndarray:
    """(queries, corpus posts): a two-tower model's inner products, the user embedded as of
    the test period's start."""
    return model.embed_users(rs.users)[rs.query_user_rows] @ model.embed_posts(rs.posts).T


ORACLE_FEED = 10
"""The oracle's feed: the posts of highest true expected engagement for a request, which
retrieval should hand the ranker (a feed shows 10)."""


def oracle_retrieval_scores(world: World, rs: RetrievalSet, weights: Mapping[str, float],
                            chunk: int = 256) -> np.ndarray:
    """(queries, corpus posts): each post's true expected engagement for the query's user at
    the request's time, shown first (``oracle_engagement``'s)."""
    queries, post_ids = rs.queries, rs.posts["post_id"].to_numpy(np.int64)
    out = np.empty((len(queries.request_ns), len(post_ids)), np.float32)
    for start in range(0, len(out), chunk):  # in chunks of queries: the reaction model's arrays stay small
        rows = slice(start, start + chunk)
        n = len(queries.user_ids[rows])
        values = world.engagement(np.repeat(queries.user_ids[rows], len(post_ids)), np.tile(post_ids, n),
                                  np.repeat(queries.request_ns[rows], len(post_ids)),
                                  np.zeros(n * len(post_ids), np.int64), weights)
        out[rows] = values.reshape(n, len(post_ids))
    return out


def retrieval_scorers(rs: RetrievalSet, model_scores: np.ndarray, popularity_half_life_days: float,
                      world: World | None = None, weights: Mapping[str, float] | None = None,
                      seed: int = 0) -> dict[str, np.ndarray]:
    """(queries, corpus posts) scores per scorer, each as of its request (see retrieval_report);
    with a ``world``, the oracle's too (the true expected engagement under ``weights``)."""
    queries, post_ids = rs.queries, rs.posts["post_id"].to_numpy(np.int64)
    n_queries, n_posts = len(queries.request_ns), len(post_ids)
    scorers = {"two_tower": model_scores}
    scorers["random"] = np.random.default_rng(seed).random((n_queries, n_posts), dtype=np.float32)
    # Ties broken by a tiny random term so equal popularity does not favour low ids.
    jitter = (np.random.default_rng(seed + 1).random(n_posts) * 1e-6).astype(np.float32)
    scorers["most_popular"] = popularity_as_of(rs.engagements, post_ids, queries.request_ns,
                                               popularity_half_life_days) + jitter
    newest_first = rs.created_ns.argsort(kind="stable").argsort().astype(np.float32)
    scorers["most_recent"] = np.broadcast_to(newest_first, (n_queries, n_posts))
    if world is not None:
        scorers["oracle"] = oracle_retrieval_scores(world, rs, weights)
    return scorers


def retrieved(scores: np.ndarray, created_ns: np.ndarray, queries: RetrievalQueries, post_ids: np.ndarray,
              horizon_days: float, k: int) -> np.ndarray:
    """Top-k post ids per query among the posts published within ``horizon_days`` before its
    request, seen ones left out: what serving's ANN source returns."""
    age = queries.request_ns[:, None] - created_ns[None, :]
    scores = np.where((age >= 0) & (age <= horizon_days * DAY_NS), scores, -np.inf)
    return top_k(scores, queries.seen, post_ids, k)


def hits(ranked: np.ndarray, queries: RetrievalQueries, k: int) -> np.ndarray:
    """Per query with a relevant post: the share of its relevant posts in the top k."""
    return np.array([np.isin(rel, ranked[i, :k]).mean() for i, rel in enumerate(queries.relevant) if len(rel)])


def recall_intervals(ranked: np.ndarray, queries: RetrievalQueries, ks) -> dict[int, metrics.Interval]:
    """Recall@k averaged over queries with a relevant post, with intervals resampling users."""
    return {k: metrics.mean_interval(hits(ranked, queries, k), queries.answerable_users) for k in ks}


def paired_retrieval(rs: RetrievalSet, challenger: np.ndarray, champion: np.ndarray,
                     ks=RECALL_KS) -> dict[str, dict[str, float]]:
    """Challenger minus champion two-tower Recall@k on the same requests (scores as
    ``retrieval_scorers``' two_tower), intervals resampling users."""
    post_ids, queries = rs.posts["post_id"].to_numpy(np.int64), rs.queries
    users = queries.answerable_users
    ours, theirs = (retrieved(scores, rs.created_ns, queries, post_ids, rs.horizon_days, max(ks))
                    for scores in (challenger, champion))
    out = {}
    for k in ks:
        d = metrics.mean_interval(hits(ours, queries, k) - hits(theirs, queries, k), users)
        out[f"two_tower.recall_at_{k}"] = {"difference": d.value, "low": d.low, "high": d.high, "requests": d.requests}
    return out


def oracle_recall(ranked: np.ndarray, ideal: np.ndarray, users: np.ndarray, ks) -> dict[int, metrics.Interval]:
    """Per query, the share of the oracle's feed (``ideal``: its post ids) in the top k of
    ``ranked``, averaged over queries with intervals resampling users."""
    return {k: metrics.mean_interval((ranked[:, :k, None] == ideal[:, None, :]).any(axis=1).mean(axis=1), users)
            for k in ks}


def retrieval_report(rs: RetrievalSet, scorers: dict[str, np.ndarray], ks=RECALL_KS) -> dict[str, dict[str, float]]:
    """Per scorer: Recall@k (intervals over users) and NDCG@10 of the engaged posts serving
    could return (the engaged pairs it never could are counted apart, in "corpus"); with an
    oracle scorer (simulator data), ``oracle_recall@k`` too: the share of the oracle's feed
    in the top k, what users would have liked most whether or not the logging policy showed it."""
    post_ids, queries = rs.posts["post_id"].to_numpy(np.int64), rs.queries
    ranked = {name: retrieved(np.asarray(scores), rs.created_ns, queries, post_ids, rs.horizon_days, max(ks))
              for name, scores in scorers.items()}
    ideal = ranked["oracle"][:, :ORACLE_FEED] if "oracle" in ranked else None
    out = {}
    for name, top in ranked.items():
        row = {}
        for k, interval in recall_intervals(top, queries, ks).items():
            row.update(interval.as_dict(f"recall@{k}"))
        row["ndcg@10"] = metrics.ndcg_of_ranked(top, queries.relevant, 10)
        if ideal is not None:
            for k, interval in oracle_recall(top, ideal, queries.user_ids, ks).items():
                row.update(interval.as_dict(f"oracle_recall@{k}"))
        out[name] = row
    lost = sum(queries.unretrievable.values())
    out["corpus"] = {"posts": float(len(post_ids)), "horizon_days": rs.horizon_days,
                     "queries": float(sum(len(r) > 0 for r in queries.relevant)),
                     "relevant_pairs": float(queries.pairs),
                     **{f"unretrievable_{why}": float(n) for why, n in queries.unretrievable.items()},
                     "unretrievable_share": lost / max(lost + queries.pairs, 1),
                     **({"oracle_feed": float(ORACLE_FEED)} if ideal is not None else {})}
    return out


def tune_retrieval_popularity(impressions: pd.DataFrame, posts: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp,
                     horizon_days: float, grid=POPULARITY_HALF_LIVES_DAYS, k: int = 100) -> tuple[float, dict]:
    """(best half-life, Recall@k per half-life) of the most-popular retriever on the requests
    of [start, end) (the validation period), from the engagements before each."""
    created = datasets.created_by_post(posts)
    queries = datasets.retrieval_queries(impressions, created, start, end - pd.Timedelta(1, "ns"), horizon_days)
    engagements = datasets.engagement_events(impressions, end)
    post_ids = created.index.to_numpy(np.int64)
    tried = {}
    for half_life in grid:
        ranked = retrieved(popularity_as_of(engagements, post_ids, queries.request_ns, half_life),
                           created.to_numpy(), queries, post_ids, horizon_days, k)
        tried[half_life] = metrics.recall_at_k(ranked, queries.relevant, (k,))[k]
    return max(tried, key=tried.get), tried
