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


@dataclass(frozen=True)
class SlateGains:
    """Per resampling unit (a user, or a request): what a scorer's slates gained over a
    random order, and what the best order could have gained. Units depend only on the
    slates and their values, so two scorers' gains on the same slates pair unit by unit."""

    gain: np.ndarray
    attainable: np.ndarray
    requests: int


def slate_gains(groups: np.ndarray, values: np.ndarray, scores: np.ndarray,
                discount: Callable[[np.ndarray], np.ndarray], clusters: np.ndarray | None = None,
                seed: int = 0) -> SlateGains:
    """Each group (a request) is a slate ordered by ``scores``; its value is the sum of each
    item's ``values`` (signed: hides and blocks count against) times ``discount(position)``.
    Against it, the expected value of a uniformly random order (mean value x the summed
    discounts) and of the best order (by value, descending). Slates where the order cannot
    matter (one post, equal values) are left out."""
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
    return SlateGains(np.bincount(unit, gain[matters]), np.bincount(unit, attainable[matters]), int(matters.sum()))


DRAWS_PER_CHUNK = 20_000_000
"""Bootstrap weights drawn at a time (160 MB): long logs are resampled in chunks of resamples."""


def ratio_interval(numerator: np.ndarray, denominator: np.ndarray, requests: int, resamples: int = 1_000,
                   level: float = 0.95, seed: int = 0) -> Interval:
    """sum(numerator) / sum(denominator) with a Poisson(1) bootstrap interval over units
    (one weight per unit per resample; a mean is the ratio to a column of ones)."""
    if requests == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    numerator, denominator = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    rng = np.random.default_rng(seed)
    step = max(1, DRAWS_PER_CHUNK // max(len(numerator), 1))
    parts = []
    for start in range(0, resamples, step):  # the same stream of weights as one draw of them all
        draws = rng.poisson(1.0, size=(min(step, resamples - start), len(numerator)))
        with np.errstate(invalid="ignore", divide="ignore"):
            parts.append((draws @ numerator) / (draws @ denominator))
    resampled = np.concatenate(parts)
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(resampled, [tail, 100 - tail])
    return Interval(float(numerator.sum() / denominator.sum()), float(low), float(high), requests)


def mean_interval(values: np.ndarray, clusters: np.ndarray, resamples: int = 1_000, level: float = 0.95,
                  seed: int = 0) -> Interval:
    """The mean of ``values`` (one per query) with an interval resampling ``clusters`` (users:
    one user's queries are not independent)."""
    unit = np.unique(np.asarray(clusters), return_inverse=True)[1]
    values = np.asarray(values, np.float64)
    return ratio_interval(np.bincount(unit, values), np.bincount(unit).astype(np.float64), len(values),
                           resamples, level, seed)


def normalised_slate_value(groups: np.ndarray, values: np.ndarray, scores: np.ndarray,
                           discount: Callable[[np.ndarray], np.ndarray], clusters: np.ndarray | None = None,
                           resamples: int = 1_000, level: float = 0.95, seed: int = 0) -> Interval:
    """How much of the attainable value a scorer's slates deliver: 0 = a random order, 1 = the
    best (see ``slate_gains``): the summed gain over the summed attainable gain, with an
    interval that resamples ``clusters`` (users: one user's requests are not independent;
    default the requests)."""
    gains = slate_gains(groups, values, scores, discount, clusters, seed)
    return ratio_interval(gains.gain, gains.attainable, gains.requests, resamples, level, seed)


def paired_slate_difference(groups: np.ndarray, values: np.ndarray, scores: np.ndarray, baseline: np.ndarray,
                            discount: Callable[[np.ndarray], np.ndarray], clusters: np.ndarray | None = None,
                            resamples: int = 1_000, level: float = 0.95, seed: int = 0) -> Interval:
    """``normalised_slate_value`` of ``scores`` minus that of ``baseline`` on the same slates,
    with the interval of the difference (both resampled together, unit by unit): what a
    challenger gains or loses against a champion, beyond the noise of which users were drawn."""
    ours = slate_gains(groups, values, scores, discount, clusters, seed)
    theirs = slate_gains(groups, values, baseline, discount, clusters, seed)
    return ratio_interval(ours.gain - theirs.gain, ours.attainable, ours.requests, resamples, level, seed)


def weighted_auc(labels: np.ndarray, scores: np.ndarray) -> Callable[[np.ndarray], float]:
    """ROC-AUC of ``scores`` as a function of per-row weights (ties count half): sorted once,
    so a bootstrap re-weights rows in linear time."""
    labels = np.asarray(labels).astype(bool)
    tie_group = np.unique(np.asarray(scores, np.float64), return_inverse=True)[1]

    def auc(weights: np.ndarray) -> float:
        positive = np.bincount(tie_group, weights * labels)
        negative = np.bincount(tie_group, weights * ~labels)
        below = np.cumsum(negative) - negative
        pairs = positive.sum() * negative.sum()
        return float((positive * (below + negative / 2)).sum() / pairs) if pairs > 0 else float("nan")
    return auc


def weighted_calibration_error(labels: np.ndarray, probabilities: np.ndarray,
                               bins: int = 15) -> Callable[[np.ndarray], float]:
    """``calibration_error`` as a function of per-row weights, its bins fixed by the unweighted data."""
    order = np.argsort(probabilities, kind="stable")
    bin_of = np.empty(len(order), np.int64)
    for b, rows in enumerate(np.array_split(order, bins)):
        bin_of[rows] = b
    residual = np.asarray(labels, np.float64) - np.asarray(probabilities, np.float64)

    def error(weights: np.ndarray) -> float:
        total = weights.sum()
        return float(np.abs(np.bincount(bin_of, weights * residual, minlength=bins)).sum() / total) if total else float("nan")
    return error


def paired_weighted_difference(ours: Callable[[np.ndarray], float], theirs: Callable[[np.ndarray], float],
                               clusters: np.ndarray, resamples: int = 500, level: float = 0.95,
                               seed: int = 0) -> Interval:
    """``ours(w) - theirs(w)`` on the same rows, with an interval from a Poisson bootstrap
    that re-weights whole ``clusters`` (users) on both sides at once."""
    unit = np.unique(np.asarray(clusters), return_inverse=True)[1]
    ones = np.ones(len(unit))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        weights = rng.poisson(1.0, unit.max() + 1)[unit].astype(np.float64)
        draws.append(ours(weights) - theirs(weights))
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(draws, [tail, 100 - tail])
    return Interval(ours(ones) - theirs(ones), float(low), float(high), int(unit.max() + 1))


def interleaving_preference(credit_a: np.ndarray, credit_b: np.ndarray, impressions: np.ndarray,
                            seed: int = 0) -> dict:
    """Interleaving's verdict from each user's credit to either team (the engagement their
    reactions gave the posts each arm picked): the share of users preferring ``a`` among those
    who preferred one, and the mean per-impression difference, each with a 95% interval over
    users."""
    a, b = np.asarray(credit_a, np.float64), np.asarray(credit_b, np.float64)
    n = len(a)
    wins, losses = a > b, a < b
    share = ratio_interval(wins.astype(np.float64), (wins | losses).astype(np.float64), n, seed=seed)
    diff = ratio_interval(a - b, np.asarray(impressions, np.float64), n, seed=seed)
    return {"preference_a": {"estimate": share.value, "ci": [share.low, share.high]},
            "difference_per_impression": {"estimate": diff.value, "ci": [diff.low, diff.high]},
            "users": int(n), "wins_a": int(wins.sum()), "wins_b": int(losses.sum()), "ties": int(n - wins.sum()
                                                                                                - losses.sum())}


def users_needed(effect: float, per_user_variance: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Units a two-sided z-test needs to tell a mean of ``effect`` from zero, each unit adding
    ``per_user_variance`` to the estimate's variance times n: ((z_{1-a/2} + z_power) sd / effect)^2."""
    from scipy import stats

    if effect == 0 or not np.isfinite(effect):
        return float("inf")
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return float(z**2 * per_user_variance / effect**2)


def ratio_linearised(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Per-unit contributions of a ratio of sums (the delta method): their variance / n is the
    ratio's variance."""
    numerator, denominator = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    ratio = numerator.sum() / denominator.sum()
    return (numerator - ratio * denominator) / denominator.mean()
