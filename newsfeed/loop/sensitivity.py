"""How many users an experiment needs to tell a known better arm from a worse one: an A/B
split of the two arms against team-draft interleaving of the same two, measured on the same
simulated users in one loop run (the loop's own ledger: realised engagement per post shown).

A/B: per arm, each user's engagement per impression (a ratio of sums, linearised); users in
all = 2 x ((z + z) sd / difference)^2 for the two arms' difference. Interleaving: each user's
per-impression difference of credit between the teams; users = ((z + z) sd / mean)^2. Both at
a two-sided 5% level and 80% power; a resampling check draws that many users again and
again and counts how often each test finds the difference."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from newsfeed.feed.interleaving import team_credit
from newsfeed.metrics import interleaving_preference, ratio_linearised, users_needed

ALPHA, POWER = 0.05, 0.8
CHECKS = 300


def per_user(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.groupby("user_id").agg(engagement=("engagement", "sum"), impressions=("engagement", "size"))


def ab_needed(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    ua, ub = per_user(a), per_user(b)
    la, lb = ratio_linearised(ua["engagement"], ua["impressions"]), ratio_linearised(ub["engagement"], ub["impressions"])
    difference = ua["engagement"].sum() / ua["impressions"].sum() - ub["engagement"].sum() / ub["impressions"].sum()
    per_arm = users_needed(difference, la.var(ddof=1) + lb.var(ddof=1), ALPHA, POWER)
    return {"difference": float(difference), "users": 2 * per_arm, "users_per_arm": per_arm,
            "power_at_that_many": _ab_power(la, lb, difference, int(np.ceil(per_arm)))}


def interleaving_needed(frame: pd.DataFrame, a: str, b: str) -> dict:
    credit_a, credit_b, shown = team_credit(frame, a, b)
    d = (credit_a - credit_b) / shown
    needed = users_needed(float(d.mean()), float(d.var(ddof=1)), ALPHA, POWER)
    return {"mean_difference": float(d.mean()), "users": needed,
            "power_at_that_many": _mean_power(d, int(np.ceil(needed))),
            **interleaving_preference(credit_a, credit_b, shown)}


def _significant(sample: np.ndarray) -> bool:
    se = sample.std(ddof=1) / np.sqrt(len(sample))
    return bool(se > 0 and abs(sample.mean()) / se > stats.norm.ppf(1 - ALPHA / 2))


def _mean_power(values: np.ndarray, n: int, seed: int = 0) -> float | None:
    if not 2 <= n <= 100 * len(values):
        return None
    rng = np.random.default_rng(seed)
    return float(np.mean([_significant(rng.choice(values, n)) for _ in range(CHECKS)]))


def _ab_power(la: np.ndarray, lb: np.ndarray, difference: float, n: int, seed: int = 0) -> float | None:
    """Power of the difference test with ``n`` users per arm, the linearised contributions
    resampled around the observed difference."""
    if not 2 <= n <= 100 * min(len(la), len(lb)):
        return None
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(CHECKS):
        sa, sb = rng.choice(la, n), rng.choice(lb, n)
        se = np.sqrt(sa.var(ddof=1) / n + sb.var(ddof=1) / n)
        hits += abs(difference + sa.mean() - sb.mean()) / se > stats.norm.ppf(1 - ALPHA / 2)
    return hits / CHECKS


def compare(frame: pd.DataFrame, a: str, b: str, interleaved: str) -> dict:
    """Users each method needs to tell ``a`` from ``b`` in this run's ledger, and the ratio."""
    ab = ab_needed(frame[frame["arm"] == a], frame[frame["arm"] == b])
    il = interleaving_needed(frame[frame["arm"] == interleaved], a, b)
    return {"arms": [a, b], "ab": ab, "interleaving": il,
            "ratio_ab_to_interleaving": ab["users"] / il["users"] if il["users"] else None}
