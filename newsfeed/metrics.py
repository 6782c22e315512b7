"""Quality metrics: classification per reaction head, ranking per request, retrieval per user.

All vectorised with numpy; rankings are evaluated per group (a request's shown posts,
or a user's held-out engagements) and averaged over groups where the metric is defined.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC; NaN when only one class is present (undefined, not 0.5)."""
    labels = np.asarray(labels)
    if labels.min(initial=0) == labels.max(initial=0):
        return float("nan")
    return float(roc_auc_score(labels, scores))


def pr_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision (area under the precision-recall curve); NaN without positives."""
    labels = np.asarray(labels)
    if labels.sum() == 0:
        return float("nan")
    return float(average_precision_score(labels, scores))


def calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error: |mean label - mean prediction| per equal-count bin,
    weighted by bin size (equal-count bins: rare reactions crowd near zero)."""
    order = np.argsort(probabilities, kind="stable")
    labels, probabilities = np.asarray(labels, np.float64)[order], np.asarray(probabilities, np.float64)[order]
    total = 0.0
    for chunk_y, chunk_p in zip(np.array_split(labels, bins), np.array_split(probabilities, bins)):
        if len(chunk_y):
            total += len(chunk_y) * abs(chunk_y.mean() - chunk_p.mean())
    return total / max(len(labels), 1)


def ndcg_at_k(groups: np.ndarray, gains: np.ndarray, scores: np.ndarray, k: int = 10,
              rng: np.random.Generator | None = None) -> float:
    """Mean NDCG@k over groups (e.g. requests) with any positive gain.

    Negative gains (hides, blocks) are clipped to 0: NDCG is defined for gains >= 0, and
    a list made only of hides has nothing to order. Ties in ``scores`` are broken at
    random (``rng``), so a constant scorer scores like a random one.
    """
    groups, gains, scores = np.asarray(groups), np.clip(np.asarray(gains, np.float64), 0, None), np.asarray(scores)
    rng = rng or np.random.default_rng(0)
    jitter = rng.random(len(scores))
    # Within a group: by score descending, ties by jitter.
    order = np.lexsort((jitter, -scores.astype(np.float64), groups))
    g_sorted, gains_sorted = groups[order], gains[order]
    starts = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]])
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    discount = np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0)
    dcg = np.add.reduceat(gains_sorted * discount, starts) if len(starts) else np.array([])
    ideal_order = np.lexsort((-gains, groups))
    ideal_gains = gains[ideal_order]
    idcg = np.add.reduceat(ideal_gains * discount, starts) if len(starts) else np.array([])
    valid = idcg > 0
    return float(np.mean(dcg[valid] / idcg[valid])) if valid.any() else float("nan")


def recall_at_k(ranked: np.ndarray, relevant: list[np.ndarray], ks: tuple[int, ...]) -> dict[int, float]:
    """Mean over users of |top-k ∩ relevant| / |relevant|; ``ranked`` is (users, >= max k) item ids."""
    out = {}
    for k in ks:
        hits = [np.isin(rel, ranked[i, :k]).sum() / len(rel) for i, rel in enumerate(relevant) if len(rel)]
        out[k] = float(np.mean(hits)) if hits else float("nan")
    return out


def ndcg_of_ranked(ranked: np.ndarray, relevant: list[np.ndarray], k: int = 10) -> float:
    """Binary-relevance NDCG@k of a ranked item list per user (retrieval protocol)."""
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    values = []
    for i, rel in enumerate(relevant):
        if not len(rel):
            continue
        dcg = (np.isin(ranked[i, :k], rel) * discount[: ranked[i, :k].shape[0]]).sum()
        values.append(dcg / discount[: min(len(rel), k)].sum())
    return float(np.mean(values)) if values else float("nan")
