"""Event ingestion: validate a batch, make it durable, then update the live counters.

Used by the serving ``/v1/events`` endpoint and ``newsfeed features push``. An event
is acknowledged only once its batch is in the durable event log; a malformed event is
rejected with its reason and does not hold back the others: a bad field, a user or post
the data does not know, a time before the data begins or before its post was created.

Ingestion is idempotent without reading the log back: an event's ``event_id`` (sent by the
client, else a hash of its fields when it carries its own ``ts``) is claimed in the
user-state store (a set with a TTL in Redis, a table in the embedded file) before its batch
is logged, so a retried batch is acknowledged again but neither logged nor counted twice,
and a batch costs what it holds whatever the log's size. Counters are incremented by the
store itself (atomic on any number of replicas; no lock of ours) and the totals mirrored
into the Feast online store. If the user-state store is unreachable the events are still
logged and acknowledged (``state_error`` says so; a retry may then be logged twice, and
readers of the log keep one copy per id); if the online store is unreachable the counters
wait for the next materialisation (``online_error``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from newsfeed.data import event_log, table_log
from newsfeed.data.io import read_table, table_path
from newsfeed.data.validation import validate_tables
from newsfeed.features import catalog
from newsfeed.features.store import write_online
from newsfeed.schema import REACTIONS

PUSH_SOURCE = "post_engagement_push"
LIVE_VIEW = catalog.POST_ENGAGEMENT_LIVE.name
EVENT_FIELDS = ("user_id", "post_id", "event_type", "value", "ts")
OPTIONAL_FIELDS = ("event_id",)


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
    counters_updated: int = 0  # posts whose counters were incremented
    online_error: str | None = None  # the Feast online store's counters could not be read or mirrored
    state_error: str | None = None  # the user-state store could not be reached: logged, not de-duplicated
    events: pd.DataFrame | None = None  # the new events, as logged


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
        # What was published since counts too: the key names the logs' parts.
        published = tuple(p.name for t in ("users", "posts") for p in table_log.parts(data_dir, t))
        return _reference(str(data_dir), *(p.stat().st_mtime_ns for p in paths), published)

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
def _reference(data_dir: str, *key) -> Reference:
    users = read_table(Path(data_dir), "users")["user_id"]
    posts = read_table(Path(data_dir), "posts")
    stamps = pd.read_parquet(table_path(Path(data_dir), "impressions"), columns=["ts"])["ts"]
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


def _with_defaults(raw: pd.DataFrame, now: pd.Timestamp | None = None) -> pd.DataFrame:
    frame = raw.copy()
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    # Defaults a client may leave out: a reaction counts once, and happens now.
    if "value" not in frame:
        frame["value"] = 1.0
    frame["value"] = frame["value"].where(frame["value"].notna(), 1.0)
    given = frame["ts"] if "ts" in frame else pd.Series(None, index=frame.index, dtype=object)
    parsed = pd.to_datetime(given, utc=True, errors="coerce", format="mixed")
    frame["ts"] = parsed.where(given.notna(), now)  # left out: now; given but unreadable: NaT, rejected
    frame["ts_given"] = given.notna()
    return frame


def ingest_events(events: pd.DataFrame | list[dict], data_dir: Path, store=None, state=None,
                  now: pd.Timestamp | None = None) -> IngestResult:
    """Validate, append durably to the event log under ``data_dir``, count reactions in ``state``
    (a ``UserState``; default ``default_state``) and mirror the counters into ``store`` (Feast).
    An event without a time happens ``now`` (the service's clock; default the wall clock)."""
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
    frame = _with_defaults(raw, now)
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
    return _log_and_count(good.reset_index(drop=True), data_dir, store, state or default_state(data_dir), result)


def default_state(data_dir: Path):
    """For callers without a home (tests, scripts over a bare data folder): a user-state file
    beside the event log. Serving and the command line pass the home's store."""
    from newsfeed.feed.user_state import SqliteUserState

    return SqliteUserState(event_log.log_dir(data_dir) / "ingest_state.sqlite")


def _log_and_count(good: pd.DataFrame, data_dir: Path, store, state, result: IngestResult) -> IngestResult:
    from newsfeed.feed.user_state import StateError

    has_id = good["event_id"].notna().to_numpy()
    ids = good.loc[has_id, "event_id"].astype(str).tolist()
    fresh = np.ones(len(good), bool)
    try:
        fresh[has_id] = state.claim_events(ids)
    except StateError as err:
        result.state_error = str(err)
        fresh = ~(good["event_id"].notna() & good["event_id"].duplicated()).to_numpy()  # this batch's repeats
        claimed: list[str] = []
    else:
        claimed = [i for i, new in zip(ids, fresh[has_id]) if new]
    result.duplicates = int((~fresh).sum())
    new = good[fresh].reset_index(drop=True)
    if new.empty:
        return result
    try:
        result.log_file = event_log.append(data_dir, new)  # durable from here: acknowledged
    except BaseException:
        state.release_events(claimed)  # not logged: a retry must not be taken for a duplicate
        raise
    result.accepted, result.events = len(new), new
    if result.state_error is None:
        try:
            result.counters_updated = count_reactions(store, state, new)
        except StateError as err:
            result.state_error = str(err)
        except Exception as err:  # noqa: BLE001 - any online-store failure leaves the events durable
            result.online_error = f"{type(err).__name__}: {err}"
    return result


def _plain_row(frame: pd.DataFrame, i: int) -> dict:
    """The event as the client sent it, in plain (JSON-safe) values."""
    row = frame.iloc[i].to_dict()
    return {k: None if _missing(v) else v.item() if hasattr(v, "item") else v for k, v in row.items()}


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT


def count_reactions(store, state, events: pd.DataFrame) -> int:
    """Add the batch's reactions to each post's counters in ``state`` (from the online store's
    value where the state has none yet), mirror the totals into the online store; return the
    posts counted. When the online store cannot be read, nothing is counted here: the next
    materialisation counts these events from the log."""
    reactions = events[events["event_type"].isin(REACTIONS)]
    if reactions.empty:
        return 0
    increments = pd.crosstab(reactions["post_id"], reactions["event_type"]).reindex(columns=list(REACTIONS),
                                                                                   fill_value=0)
    columns = [f"{r}_count" for r in REACTIONS]
    posts = increments.index.to_numpy(np.int64)
    if store is not None:
        current = store.get_online_features(features=[f"{LIVE_VIEW}:{c}" for c in columns],
                                            entity_rows=[{"post_id": int(p)} for p in posts]).to_df()
        base = current[columns].apply(pd.to_numeric, errors="coerce").fillna(0).to_numpy(np.int64)
    else:
        base = np.zeros((len(posts), len(REACTIONS)), np.int64)
    counts = increments.to_numpy(np.int64)
    touched = counts > 0
    row, col = np.nonzero(touched)
    totals = base.copy()
    totals[row, col] = state.increment(posts[row], np.array(REACTIONS)[col], counts[row, col], base[row, col])
    if store is not None:
        mirror = pd.DataFrame(totals, columns=columns)
        mirror.insert(0, "post_id", posts)
        # Stamped with the processing time: these totals are what is known now, and online
        # stores keep the newest row per key. Two replicas' mirrors may land out of order; the
        # state store holds the exact totals serving reads.
        mirror.insert(1, catalog.TIMESTAMP, pd.Timestamp.now(tz="UTC"))
        from feast.data_source import PushMode

        write_online(lambda: store.push(PUSH_SOURCE, mirror, to=PushMode.ONLINE))
    return len(posts)


def update_histories(store, events: pd.DataFrame, authors) -> int:
    """The engaging users' recent-engagement rows (``user_history``: the posts they clicked,
    liked, commented on or shared, newest first, and those posts' authors) brought up to
    ``events`` in the online store, so the user tower follows a user between the daily
    snapshots (a new user's first reactions make their feed personal). ``authors(post_ids)``:
    each post's author. Returns the users updated. Two replicas updating one user at the
    same moment may drop one of their posts from the list (the next snapshot restores it)."""
    positive = events[events["event_type"].isin(catalog.POSITIVE_REACTIONS)].sort_values("ts", kind="stable")
    if positive.empty or store is None:
        return 0
    users = positive["user_id"].drop_duplicates().to_numpy(np.int64)
    view = catalog.USER_HISTORY.name
    current = store.get_online_features(features=[f"{view}:recent_post_ids", f"{view}:recent_author_ids"],
                                        entity_rows=[{"user_id": int(u)} for u in users]).to_df()
    rows = []
    for user, old_posts, old_authors in zip(users, current["recent_post_ids"], current["recent_author_ids"]):
        new = positive.loc[positive["user_id"] == user, "post_id"].to_numpy(np.int64)[::-1]  # newest first
        pairs = list(zip(new.tolist(), np.asarray(authors(new), np.int64).tolist()))
        pairs += list(zip(list(old_posts) if old_posts is not None else [],
                          list(old_authors) if old_authors is not None else []))
        kept = list(dict.fromkeys(p for p, _ in pairs))[:catalog.HISTORY_LENGTH]  # distinct, newest first
        author_of = dict(reversed(pairs))
        rows.append({"user_id": int(user), "recent_post_ids": kept, "recent_author_ids": [author_of[p] for p in kept]})
    frame = pd.DataFrame(rows)
    frame.insert(1, catalog.TIMESTAMP, pd.Timestamp.now(tz="UTC"))  # what is known now (see count_reactions)
    write_online(lambda: store.write_to_online_store(view, frame))
    return len(frame)
