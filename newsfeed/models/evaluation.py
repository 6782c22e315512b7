"""Offline evaluation on the held-out later period, with baselines measured in the same run.

Ranking (the ranker): per-head ROC-AUC, PR-AUC and calibration error; on simulator data
the true expected engagement of each feed as ordered (negatives counted), normalised so a
random order is 0 and the oracle's 1, with a 95% interval over users; the same of the
engagement each impression really earned (any data, negatives counted); NDCG@10 per request
of the realised engagement (weighted labels, negatives clipped to 0), and NDCG@10 against
the true expected engagement. Scorers: the model, random,
most-popular (engagement so far, from the feature store), most-recent, and the oracle.

Retrieval (the two-tower model): Recall@50/100/500 and NDCG@10 over all candidate posts
of what each user engaged with in the test period, posts they had already been shown
excluded; against random, most-popular and most-recent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from newsfeed import metrics
from newsfeed.data.world import World, examine_probability
from newsfeed.features.catalog import TIMESTAMP
from newsfeed.models.datasets import RetrievalSet
from newsfeed.models.ranker import HEADS
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


def popularity_so_far(frame: pd.DataFrame, weights: Mapping[str, float]) -> np.ndarray:
    """Most-popular baseline: the engagement a post had earned before the request (feature store)."""
    counts = {r: np.expm1(pd.to_numeric(frame[f"post_engagement__{r}_log1p"], errors="coerce").fillna(0).to_numpy())
              for r in weights}
    return engagement_score(counts, weights)


def ranking_scorers(test: pd.DataFrame, model_scores: np.ndarray, weights: Mapping[str, float],
                    world: World | None, seed: int = 0) -> dict[str, np.ndarray]:
    scorers = {"ranker": model_scores}
    scorers["random"] = np.random.default_rng(seed).random(len(test))
    scorers["most_popular"] = popularity_so_far(test, weights)
    scorers["most_recent"] = pd.to_numeric(test["post_content__created_unix"], errors="coerce").fillna(0).to_numpy()
    if world is not None:
        scorers["oracle"] = oracle_engagement(world, test, weights)
    return scorers


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


def retrieval_scorers(rs: RetrievalSet, user_embeddings: np.ndarray, post_embeddings: np.ndarray,
                      seed: int = 0) -> dict[str, np.ndarray]:
    n_users, n_posts = len(rs.users), len(rs.posts)
    scorers = {"two_tower": user_embeddings @ post_embeddings.T}
    scorers["random"] = np.random.default_rng(seed).random((n_users, n_posts), dtype=np.float32)
    # Ties broken by a tiny random term so equal popularity does not favour low ids.
    jitter = np.random.default_rng(seed + 1).random(n_posts) * 1e-3
    scorers["most_popular"] = np.broadcast_to(rs.popularity + jitter, (n_users, n_posts))
    created = pd.to_numeric(rs.posts["post_content__created_unix"], errors="coerce").fillna(0).to_numpy()
    scorers["most_recent"] = np.broadcast_to(created + jitter, (n_users, n_posts))
    return scorers


def retrieval_report(rs: RetrievalSet, scorers: dict[str, np.ndarray], ks=RECALL_KS) -> dict[str, dict[str, float]]:
    post_ids = rs.posts["post_id"].to_numpy(np.int64)
    out = {}
    for name, scores in scorers.items():
        ranked = top_k(np.asarray(scores), rs.seen, post_ids, max(ks))
        row = {f"recall@{k}": v for k, v in metrics.recall_at_k(ranked, rs.relevant, ks).items()}
        row["ndcg@10"] = metrics.ndcg_of_ranked(ranked, rs.relevant, 10)
        out[name] = row
    return out
