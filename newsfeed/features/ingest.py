"""Event ingestion: validate a batch, make it durable, then update the online counters.

Used by the serving ``/v1/events`` endpoint and ``newsfeed features push``. An event
is acknowledged only once its batch is in the durable event log; a malformed event is
rejected with its reason and does not hold back the others. If the online store is
unreachable the events stay durable and acknowledged (``online_error`` says why):
the next materialisation brings the counters up to date.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from newsfeed.data import event_log
from newsfeed.data.validation import validate_tables
from newsfeed.features import catalog
from newsfeed.schema import REACTIONS

PUSH_SOURCE = "post_engagement_push"
LIVE_VIEW = catalog.POST_ENGAGEMENT_LIVE.name
EVENT_FIELDS = ("user_id", "post_id", "event_type", "value", "ts")
# Counters are read, incremented and written back: one writer at a time per process.
_counter_lock = threading.Lock()


@dataclass
class Rejected:
    index: int
    reason: str
    event: dict


@dataclass
class IngestResult:
    accepted: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    log_file: Path | None = None
    counters_updated: int = 0  # posts whose online counters were pushed
    online_error: str | None = None


def _with_defaults(raw: pd.DataFrame) -> pd.DataFrame:
    frame = raw.copy()
    now = pd.Timestamp.now(tz="UTC")
    # Defaults a client may leave out: a reaction counts once, and happens now.
    if "value" not in frame:
        frame["value"] = 1.0
    frame["value"] = frame["value"].where(frame["value"].notna(), 1.0)
    given = frame["ts"] if "ts" in frame else pd.Series(None, index=frame.index, dtype=object)
    parsed = pd.to_datetime(given, utc=True, errors="coerce", format="mixed")
    frame["ts"] = parsed.where(given.notna(), now)  # left out: now; given but unreadable: NaT, rejected
    return frame


def ingest_events(events: pd.DataFrame | list[dict], data_dir: Path, store=None) -> IngestResult:
    """Validate, append durably to the event log under ``data_dir``, push counters to ``store``."""
    raw = pd.DataFrame(events) if not isinstance(events, pd.DataFrame) else events
    raw = raw.reset_index(drop=True)
    result = IngestResult()
    if raw.empty:
        return result
    extra = sorted(set(raw.columns) - set(EVENT_FIELDS))
    missing = [c for c in ("user_id", "post_id", "event_type") if c not in raw.columns]
    if missing or extra:
        why = "; ".join(filter(None, [missing and f"missing fields {missing}", extra and f"unknown fields {extra}"]))
        result.rejected = [Rejected(i, why, _plain_row(raw, i)) for i in range(len(raw))]
        return result
    frame = _with_defaults(raw)
    readable = frame.index[frame["ts"].notna()]
    reasons = {int(i): "ts: cannot be read as a timestamp" for i in frame.index[frame["ts"].isna()]}
    checked = validate_tables({"events": frame.loc[readable, list(EVENT_FIELDS)]}, required=("events",))
    if checked.errors:  # a column of the wrong kind altogether: nothing in it can be trusted
        reasons.update({int(i): "; ".join(checked.errors) for i in readable})
    else:  # validation numbers rows 0..n-1: map its positions back to the batch's
        quarantine = checked.quarantine["events"]
        reasons.update({int(readable[pos]): why for pos, why in zip(quarantine.index, quarantine["quarantine_reason"])})
    result.rejected = [Rejected(i, reasons[i], _plain_row(raw, i)) for i in sorted(reasons)]
    good = None if checked.errors else checked.clean["events"]
    if good is None or good.empty:
        return result
    result.log_file = event_log.append(data_dir, good)  # durable from here: acknowledged
    result.accepted = len(good)
    if store is not None:
        try:
            result.counters_updated = push_counters(store, good)
        except Exception as err:  # noqa: BLE001 - any store failure leaves the events durable
            result.online_error = f"{type(err).__name__}: {err}"
    return result


def _plain_row(frame: pd.DataFrame, i: int) -> dict:
    """The event as the client sent it, in plain (JSON-safe) values."""
    row = frame.iloc[i].to_dict()
    return {k: None if _missing(v) else v.item() if hasattr(v, "item") else v for k, v in row.items()}


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT


def push_counters(store, events: pd.DataFrame) -> int:
    """Add the batch's reactions to each post's online counters; return the posts updated."""
    reactions = events[events["event_type"].isin(REACTIONS)]
    if reactions.empty:
        return 0
    increments = pd.crosstab(reactions["post_id"], reactions["event_type"]).reindex(columns=list(REACTIONS),
                                                                                   fill_value=0)
    columns = [f"{r}_count" for r in REACTIONS]
    with _counter_lock:
        current = store.get_online_features(
            features=[f"{LIVE_VIEW}:{c}" for c in columns],
            entity_rows=[{"post_id": int(p)} for p in increments.index],
        ).to_df()
        base = current[columns].apply(pd.to_numeric, errors="coerce").fillna(0).to_numpy(np.int64)
        updated = pd.DataFrame(base + increments.to_numpy(np.int64), columns=columns)
        updated.insert(0, "post_id", increments.index.to_numpy(np.int64))
        # Stamped with the processing time: these totals are what is known now, and
        # online stores keep the newest row per key.
        updated.insert(1, catalog.TIMESTAMP, pd.Timestamp.now(tz="UTC"))
        from feast.data_source import PushMode

        store.push(PUSH_SOURCE, updated, to=PushMode.ONLINE)
    return len(updated)
