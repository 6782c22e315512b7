"""The durable, append-only event log: the canonical events plus every appended batch
(``table_log``'s log of the events table)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from newsfeed.data import table_log
from newsfeed.data.io import read_table, table_path

LOG_DIR = table_log.LOG_DIRS["events"]


def log_dir(data_dir: Path) -> Path:
    return table_log.log_dir(data_dir, "events")


def append(data_dir: Path, events: pd.DataFrame) -> Path:
    """Write one batch of (already validated) events durably; return its part file."""
    return table_log.append(data_dir, "events", events)


def parts(data_dir: Path) -> list[Path]:
    return table_log.parts(data_dir, "events")


def read_events(data_dir: Path) -> pd.DataFrame:
    """All events: the canonical table (if any) followed by every appended batch, in time order."""
    frames = [read_table(data_dir, "events")] if table_path(data_dir, "events").exists() else []
    logged = table_log.read_parts(parts(data_dir))
    frames += [logged] if logged is not None else []
    if not frames:
        raise FileNotFoundError(f"{data_dir}: no events table and no event log")
    events = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if "event_id" in events:  # logged twice only while the id store was unreachable: one copy counts
        events = events[events["event_id"].isna() | ~events["event_id"].duplicated()]
    return events.sort_values("ts", kind="stable").reset_index(drop=True)
