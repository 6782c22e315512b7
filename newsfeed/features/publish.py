"""Publishing: posts, users and friendships written while the service runs.

Each item is checked against its table's contract and against what is known (a post's
author exists, its created time is neither in the service's future nor before the data; a
friendship's users exist and differ), then its online features are written (a post's
content features computed the way the feature jobs compute them; a user's profile), then
the batch is appended to the table's log in the data folder (durable, atomic), where
replicas and the next training run find it. A store that cannot be written stops the
batch before anything is logged (``PublishUnavailable``: the client retries; nothing is
half-written).

Idempotent by id: a post or user already known, or claimed a moment ago by another replica
(the id claimed in the user-state store, as event ids are), is a duplicate: acknowledged,
stored once. A friendship's id is a hash of its pair, state and time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from newsfeed.data import table_log
from newsfeed.data.validation import validate_tables
from newsfeed.errors import first_line, NewsfeedError
from newsfeed.schema import FUTURE_TOLERANCE, SCHEMAS

TIME_FIELDS = {"posts": "created_ts", "users": "signup_ts", "friendships": "formed_ts"}
DEFAULTS: dict[str, dict] = {
    "posts": {"hashtags": list, "mentions": list, "media_type": lambda: "text"},
    "users": {c: lambda: None for c in ("age", "gender", "country", "language", "timezone")},
    "friendships": {"close_friend": lambda: False, "family": lambda: False, table_log.ENDED: lambda: False},
}
"""What an item may leave out, besides its time (default: the service's now)."""


class PublishUnavailable(NewsfeedError):
    """A store the batch must reach first (online features, id claims) cannot be written:
    nothing was logged; the client may retry the same batch."""


@dataclass
class Known:
    """What published items are checked against: the users and posts that exist (the data
    plus what was published since), and where the data begins."""

    users: Callable[[np.ndarray], np.ndarray]  # ids -> known mask
    posts: Callable[[np.ndarray], np.ndarray]
    start: pd.Timestamp | None


def known_of(directory) -> Known:
    """What a ``feed.activity.UserDirectory`` knows (the data plus what it applied since)."""
    start = pd.Timestamp(directory.earliest_unix, unit="s", tz="UTC") if directory.earliest_unix is not None else None
    return Known(directory.knows_users, directory.knows_posts, start)


@dataclass
class Rejected:
    index: int
    reason: str


@dataclass
class PublishResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    rows: pd.DataFrame | None = None  # the new rows, as logged
    log_file: Path | None = None
    notes: list[str] = field(default_factory=list)  # what went wrong after the batch was logged

    def as_json(self) -> dict:
        return {"accepted": self.accepted, "duplicates": self.duplicates,
                "rejected": [{"index": r.index, "reason": r.reason} for r in self.rejected], "notes": self.notes}


def item_ids(table: str, frame: pd.DataFrame) -> list[str]:
    """The id an item is claimed under (a post's or user's id; a hash for a friendship)."""
    if table == "posts":
        return [f"post:{int(p)}" for p in frame["post_id"]]
    if table == "users":
        return [f"user:{int(u)}" for u in frame["user_id"]]
    keys = table_log.pair_keys(frame) + "|" + frame[table_log.ENDED].astype(str) + "|" + frame["formed_ts"].astype(str)
    return ["friendship:" + hashlib.sha1(k.encode()).hexdigest()[:20] for k in keys]


def prepare(table: str, items: list[dict], now: pd.Timestamp) -> tuple[pd.DataFrame, dict[int, str]]:
    """The items as a frame with defaults filled, and index -> why for those that cannot be read."""
    frame = pd.DataFrame(items).reset_index(drop=True)
    for column, default in DEFAULTS[table].items():
        if column not in frame:
            frame[column] = None
        frame[column] = [default() if _missing(v) else v for v in frame[column]]
    ts = TIME_FIELDS[table]
    given = frame[ts] if ts in frame else pd.Series(None, index=frame.index, dtype=object)
    parsed = pd.to_datetime(given, utc=True, errors="coerce", format="mixed")
    frame[ts] = parsed.where(given.notna(), now)
    reasons = {int(i): f"{ts}: cannot be read as a timestamp" for i in frame.index[frame[ts].isna()]}
    return frame, reasons


def check(table: str, frame: pd.DataFrame, known: Known, now: pd.Timestamp) -> tuple[pd.DataFrame, dict[int, str], np.ndarray]:
    """(the rows that pass, index -> why for those that do not, mask of rows already known)."""
    columns = [c for c in SCHEMAS[table].columns if c in frame]
    checked = validate_tables({table: frame[columns]}, required=(table,))
    if checked.errors:
        return frame.iloc[:0], {int(i): "; ".join(checked.errors) for i in frame.index}, np.zeros(0, bool)
    quarantine = checked.quarantine[table]
    reasons = {int(i): why for i, why in zip(quarantine.index, quarantine["quarantine_reason"])}
    good = checked.clean[table]
    if table == "friendships":
        good = good.assign(**{table_log.ENDED: frame.loc[good.index, table_log.ENDED].astype(bool)})
    ts = good[TIME_FIELDS[table]]

    def reject(mask: np.ndarray, why: Callable[[int], str]) -> None:
        for i in good.index[mask]:
            reasons.setdefault(int(i), why(i))

    reject((ts > now + FUTURE_TOLERANCE).to_numpy(),
           lambda i: f"{TIME_FIELDS[table]}: after the service's now ({now:%Y-%m-%d %H:%M}; got {ts[i]})")
    if known.start is not None and table != "users":
        reject((ts < known.start).to_numpy(),
               lambda i: f"{TIME_FIELDS[table]}: before the data begins ({known.start:%Y-%m-%d}; got {ts[i]})")
    if table == "posts":
        authors = good["author_id"]
        has_author = authors.notna().to_numpy()
        unknown = has_author & ~known.users(authors.fillna(-1).to_numpy(np.int64))
        reject(unknown, lambda i: f"author_id: unknown user {good.at[i, 'author_id']}")
    if table == "friendships":
        for column in ("user_id", "friend_id"):
            unknown = ~known.users(good[column].to_numpy(np.int64))
            reject(unknown, lambda i, c=column: f"{c}: unknown user {good.at[i, c]}")
    good = good.drop(index=[i for i in good.index if int(i) in reasons])
    already = (known.posts(good["post_id"].to_numpy(np.int64)) if table == "posts"
               else known.users(good["user_id"].to_numpy(np.int64)) if table == "users"
               else np.zeros(len(good), bool))
    return good, reasons, already


def publish(table: str, items: list[dict], data_dir: Path, known: Known, state, now: pd.Timestamp,
            write_online: Callable[[str, pd.DataFrame], None] | None = None) -> PublishResult:
    """Check, write the online features (``write_online(table, rows)``), log; see the module."""
    from newsfeed.feed.user_state import StateError

    if table not in TIME_FIELDS:
        raise ValueError(f"cannot publish {table!r}: posts, users or friendships")
    result = PublishResult()
    if not items:
        return result
    frame, reasons = prepare(table, items, now)
    readable = frame.drop(index=list(reasons))
    good, more, already = check(table, readable.reset_index(drop=True), known, now) if len(readable) else (
        readable, {}, np.zeros(0, bool))
    position = readable.index.to_numpy()  # check() numbered the readable rows 0..n-1
    reasons.update({int(position[i]): why for i, why in more.items()})
    good.index = position[good.index.to_numpy()] if len(good) else good.index
    result.rejected = [Rejected(i, reasons[i]) for i in sorted(reasons)]
    new = good[~already]  # (an id twice in one batch: the contract rejects the second)
    result.duplicates = len(good) - len(new)
    if new.empty:
        return result
    ids = item_ids(table, new)
    try:
        fresh = np.asarray(state.claim_events(ids), bool)
    except StateError as err:
        raise PublishUnavailable(f"cannot claim the items' ids: {err}") from None
    claimed = [i for i, f in zip(ids, fresh) if f]
    new = new[fresh]
    result.duplicates += int((~fresh).sum())
    if new.empty:
        return result
    try:
        if write_online is not None:
            write_online(table, new)
    except Exception as err:  # noqa: BLE001 - any store failure: nothing is logged, the client retries
        state.release_events(claimed)
        why = first_line(err)[:200]
        raise PublishUnavailable(f"cannot write the online store: {type(err).__name__}: {why}") from None
    try:
        result.log_file = table_log.append(data_dir, table, new.reset_index(drop=True))
    except BaseException:
        state.release_events(claimed)  # not logged: a retry must not be taken for a duplicate
        raise
    result.accepted, result.rows = len(new), new.reset_index(drop=True)
    return result


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


# -- the online rows a published item needs -------------------------------------------------------

ONLINE_VIEWS = {"posts": "post_content", "users": "user_profile"}
"""Friendships have no online row of their own: serving's directory follows them from the log."""


def online_rows(table: str, rows: pd.DataFrame, home: Path) -> pd.DataFrame | None:
    """The online feature rows of published ``rows``, computed as the feature jobs compute them
    (a post's text embedded by the packaged MiniLM model, hashtags hashed, its topic id in the
    vocabulary of the features being served); None for a table without one."""
    from newsfeed.features import jobs
    from newsfeed.features.build import offline_manifest

    if table == "posts":
        return jobs.post_content(rows, offline_manifest(home)["topics"], embed_cache=None)
    if table == "users":
        return jobs.user_profile(rows)
    return None


def online_writer(store, home: Path) -> Callable[[str, pd.DataFrame], None]:
    """``write_online`` for ``publish``: the rows' online features into ``store`` (Feast)."""
    from newsfeed.features.store import write_online

    def write(table: str, rows: pd.DataFrame) -> None:
        frame = online_rows(table, rows, home)
        if frame is None or store is None:
            return
        write_online(lambda: store.write_to_online_store(ONLINE_VIEWS[table], frame))
    return write
