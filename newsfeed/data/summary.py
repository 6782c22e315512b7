"""A dataset at a glance: sizes, time span, reaction rates against the oracle."""

from __future__ import annotations

import pandas as pd

from newsfeed.schema import REACTIONS


def table_sizes(tables: dict[str, pd.DataFrame]) -> list[tuple[str, int, str, str]]:
    """(table, rows, first timestamp, last timestamp) per table."""
    time_column = {"users": "signup_ts", "posts": "created_ts", "friendships": "formed_ts"}
    rows = []
    for name, df in tables.items():
        col = time_column.get(name, "ts")
        ts = df[col] if col in df else pd.Series(dtype="datetime64[ns, UTC]")
        span = (f"{ts.min():%Y-%m-%d %H:%M}", f"{ts.max():%Y-%m-%d %H:%M}") if len(ts) else ("", "")
        rows.append((name, len(df), *span))
    return rows


def reaction_rates(impressions: pd.DataFrame) -> list[tuple[str, float, float | None]]:
    """(label, observed rate, mean true probability where the data has it) per label."""
    rows = []
    for label in (*REACTIONS, "skip"):
        p = f"p_{label}"
        truth = float(impressions[p].mean()) if p in impressions and impressions[p].notna().any() else None
        rows.append((label, float(impressions[label].mean()), truth))
    return rows


def top_topics(posts: pd.DataFrame, impressions: pd.DataFrame, n: int = 5) -> list[tuple[str, int, float]]:
    """(topic, posts, click rate) for the most common topics."""
    shown = impressions[["post_id", "click"]].merge(posts[["post_id", "topic"]], on="post_id")
    ctr = shown.groupby("topic")["click"].mean()
    counts = posts["topic"].value_counts().head(n)
    return [(t, int(c), float(ctr.get(t, float("nan")))) for t, c in counts.items()]
