"""Per-arm analysis of an experiment from its impression log, with honest statistics.

Rates are ratios of sums over users (clicks / impressions): one user's impressions are not
independent, so every interval treats the user as the unit (the delta method for a ratio
of per-user sums; relative lifts by the delta method on the two arms' ratios). The
sample-ratio-mismatch test compares the users each arm got with the configured shares.
Guardrails say when a challenger is confidently worse on what must not get worse.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from newsfeed.schema import REACTIONS
from newsfeed.scoring import engagement_score, load_weights

Z = float(stats.norm.ppf(0.975))
SRM_ALPHA = 0.001
"""The conventional SRM threshold: a real mismatch is rarely subtle, and at 0.001 a healthy
experiment checked daily raises a false alarm about once in three years."""


class Guardrails(BaseModel):
    """What a challenger must not make worse. A relative limit is breached when the lift's
    whole 95% interval lies above it (confidently worse by more than that)."""

    model_config = ConfigDict(extra="forbid")
    hide_rate: float = Field(0.10, ge=0, description="relative rise in hides per impression")
    block_rate: float = Field(0.10, ge=0, description="relative rise in blocks per impression")
    latency_p95_ms: float = Field(200.0, gt=0, description="95th percentile of request latency (absolute)")
    degraded_rate: float = Field(0.05, ge=0, le=1, description="share of requests with a degraded stage (absolute)")


def _user_sums(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return frame.groupby("user_id")[columns].sum()


def ratio_interval(numerator: np.ndarray, denominator: np.ndarray) -> tuple[float, float]:
    """(ratio of sums, variance of it) over units (users), by the delta method."""
    n = len(numerator)
    mean_x, mean_y = numerator.mean(), denominator.mean()
    ratio = mean_x / mean_y
    if n < 2:
        return float(ratio), float("nan")
    cov = np.cov(numerator, denominator)
    variance = (cov[0, 0] - 2 * ratio * cov[0, 1] + ratio**2 * cov[1, 1]) / (n * mean_y**2)
    return float(ratio), float(variance)


def relative_lift(treatment: tuple[float, float], control: tuple[float, float]) -> dict:
    """(t / c - 1) with a 95% interval; ``treatment``/``control``: (ratio, variance)."""
    (t, var_t), (c, var_c) = treatment, control
    if c == 0 or t == 0:
        return {"estimate": float(t / c - 1) if c else float("nan"), "ci": [float("nan"), float("nan")]}
    lift = t / c
    se = lift * np.sqrt(var_t / t**2 + var_c / c**2)
    # A negative control (engagement with hides and blocks counted can be) flips the ratio's sign: keep lo <= hi.
    low, high = sorted((float(lift - 1 - Z * se), float(lift - 1 + Z * se)))
    return {"estimate": float(lift - 1), "ci": [low, high]}


def difference(treatment: tuple[float, float], control: tuple[float, float]) -> dict:
    """t - c with a 95% interval: for measures that can be negative (engagement counts hides and
    blocks against), where a relative lift would flip its sign."""
    (t, var_t), (c, var_c) = treatment, control
    se = float(np.sqrt(var_t + var_c))
    return {"estimate": float(t - c), "ci": [float(t - c - Z * se), float(t - c + Z * se)]}


def srm(users: dict[str, int], expected: dict[str, float]) -> dict:
    """Chi-square goodness of fit of users per arm against the expected shares (percent)."""
    arms = [a for a in expected if expected[a] > 0]
    observed = np.array([users.get(a, 0) for a in arms], np.float64)
    shares = np.array([expected[a] for a in arms], np.float64)
    if len(arms) < 2 or observed.sum() == 0:
        return {"p_value": 1.0, "mismatch": False, "expected": expected, "observed": users}
    predicted = shares / shares.sum() * observed.sum()
    statistic, p_value = stats.chisquare(observed, predicted)
    return {"p_value": float(p_value), "mismatch": bool(p_value < SRM_ALPHA), "statistic": float(statistic),
            "expected": {a: float(s) for a, s in zip(arms, shares)}, "observed": users}


def _beyond_accuracy(frame: pd.DataFrame, posts: pd.DataFrame | None, popularity: pd.Series) -> dict:
    """Diversity (distinct topics and authors per feed), novelty (mean self-information of the
    shown posts' popularity) and catalogue coverage (share of posts shown at least once)."""
    out = {"novelty": float(-np.log2(popularity.reindex(frame["post_id"]).to_numpy()).mean())}
    if posts is not None and not posts.empty:
        meta = posts.set_index("post_id")
        shown = frame.assign(topic=meta["topic"].reindex(frame["post_id"]).to_numpy(),
                             author=meta["author_id"].reindex(frame["post_id"]).to_numpy())
        per_feed = shown.groupby("request_id").agg(topics=("topic", "nunique"), authors=("author", "nunique"))
        out["topics_per_feed"] = float(per_feed["topics"].mean())
        out["authors_per_feed"] = float(per_feed["authors"].mean())
        out["coverage"] = float(frame["post_id"].nunique() / len(posts))
    return out


def analyse(impressions: pd.DataFrame, control: str, expected: dict[str, float] | None = None,
            posts: pd.DataFrame | None = None, guardrails: Guardrails = Guardrails(),
            weights: dict[str, float] | None = None) -> dict:
    """Per arm: users, impressions, CTR and every reaction rate, engagement per impression and
    per user, dwell, beyond-accuracy measures; against ``control``, relative lifts of the rates
    and differences of engagement (which can be negative), each with a 95% interval;
    the SRM test against ``expected`` shares; and each challenger's guardrail breaches."""
    arms = sorted(impressions["variant"].unique(), key=lambda a: (a != control, a))
    if control not in arms:
        raise ValueError(f"control arm {control!r} has no impressions (arms in the log: {', '.join(arms) or 'none'})")
    weights = weights or load_weights(None)
    frame = impressions.assign(engagement=engagement_score({r: impressions[r] for r in weights}, weights),
                               impressions=1)
    popularity = frame["post_id"].value_counts(normalize=True)
    rates = [*REACTIONS, "engagement", "dwell_seconds"]
    summaries, ratios = {}, {}
    for arm in arms:
        part = frame[frame["variant"] == arm]
        sums = _user_sums(part, ["impressions", *rates])
        count = sums["impressions"].to_numpy(np.float64)
        ratios[arm] = {r: ratio_interval(sums[r].to_numpy(np.float64), count) for r in rates}
        per_user = sums["engagement"].to_numpy(np.float64)
        summary = {"users": int(len(sums)), "impressions": int(len(part)),
                   "ctr": ratios[arm]["click"][0],
                   **{f"{r}_rate": ratios[arm][r][0] for r in REACTIONS if r != "click"},
                   "engagement_per_impression": ratios[arm]["engagement"][0],
                   "engagement_per_user": float(per_user.mean()),
                   "dwell_seconds": ratios[arm]["dwell_seconds"][0],
                   **_beyond_accuracy(part, posts, popularity)}
        ratios[arm]["engagement_per_user"] = (float(per_user.mean()),
                                              float(per_user.var(ddof=1) / len(per_user)) if len(per_user) > 1 else
                                              float("nan"))
        if "latency_ms" in part.columns:
            summary["latency_p95_ms"] = float(part.drop_duplicates("request_id")["latency_ms"].quantile(0.95))
        if "degraded" in part.columns:
            summary["degraded_rate"] = float(part.drop_duplicates("request_id")["degraded"].astype(bool).mean())
        summaries[arm] = summary
    for arm in arms:
        if arm == control:
            continue
        summaries[arm]["lift_ctr"] = relative_lift(ratios[arm]["click"], ratios[control]["click"])
        for r in REACTIONS[1:]:
            summaries[arm][f"lift_{r}_rate"] = relative_lift(ratios[arm][r], ratios[control][r])
        summaries[arm]["diff_engagement_per_impression"] = difference(ratios[arm]["engagement"],
                                                                      ratios[control]["engagement"])
        summaries[arm]["diff_engagement_per_user"] = difference(ratios[arm]["engagement_per_user"],
                                                                ratios[control]["engagement_per_user"])
        summaries[arm]["guardrails"] = breaches(summaries[arm], guardrails)
    for arm in arms:
        if "team" in frame.columns and frame.loc[frame["variant"] == arm, "team"].notna().any():
            summaries[arm]["interleaving"] = interleaved(frame[(frame["variant"] == arm) & frame["team"].notna()])
    users = {arm: s["users"] for arm, s in summaries.items()}
    return {"control": control, "arms": summaries,
            "srm": srm(users, expected if expected is not None else {a: 100 / len(arms) for a in arms})}


def interleaved(frame: pd.DataFrame) -> dict:
    """An interleaving arm's verdict: each user's engagement on the posts each team picked,
    the share of users preferring the first team (by name) with its interval."""
    from newsfeed.feed.interleaving import team_credit
    from newsfeed.metrics import interleaving_preference

    teams = sorted(frame["team"].unique())
    if len(teams) != 2:
        return {"teams": teams, "note": "needs posts of exactly two teams"}
    return {"teams": teams, **interleaving_preference(*team_credit(frame, *teams))}


def breaches(arm: dict, guardrails: Guardrails) -> list[str]:
    """Each guardrail a challenger breaches, as a sentence."""
    out = []
    for rate in ("hide_rate", "block_rate"):
        lift = arm.get(f"lift_{rate}")
        limit = getattr(guardrails, rate)
        if lift and lift["ci"][0] == lift["ci"][0] and lift["ci"][0] > limit:
            out.append(f"{rate.replace('_', ' ')} up {lift['estimate']:+.0%} [{lift['ci'][0]:+.0%}, "
                       f"{lift['ci'][1]:+.0%}] against control (limit +{limit:.0%})")
    if arm.get("latency_p95_ms", 0) > guardrails.latency_p95_ms:
        out.append(f"latency p95 {arm['latency_p95_ms']:.0f} ms (limit {guardrails.latency_p95_ms:g} ms)")
    if arm.get("degraded_rate", 0) > guardrails.degraded_rate:
        out.append(f"{arm['degraded_rate']:.1%} of requests degraded (limit {guardrails.degraded_rate:.0%})")
    return out
