"""The durable, append-only event log: the canonical events plus every appended batch.

Each accepted batch becomes one parquet part file, written to a temporary name,
fsynced and renamed into place (atomic on POSIX), then the directory is fsynced:
once ``append`` returns, the batch survives a crash. Readers see whole batches or
nothing, never a half-written file.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pandas as pd

from newsfeed.data.io import read_parquet, read_table, table_path

LOG_DIR = "event_log"


def log_dir(data_dir: Path) -> Path:
    return Path(data_dir) / LOG_DIR


def append(data_dir: Path, events: pd.DataFrame) -> Path:
    """Write one batch of (already validated) events durably; return its part file."""
    directory = log_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    stamp = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%S%f")
    final = directory / f"part-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
    tmp = final.with_suffix(".tmp")
    events.to_parquet(tmp, index=False)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return final


def parts(data_dir: Path) -> list[Path]:
    directory = log_dir(data_dir)
    return sorted(directory.glob("part-*.parquet")) if directory.is_dir() else []


def read_events(data_dir: Path) -> pd.DataFrame:
    """All events: the canonical table (if any) followed by every appended batch, in time order."""
    frames = [read_table(data_dir, "events")] if table_path(data_dir, "events").exists() else []
    frames += [read_parquet(p) for p in parts(data_dir)]
    if not frames:
        raise FileNotFoundError(f"{data_dir}: no events table and no event log")
    events = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if "event_id" in events:  # logged twice only while the id store was unreachable: one copy counts
        events = events[events["event_id"].isna() | ~events["event_id"].duplicated()]
    return events.sort_values("ts", kind="stable").reset_index(drop=True)
