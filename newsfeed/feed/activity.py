"""Who the users are and who their friends are (the replica's copy, read from the data), and
the one-time load of the data's history into the shared user-state store.

What a user saw, hid and blocked is not here: it lives in the user-state store every replica
shares (``user_state.py``). The data's impressions, its event log and what earlier runs
served are loaded into that store once per dataset (a mark in the store says so), not
re-derived by every replica at start.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from newsfeed.data import event_log
from newsfeed.data.io import read_dataset, read_parquet, table_path

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
class UserDirectory:
    friends: dict[int, np.ndarray] = field(default_factory=dict)
    close_friends: dict[int, np.ndarray] = field(default_factory=dict)
    author_of: pd.Series = field(default_factory=lambda: pd.Series(dtype=np.int64))  # post_id -> author_id
    known_users: frozenset = frozenset()
    latest_unix: float | None = None  # the newest impression in the data: where a replayed dataset's clock stands
    earliest_unix: float | None = None  # the oldest: nothing published may be older

    @classmethod
    def from_data(cls, data_dir: Path) -> "UserDirectory":
        tables = read_dataset(data_dir, ("users", "posts", "friendships"))
        posts = tables.get("posts", pd.DataFrame(columns=["post_id", "author_id"]))
        author_of = pd.Series(posts["author_id"].fillna(-1).to_numpy(np.int64), index=posts["post_id"].to_numpy(np.int64))
        latest = earliest = None
        if table_path(data_dir, "impressions").exists():
            stamps = pd.to_datetime(pd.read_parquet(table_path(data_dir, "impressions"), columns=["ts"])["ts"],
                                    utc=True)
            latest, earliest = (stamps.max(), stamps.min()) if len(stamps) else (None, None)
        unix = lambda stamp: stamp.timestamp() if stamp is not None and pd.notna(stamp) else None  # noqa: E731
        directory = cls(author_of=author_of, latest_unix=unix(latest), earliest_unix=unix(earliest),
                        known_users=frozenset(tables["users"]["user_id"].astype(int)) if "users" in tables
                        else frozenset())
        friends = tables.get("friendships")
        if friends is not None and len(friends):
            a, b = friends["user_id"].to_numpy(np.int64), friends["friend_id"].to_numpy(np.int64)
            close = friends["close_friend"].to_numpy(bool) | friends["family"].to_numpy(bool)
            directory.friends = group_by_key(np.r_[a, b], np.r_[b, a])
            directory.close_friends = group_by_key(np.r_[a[close], b[close]], np.r_[b[close], a[close]])
        return directory

    def authors(self, post_ids: np.ndarray) -> np.ndarray:
        """The author of each post; -1 for a post the data does not know."""
        return self.author_of.reindex(np.asarray(post_ids, np.int64)).fillna(-1).to_numpy(np.int64)

    # -- published content (``replica.ContentFollower``): each change replaces what it changes
    # whole, so a request reading meanwhile sees the old value or the new one

    def knows_users(self, user_ids: np.ndarray) -> np.ndarray:
        known = self.known_users
        return np.fromiter((u in known for u in np.asarray(user_ids, np.int64).tolist()), bool, len(user_ids))

    def knows_posts(self, post_ids: np.ndarray) -> np.ndarray:
        return self.author_of.index.get_indexer(np.asarray(post_ids, np.int64)) >= 0

    def add_users(self, users: pd.DataFrame) -> int:
        new = set(users["user_id"].astype(np.int64).tolist()) - self.known_users
        if new:
            self.known_users = self.known_users | new
        return len(new)

    def add_posts(self, posts: pd.DataFrame) -> int:
        ids = posts["post_id"].to_numpy(np.int64)
        new = ~self.knows_posts(ids) & ~pd.Index(ids).duplicated()
        if new.any():
            authors = posts["author_id"].astype("Int64").fillna(-1).to_numpy(np.int64)
            self.author_of = pd.concat([self.author_of, pd.Series(authors[new], index=ids[new])])
        return int(new.sum())

    def apply_friendships(self, rows: pd.DataFrame) -> int:
        """Friendships formed, or ended (``ended``), in order; a friendship is mutual."""
        from newsfeed.data.table_log import ENDED

        friends, close = dict(self.friends), dict(self.close_friends)
        ended = rows[ENDED].astype(bool).to_numpy() if ENDED in rows else np.zeros(len(rows), bool)
        near = (rows["close_friend"].astype(bool) | rows["family"].astype(bool)).to_numpy()
        pairs = zip(rows["user_id"].to_numpy(np.int64).tolist(), rows["friend_id"].to_numpy(np.int64).tolist())
        for (a, b), gone, is_close in zip(pairs, ended, near):
            for x, y in ((a, b), (b, a)):
                friends[x] = np.setdiff1d(friends.get(x, EMPTY), [y]) if gone else np.union1d(friends.get(x, EMPTY), [y])
                close[x] = (np.union1d(close.get(x, EMPTY), [y]) if is_close and not gone
                            else np.setdiff1d(close.get(x, EMPTY), [y]))
        self.friends, self.close_friends = friends, close
        return len(rows)


# -- the data's history, loaded into the shared store once ----------------------------------------

def dataset_mark(data_dir: Path) -> str:
    """Names this dataset's impressions table (path, size, time): a new dataset loads again."""
    path = table_path(data_dir, "impressions")
    stat = path.stat() if path.exists() else None
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}" if stat else f"{Path(data_dir).resolve()}:none"
    return "history:" + hashlib.sha1(key.encode()).hexdigest()[:16]


def load_history(state, data_dir: Path, directory: UserDirectory, read_served: Callable[[], list[dict]]) -> dict:
    """Seen, hidden and blocked from the data's impressions, its event log and what earlier
    runs served (``read_served()``, called only when needed), into ``state``; each only once
    (the dataset and each log part are marked). Returns what it loaded, for the log."""
    loaded = {"impressions": 0, "served": 0, "event_parts": 0}
    mark = dataset_mark(data_dir)
    if {mark, *(f"events:{p.name}" for p in event_log.parts(data_dir))} <= state.marks():
        return loaded  # the usual start: one look, nothing to do
    with state.exclusive("history"):  # replicas starting together: one loads, the others find it done
        return _load_history(state, data_dir, directory, read_served, mark, loaded)


def _load_history(state, data_dir: Path, directory: UserDirectory, read_served: Callable[[], list[dict]],
                  mark: str, loaded: dict) -> dict:
    done = state.marks()
    if mark not in done:
        state.reset()  # another dataset's seen posts, blocks and counters must not follow its users
        if table_path(data_dir, "impressions").exists():
            imp = pd.read_parquet(table_path(data_dir, "impressions"),
                                  columns=["user_id", "post_id", "ts", "hide", "block", "comment"])
            users, posts = imp["user_id"].to_numpy(np.int64), imp["post_id"].to_numpy(np.int64)
            when = pd.to_datetime(imp["ts"], utc=True).astype("int64").to_numpy() / 1e9
            state.load_seen(users, posts, when)
            hide, block = imp["hide"].to_numpy(bool), imp["block"].to_numpy(bool)
            state.add_hidden(users[hide], posts[hide])
            add_blocks(state, users[block], posts[block], directory)
            commented = imp["comment"].to_numpy(bool)
            state.add_comments(posts[commented], users[commented], when[commented])
            loaded["impressions"] = len(imp)
        shown = [(r["user_id"], item["post_id"], r["ts"]) for r in read_served() if not r.get("shadow")
                 for item in r.get("items", [])]
        if shown:
            users, posts, when = (np.asarray(c) for c in zip(*shown))
            state.load_seen(users.astype(np.int64), posts.astype(np.int64), when.astype(np.float64))
            loaded["served"] = len(shown)
        state.mark(mark)
    for part in event_log.parts(data_dir):
        if f"events:{part.name}" not in done:
            apply_events(state, read_parquet(part), directory)
            state.mark(f"events:{part.name}")
            loaded["event_parts"] += 1
    return loaded


def apply_events(state, events: pd.DataFrame, directory: UserDirectory) -> None:
    """The hides, blocks and comments among ``events`` (``user_id, post_id, event_type, ts``)
    into ``state`` (a comment brings the post back to those who saw it before)."""
    if events is None or events.empty:
        return
    comments = events[events["event_type"] == "comment"]
    if not comments.empty:
        when = pd.to_datetime(comments["ts"], utc=True).astype("int64").to_numpy() / 1e9
        state.add_comments(comments["post_id"].to_numpy(np.int64), comments["user_id"].to_numpy(np.int64), when)
    for kind in ("hide", "block"):
        rows = events[events["event_type"] == kind]
        if rows.empty:
            continue
        users, posts = rows["user_id"].to_numpy(np.int64), rows["post_id"].to_numpy(np.int64)
        if kind == "hide":
            state.add_hidden(users, posts)
        else:
            add_blocks(state, users, posts, directory)


def add_blocks(state, users: np.ndarray, posts: np.ndarray, directory: UserDirectory) -> None:
    """Block the authors of ``posts``; a post without a known author blocks nobody."""
    authors = directory.authors(posts)
    state.add_blocked(users[authors >= 0], authors[authors >= 0])


def apply_ingested(state, result, directory: UserDirectory) -> str | None:
    """After an ingested batch (``features.ingest.IngestResult``): its hides and blocks into
    ``state`` and its log part marked as applied. Returns why not, when the store cannot be
    written (the part stays unmarked: replicas apply it when they next catch the store up)."""
    from newsfeed.feed.user_state import StateError

    if result.events is None or result.state_error is not None:
        return result.state_error
    try:
        apply_events(state, result.events, directory)
        state.mark(f"events:{result.log_file.name}")
    except StateError as err:
        return str(err)
    return None
