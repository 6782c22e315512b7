"""Event ingestion: validate a batch, make it durable, then update the online counters.

Used by the serving ``/v1/events`` endpoint and ``newsfeed features push``. An event
is acknowledged only once its batch is in the durable event log; a malformed event is
rejected with its reason and does not hold back the others: a bad field, a user or post
the data does not know, a time before the data begins or before its post was created.
Ingestion is idempotent: an event's ``event_id`` (sent by the client, else a hash of
its fields when it carries its own ``ts``) is logged once, so a retried batch is
acknowledged again but neither logged nor counted twice. If the online store is
unreachable the events stay durable and acknowledged (``online_error`` says why): the
next materialisation brings the counters up to date.
"""

from __future__ import annotations

import fcntl
import hashlib
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from newsfeed.data import event_log
from newsfeed.data.io import read_parquet, table_path
from newsfeed.data.validation import validate_tables
from newsfeed.features import catalog
from newsfeed.schema import REACTIONS

PUSH_SOURCE = "post_engagement_push"
LIVE_VIEW = catalog.POST_ENGAGEMENT_LIVE.name
EVENT_FIELDS = ("user_id", "post_id", "event_type", "value", "ts")
OPTIONAL_FIELDS = ("event_id",)
# Logging (with its duplicate check) and the counters' read-increment-write: one batch at a
# time, across threads (this lock) and processes (a file lock beside the log: several serving
# replicas write one log and one store, and a read-increment-write that interleaves loses counts).
_thread_lock = threading.Lock()


@contextmanager
def ingest_lock(data_dir: Path):
    directory = event_log.log_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    with _thread_lock, open(directory / ".ingest.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class Rejected:
    index: int
    reason: str
    event: dict


@dataclass
class IngestResult:
    accepted: int = 0  # new events, logged and counted
    duplicates: int = 0  # events already logged (a retried batch): acknowledged, not counted again
    rejected: list[Rejected] = field(default_factory=list)
    log_file: Path | None = None
    counters_updated: int = 0  # posts whose online counters were pushed
    online_error: str | None = None


@dataclass(frozen=True)
class Reference:
    """What an event is checked against: the data's users, posts (with creation times) and start."""

    users: frozenset
    post_created: pd.Series  # post_id -> created_ts
    start: pd.Timestamp | None

    @classmethod
    def of(cls, data_dir: Path) -> "Reference | None":
        """None when the data dir holds no dataset yet (nothing to check against)."""
        paths = [table_path(data_dir, t) for t in ("users", "posts", "impressions")]
        if not all(p.exists() for p in paths):
            return None
        return _reference(*(str(p) for p in paths), *(p.stat().st_mtime_ns for p in paths))

    def reasons(self, frame: pd.DataFrame) -> dict[int, str]:
        """index -> why, for events that cannot belong to this data."""
        out: dict[int, str] = {}
        unknown_user = ~frame["user_id"].isin(self.users)
        created = self.post_created.reindex(frame["post_id"].to_numpy())
        for i in frame.index[unknown_user]:
            out[int(i)] = f"user_id: unknown user {frame.at[i, 'user_id']}"
        for i in frame.index[created.isna().to_numpy()]:
            out.setdefault(int(i), f"post_id: unknown post {frame.at[i, 'post_id']}")
        if self.start is not None:
            for i in frame.index[(frame["ts"] < self.start).to_numpy()]:
                out.setdefault(int(i), f"ts: before the data begins ({self.start:%Y-%m-%d}; got {frame.at[i, 'ts']})")
        early = frame["ts"].to_numpy() < created.to_numpy()
        for i in frame.index[early]:
            out.setdefault(int(i), f"ts: before post {frame.at[i, 'post_id']} was created")
        return out


@lru_cache(maxsize=4)
def _reference(users_path: str, posts_path: str, impressions_path: str, *mtimes: int) -> Reference:
    users = read_parquet(Path(users_path))["user_id"]
    posts = read_parquet(Path(posts_path))
    stamps = pd.read_parquet(impressions_path, columns=["ts"])["ts"]
    created = pd.Series(pd.to_datetime(posts["created_ts"], utc=True).to_numpy(), index=posts["post_id"].to_numpy())
    start = pd.to_datetime(stamps, utc=True).min() if len(stamps) else None
    return Reference(frozenset(users.astype(np.int64).tolist()), created, None if pd.isna(start) else start)


def event_ids(frame: pd.DataFrame) -> pd.Series:
    """The client's ``event_id``; else, for an event stamped by its sender, a hash of its fields
    (the same event sent again hashes the same); else none (stamped on arrival: always new)."""
    given = frame["event_id"].astype("string") if "event_id" in frame else pd.Series(pd.NA, index=frame.index,
                                                                                     dtype="string")
    content = frame[list(EVENT_FIELDS)].astype(str).agg("|".join, axis=1)
    derived = content.map(lambda text: "h:" + hashlib.sha1(text.encode()).hexdigest()[:20])
    stamped = frame["ts_given"] if "ts_given" in frame else pd.Series(False, index=frame.index)
    return given.fillna(derived.where(stamped)).astype(object).where(lambda s: s.notna(), None)


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
    frame["ts_given"] = given.notna()
    return frame


def ingest_events(events: pd.DataFrame | list[dict], data_dir: Path, store=None) -> IngestResult:
    """Validate, append durably to the event log under ``data_dir``, push counters to ``store``."""
    raw = pd.DataFrame(events) if not isinstance(events, pd.DataFrame) else events
    raw = raw.reset_index(drop=True)
    result = IngestResult()
    if raw.empty:
        return result
    extra = sorted(set(raw.columns) - set(EVENT_FIELDS) - set(OPTIONAL_FIELDS))
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
    good = None if checked.errors else checked.clean["events"]
    if good is not None and not good.empty:
        good.index = readable[good.index]  # validation numbered the rows 0..n-1: back to the batch's
        reference = Reference.of(data_dir)
        if reference is not None:
            reasons.update(reference.reasons(good))
        good = good.drop(index=[i for i in good.index if int(i) in reasons])
    result.rejected = [Rejected(i, reasons[i], _plain_row(raw, i)) for i in sorted(reasons)]
    if good is None or good.empty:
        return result
    good = good.assign(event_id=event_ids(frame.loc[good.index].assign(**{c: good[c] for c in EVENT_FIELDS})))
    with ingest_lock(data_dir):
        fresh = ~good["event_id"].isin(event_log.logged_ids(data_dir)) & ~(
            good["event_id"].notna() & good["event_id"].duplicated())
        result.duplicates = int((~fresh).sum())
        new = good[fresh].reset_index(drop=True)
        if new.empty:
            return result
        result.log_file = event_log.append(data_dir, new)  # durable from here: acknowledged
        result.accepted = len(new)
        if store is not None:
            try:
                result.counters_updated = push_counters(store, new)
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
    """Add the batch's reactions to each post's online counters; return the posts updated.
    A read, an increment and a write: callers hold ``ingest_lock`` (ingest_events does)."""
    reactions = events[events["event_type"].isin(REACTIONS)]
    if reactions.empty:
        return 0
    increments = pd.crosstab(reactions["post_id"], reactions["event_type"]).reindex(columns=list(REACTIONS),
                                                                                   fill_value=0)
    columns = [f"{r}_count" for r in REACTIONS]
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
