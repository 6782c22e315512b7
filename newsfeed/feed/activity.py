"""What each user has seen, hidden and blocked, and who their friends are: the filters'
and the in-network source's state, kept in the replica.

Built from the data (impressions, friendships, the event log) when a replica starts, then
kept current by what this replica serves and ingests. Posts are sorted arrays per user,
so a filter is one ``np.isin`` over all candidates.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from newsfeed.data import event_log
from newsfeed.data.io import read_dataset, read_parquet
from newsfeed.feed.context import UserView

EMPTY = np.zeros(0, np.int64)


def group_by_key(users: np.ndarray, values: np.ndarray) -> dict[int, np.ndarray]:
    """key -> the sorted distinct values given with it."""
    if not len(users):
        return {}
    order = np.lexsort((values, users))
    users, values = users[order], values[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    return {int(u): np.unique(v) for u, v in zip(users[starts], np.split(values, starts[1:]))}


@dataclass
class UserActivity:
    seen: dict[int, np.ndarray] = field(default_factory=dict)
    hidden: dict[int, np.ndarray] = field(default_factory=dict)
    blocked_authors: dict[int, np.ndarray] = field(default_factory=dict)
    friends: dict[int, np.ndarray] = field(default_factory=dict)
    close_friends: dict[int, np.ndarray] = field(default_factory=dict)
    author_of: pd.Series = field(default_factory=lambda: pd.Series(dtype=np.int64))  # post_id -> author_id
    known_users: frozenset = frozenset()
    latest_unix: float | None = None  # the newest impression in the data: where a replayed dataset's clock stands
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_data(cls, data_dir: Path) -> "UserActivity":
        tables = read_dataset(data_dir, ("users", "posts", "impressions", "friendships"))
        imp = tables.get("impressions", pd.DataFrame(columns=["user_id", "post_id", "hide", "block"]))
        posts = tables.get("posts", pd.DataFrame(columns=["post_id", "author_id"]))
        author_of = pd.Series(posts["author_id"].fillna(-1).to_numpy(np.int64), index=posts["post_id"].to_numpy(np.int64))
        users, post_ids = imp["user_id"].to_numpy(np.int64), imp["post_id"].to_numpy(np.int64)
        hide, block = imp["hide"].to_numpy(bool), imp["block"].to_numpy(bool)
        latest = pd.to_datetime(imp["ts"], utc=True).max() if len(imp) else None
        activity = cls(latest_unix=latest.timestamp() if latest is not None and pd.notna(latest) else None,
                       seen=group_by_key(users, post_ids), hidden=group_by_key(users[hide], post_ids[hide]),
                       blocked_authors=group_by_key(users[block], author_of.reindex(post_ids[block]).fillna(-1)
                                                .to_numpy(np.int64)),
                       author_of=author_of,
                       known_users=frozenset(tables["users"]["user_id"].astype(int)) if "users" in tables else frozenset())
        friends = tables.get("friendships")
        if friends is not None and len(friends):
            a, b = friends["user_id"].to_numpy(np.int64), friends["friend_id"].to_numpy(np.int64)
            close = friends["close_friend"].to_numpy(bool) | friends["family"].to_numpy(bool)
            activity.friends = group_by_key(np.r_[a, b], np.r_[b, a])
            activity.close_friends = group_by_key(np.r_[a[close], b[close]], np.r_[b[close], a[close]])
        try:
            activity.record_events(pd.concat([read_parquet(p) for p in event_log.parts(data_dir)])
                                   if event_log.parts(data_dir) else pd.DataFrame())
        except (OSError, ValueError):
            pass  # the log is read again as events arrive; a broken part is the ingest path's to report
        return activity

    def view(self, user_id: int) -> UserView:
        get = lambda table: table.get(int(user_id), EMPTY)  # noqa: E731
        with self._lock:
            return UserView(user_id=int(user_id), known=int(user_id) in self.known_users, seen=get(self.seen),
                            hidden=get(self.hidden), blocked_authors=get(self.blocked_authors),
                            friends=get(self.friends), close_friends=get(self.close_friends))

    def mark_seen(self, user_id: int, post_ids: np.ndarray) -> None:
        with self._lock:
            self.seen[int(user_id)] = np.union1d(self.seen.get(int(user_id), EMPTY), np.asarray(post_ids, np.int64))

    def record_served(self, records: list[dict]) -> None:
        """Served feeds (the serving log's records) as seen; shadow arms' were never shown."""
        shown = [(r["user_id"], item["post_id"]) for r in records if not r.get("shadow") for item in r["items"]]
        if not shown:
            return
        users, posts = np.array(shown, np.int64).T
        with self._lock:
            for user, new in group_by_key(users, posts).items():
                self.seen[user] = np.union1d(self.seen.get(user, EMPTY), new)

    def record_events(self, events: pd.DataFrame) -> None:
        """Hides and blocks among ingested events (``user_id, post_id, event_type``)."""
        if events is None or events.empty:
            return
        with self._lock:
            for kind, table in (("hide", self.hidden), ("block", self.blocked_authors)):
                rows = events[events["event_type"] == kind]
                posts = rows["post_id"].to_numpy(np.int64)
                values = posts if kind == "hide" else self.author_of.reindex(posts).fillna(-1).to_numpy(np.int64)
                for user, new in group_by_key(rows["user_id"].to_numpy(np.int64), values).items():
                    table[user] = np.union1d(table.get(user, EMPTY), new)
