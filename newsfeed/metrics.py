"""Quality metrics: classification per reaction head, ranking per request, retrieval per user.

All vectorised with numpy; rankings are evaluated per group (a request's shown posts,
or a user's held-out engagements) and averaged over groups where the metric is defined.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval, and how many units it rests on."""

    value: float
    low: float
    high: float
    requests: int

    def as_dict(self, name: str) -> dict[str, float]:
        return {name: self.value, f"{name}_low": self.low, f"{name}_high": self.high}


def log_discount(rank: np.ndarray) -> np.ndarray:
    """NDCG's position discount, 1 / log2(rank + 2): for logged data, where no world says how
    likely each position is to be looked at."""
    return 1.0 / np.log2(np.asarray(rank, np.float64) + 2.0)


def _rank_within_groups(groups: np.ndarray, scores: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(order, rank): rows sorted by group then score descending (ties at random), and each
    sorted row's position in its group's slate (0 = top)."""
    jitter = rng.random(len(scores))
    order = np.lexsort((jitter, -np.asarray(scores, np.float64), groups))
    sorted_groups = groups[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    return order, rank


def normalised_slate_value(groups: np.ndarray, values: np.ndarray, scores: np.ndarray,
                          discount: Callable[[np.ndarray], np.ndarray], clusters: np.ndarray | None = None,
                          resamples: int = 1_000, level: float = 0.95, seed: int = 0) -> Interval:
    """How much of the attainable value a scorer's slates deliver: 0 = a random order, 1 = the best.

    Each group (a request) is a slate ordered by ``scores``; its value is the sum of each
    item's ``values`` (signed: hides and blocks count against) times ``discount(position)``.
    Against that, the expected value of a uniformly random order (mean value x the summed
    discounts) and the best order (by value, descending). The estimate is the summed gain
    over random divided by the summed attainable gain, over slates where the order matters;
    the interval resamples ``clusters`` (users: one user's requests are not independent;
    default the groups) with Poisson(1) weights.
    """
    groups, values = np.asarray(groups), np.asarray(values, np.float64)
    rng = np.random.default_rng(seed)
    order, rank = _rank_within_groups(groups, scores, rng)
    weight = discount(rank)
    slate = np.unique(groups[order], return_inverse=True)[1]
    achieved = np.bincount(slate, weight * values[order])
    best_order, best_rank = _rank_within_groups(groups, values, rng)
    best = np.bincount(slate, discount(best_rank) * values[best_order])
    size = np.bincount(slate)
    random = np.bincount(slate, values[order]) / size * np.bincount(slate, weight)
    gain, attainable = achieved - random, best - random
    matters = attainable > 1e-12 * np.maximum(np.abs(best), 1.0)
    first_rows = np.r_[0, np.cumsum(size)[:-1]]
    unit = (np.asarray(clusters)[order][first_rows] if clusters is not None else np.arange(len(size)))[matters]
    unit = np.unique(unit, return_inverse=True)[1]
    gain_per_unit = np.bincount(unit, gain[matters])
    attainable_per_unit = np.bincount(unit, attainable[matters])
    value = gain_per_unit.sum() / attainable_per_unit.sum() if matters.any() else float("nan")
    draws = rng.poisson(1.0, size=(resamples, len(gain_per_unit)))
    with np.errstate(invalid="ignore", divide="ignore"):
        resampled = (draws @ gain_per_unit) / (draws @ attainable_per_unit)
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(resampled, [tail, 100 - tail]) if matters.any() else (float("nan"),) * 2
    return Interval(float(value), float(low), float(high), int(matters.sum()))
