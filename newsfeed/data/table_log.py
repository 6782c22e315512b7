"""Durable, append-only logs of the tables that change while the service runs: events, posts,
users and friendships.

Each accepted batch becomes one parquet part file in the table's log folder, written to a
temporary name, fsynced and renamed into place (atomic on POSIX), then the folder is
fsynced: once ``append`` returns, the batch survives a crash. Readers see whole batches or
nothing, never a half-written file. Readers of posts, users and friendships see the
canonical table and its log as one table (``merge``), so the next training run trains on
what was published since the data was written.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pandas as pd

LOG_DIRS = {"events": "event_log", "posts": "post_log", "users": "user_log", "friendships": "friendship_log",
            "impressions": "impression_log"}
LIVE_TABLES = ("posts", "users", "friendships", "impressions")
"""Tables the service appends to (besides events): read as the canonical table plus the log.
Impressions: what was served, absorbed from the served log (``newsfeed.feed.served_data``)."""
KEYS = {"posts": ["post_id"], "users": ["user_id"], "impressions": ["impression_id"]}
ENDED = "ended"
"""A friendship log row with ``ended`` true removes the pair (either direction)."""


def log_dir(data_dir: Path, table: str) -> Path:
    return Path(data_dir) / LOG_DIRS[table]


def append(data_dir: Path, table: str, rows: pd.DataFrame) -> Path:
    """Write one batch of (already validated) rows durably; return its part file."""
    directory = log_dir(data_dir, table)
    directory.mkdir(parents=True, exist_ok=True)
    stamp = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%S%f")
    final = directory / f"part-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
    tmp = final.with_suffix(".tmp")
    rows.to_parquet(tmp, index=False)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return final


def parts(data_dir: Path, table: str) -> list[Path]:
    directory = log_dir(data_dir, table)
    return sorted(directory.glob("part-*.parquet")) if directory.is_dir() else []


def read_parts(paths: list[Path]) -> pd.DataFrame | None:
    from newsfeed.data.io import read_parquet

    frames = [read_parquet(p) for p in paths]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0] if frames else None


def merge(table: str, canonical: pd.DataFrame | None, logged: pd.DataFrame | None) -> pd.DataFrame | None:
    """The table as readers see it: ``canonical`` with the ``logged`` rows (in log order).
    Posts, users and impressions: the first row per id stands (a publish is idempotent); a
    column the log lacks (the simulator's true probabilities) is empty in its rows. Friendships: the
    last log row per pair decides, and an ``ended`` one removes the pair."""
    if logged is None or logged.empty:
        return canonical
    if canonical is None:
        canonical = logged.iloc[:0].drop(columns=[ENDED], errors="ignore")
    if table in KEYS:
        columns = list(canonical.columns)
        both = pd.concat([canonical, logged.reindex(columns=columns)], ignore_index=True)
        return both.drop_duplicates(KEYS[table], keep="first").reset_index(drop=True)
    if table != "friendships":
        raise ValueError(f"{table} has no log to merge")
    last = logged.assign(_pair=pair_keys(logged)).drop_duplicates("_pair", keep="last")
    kept = canonical[~pair_keys(canonical).isin(last["_pair"])]
    added = last[~last[ENDED].astype(bool)].drop(columns=["_pair", ENDED])
    return pd.concat([kept, added[list(canonical.columns)]], ignore_index=True)


def pair_keys(friendships: pd.DataFrame) -> pd.Series:
    """One key per unordered pair: a friendship is mutual."""
    a, b = friendships["user_id"].astype("int64"), friendships["friend_id"].astype("int64")
    low, high = a.where(a <= b, b), b.where(a <= b, a)
    return low.astype(str) + ":" + high.astype(str)
