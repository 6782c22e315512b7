"""Request-time features: what can only be known when a feed is requested.

The Feast on-demand view calls :func:`request_features`; serving can call it on
its own frames, so training and serving compute these values the same way.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

AGE_HOURS = (1, 6, 24, 72, 168)
"""Post age buckets: <1 h, <6 h, <1 day, <3 days, <1 week, older (0..5); -1 when unknown."""


def post_age_bucket(age_seconds: np.ndarray) -> np.ndarray:
    hours = np.asarray(age_seconds, np.float64) / 3600.0
    bucket = np.searchsorted(np.array(AGE_HOURS, np.float64), hours, side="right").astype(np.int64)
    return np.where(np.isnan(hours) | (hours < 0), -1, bucket)


def user_mentioned(user_ids: np.ndarray, mentions: pd.Series) -> np.ndarray:
    """1 where the reader's id is in the post's mention list."""
    return np.fromiter(
        (int(m is not None and len(m) > 0 and int(u) in set(m)) for u, m in zip(user_ids, mentions)),
        dtype=np.int64, count=len(user_ids),
    )


def topic_affinity(interest: pd.Series, topic_ids: pd.Series) -> np.ndarray:
    """The reader's interest in the post's topic: ``interest`` (a topic distribution per row,
    indexed by topic id) at ``topic_ids``; 0 where either is unknown. A cross the ranker
    would otherwise have to learn from the vector and the id apart."""
    topic = pd.to_numeric(topic_ids, errors="coerce").fillna(-1).to_numpy(np.int64)
    out = np.zeros(len(topic), np.float32)
    for i, (vector, t) in enumerate(zip(interest.to_numpy(), topic)):
        if vector is not None and 0 <= t < len(vector):
            out[i] = vector[t]
    return out


def request_features(inputs: pd.DataFrame) -> pd.DataFrame:
    """From request_unix, user_id, created_unix, mentions, friends_since_unix, topic_id,
    topic_interest, topic_interest_7d, topic_interest_rate (missing values allowed)."""
    now = pd.to_numeric(inputs["request_unix"], errors="coerce").to_numpy(np.float64)
    # Feast passes the entity keys at retrieval time but not when it infers the output
    # schema from sample inputs; then no reader is known.
    readers = inputs["user_id"].to_numpy() if "user_id" in inputs else np.full(len(inputs), -1)
    return pd.DataFrame(derive(now, pd.to_numeric(inputs["created_unix"], errors="coerce").to_numpy(np.float64),
                  pd.to_numeric(inputs["friends_since_unix"], errors="coerce").fillna(-1).to_numpy(np.float64),
                  user_mentioned(readers, inputs["mentions"]),
                  {name: topic_affinity(inputs[column], inputs["topic_id"]) for name, column in AFFINITIES.items()}))


AFFINITIES = {"topic_affinity": "topic_interest", "topic_affinity_7d": "topic_interest_7d",
              "topic_affinity_rate": "topic_interest_rate"}
"""Request feature -> the user's topic distribution it reads at the post's topic."""


def derive(now: np.ndarray, created: np.ndarray, friends_since: np.ndarray, mentioned: np.ndarray,
           affinities: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The request features (name -> array) from their inputs as arrays (``friends_since`` -1:
    not friends). Training (through Feast) and serving (one user, many posts) both end here."""
    friends = friends_since >= 0
    days = np.where(friends, (now - friends_since) / 86_400.0, -1.0)
    age_hours = (now - created) / 3600.0
    return {
        "post_age_bucket": post_age_bucket(now - created),
        # Continuous too: staleness decays smoothly, the buckets are for reading.
        "post_age_hours": np.where(np.isnan(age_hours) | (age_hours < 0), -1.0, age_hours).astype(np.float32),
        "user_mentioned": np.asarray(mentioned, np.int64),
        "friendship_days": np.where(friends, np.maximum(days, 0.0), -1.0).astype(np.float32),
        **{name: np.asarray(affinities[name], np.float32) for name in AFFINITIES},
    }
