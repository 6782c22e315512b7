"""Simulated A/B traffic over a simulated dataset's world: arms of known quality, users split
by the experiment's sticky hash, reactions drawn from the true reaction model.

Each request is one of the dataset's logged sessions (its user and time); its candidates are
the posts that session was shown plus others published in the 3 days before it. An arm
ranks them by ``quality`` x (true engagement, standardised) + noise: 1 orders by the truth
(an excellent model), 0 at random, below 0 towards what users dislike. So the better arm is
known in advance, and experiment analysis can be checked against it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from newsfeed.data.simulator import DAY_NS, sample_reactions
from newsfeed.data.world import World
from newsfeed.scoring import load_weights

CANDIDATES = 40
FEED_SIZE = 10


def _candidates(rng: np.random.Generator, shown: np.ndarray, created_ns: np.ndarray, ts_ns: int) -> np.ndarray:
    recent = np.flatnonzero((created_ns <= ts_ns) & (created_ns > ts_ns - 3 * DAY_NS))
    extra = rng.choice(recent, size=min(len(recent), CANDIDATES), replace=False) if len(recent) else recent
    return np.unique(np.concatenate([shown, extra]))[:CANDIDATES * 2]


def simulate(impressions: pd.DataFrame, world: World, assign, quality: dict[str, float], days: float = 2.0,
             seed: int = 0, latency_ms: dict[str, float] | None = None) -> pd.DataFrame:
    """Canonical impressions of an experiment over the last ``days`` of the logged sessions.
    ``assign(user_id) -> arm name``; ``quality[arm]``: how well the arm ranks (see above);
    ``latency_ms[arm]``: a mean serving latency to log per request (default 20 ms)."""
    rng = np.random.default_rng(seed)
    weights = load_weights(None)
    ts = pd.to_datetime(impressions["ts"], utc=True)
    recent = impressions[ts >= ts.max() - pd.Timedelta(days=days)]
    sessions = recent.groupby("request_id", sort=True)
    created = world.post_created_ns
    rows = []
    for request_id, session in sessions:
        user = int(session["user_id"].iloc[0])
        arm = assign(user)
        if arm not in quality:
            raise ValueError(f"arm {arm!r} has no quality (arms: {sorted(quality)})")
        now = int(pd.Timestamp(session["ts"].min()).value)
        pool = _candidates(rng, session["post_id"].to_numpy(np.int64), created, now)
        users = np.full(len(pool), user)
        truth = world.engagement(users, pool, np.full(len(pool), now), np.zeros(len(pool), np.int64), weights)
        spread = truth.std() or 1.0
        score = quality[arm] * (truth - truth.mean()) / spread + rng.standard_normal(len(pool))
        shown = pool[np.argsort(-score, kind="stable")[:FEED_SIZE]]
        rows.append((request_id, user, arm, now, shown))
    request = np.concatenate([np.full(len(s), r) for r, _, _, _, s in rows])
    user = np.concatenate([np.full(len(s), u) for _, u, _, _, s in rows])
    arm = np.concatenate([np.full(len(s), a, dtype=object) for _, _, a, _, s in rows])
    position = np.concatenate([np.arange(len(s)) for *_, s in rows])
    post = np.concatenate([s for *_, s in rows])
    at = np.concatenate([np.full(len(s), t) for _, _, _, t, s in rows]) + position * 2 * 10**9
    labels, dwell, _ = sample_reactions(world, rng, user, post, at, position)
    mean_latency = {name: (latency_ms or {}).get(name, 20.0) for name in quality}
    per_request = {r: rng.gamma(4.0, mean_latency[a] / 4.0) for r, _, a, _, _ in rows}
    return pd.DataFrame({
        "impression_id": np.arange(len(post), dtype=np.int64), "request_id": request.astype(np.int64),
        "user_id": user.astype(np.int64), "post_id": post.astype(np.int64), "ts": pd.to_datetime(at, utc=True),
        "position": position.astype(np.int32), "variant": arm.astype(str), "model_version": arm.astype(str),
        **labels, "dwell_seconds": dwell, "skip": (dwell < 0.5).astype(np.int8),
        "latency_ms": np.array([per_request[r] for r in request]), "degraded": np.zeros(len(post), bool),
    })
