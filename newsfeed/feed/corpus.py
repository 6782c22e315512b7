"""The replica's copy of every post's features in the serving window, read from the online store.

Per request, reading 500 posts from Feast costs ~30 ms median and ~210 ms p99, one user
~0.3 ms (../shared/NOTES.md): so a replica holds the post side (content, engagement, live
counters) as arrays, refreshes the live counters from the shared user-state store on a
short TTL, and reads only the user per request.

Published posts are appended (``add``) while requests run: the arrays are one immutable
snapshot (``CorpusRows``) replaced whole, and rows are only ever appended, so a row a
request found stays the same post in every later snapshot. Whoever holds per-row data of
their own (a model's post vectors, the ranker's prepared inputs) extends it before the
corpus publishes the new rows, under ``lock``. Posts older than the window leave in a new
corpus (``window_of``): rows renumber, so a replica swaps that in whole with its models.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from newsfeed.feed.activity import group_by_key
from newsfeed.index import IdFilter
from newsfeed.schema import REACTIONS

POST_VIEWS = ("post_content", "post_engagement", "post_engagement_live")
LIVE_VIEW = "post_engagement_live"
POPULAR_PRIOR_IMPRESSIONS = 20.0
"""Popularity is engagement per impression shrunk towards 0 by this many impressions, so a
post with one lucky share does not top the fallback."""
WINDOW_DAYS = 14.0
"""The serving window: posts older than this leave a replica's corpus and indexes (at least
every arm's freshness horizon; the backfill and new-comments sources look no further)."""
READ_CHUNK = 2_000
WINDOW_SECONDS = 60


@dataclass
class FreshWindow:
    rows: np.ndarray  # newest first
    ids: IdFilter  # over their post ids, for the index search


def read_posts(store, post_ids: np.ndarray, views: tuple[str, ...] = POST_VIEWS) -> pd.DataFrame:
    """Online features of ``post_ids`` (``view__feature`` columns, the ranker service's ``views``),
    read in chunks."""
    from newsfeed.models.datasets import view_features

    refs = view_features(store, "ranker", views)
    parts = [store.get_online_features(features=refs, entity_rows=[{"post_id": int(p)} for p in chunk],
                                       full_feature_names=True).to_df()
             for chunk in np.array_split(post_ids, max(1, -(-len(post_ids) // READ_CHUNK)))]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def popularity(frame: pd.DataFrame, weights: dict[str, float]) -> np.ndarray:
    """Engagement per impression so far (weighted by ``weights``), shrunk by a prior."""
    column = frame.get
    impressions = np.expm1(pd.to_numeric(column("post_engagement__impressions_log1p"), errors="coerce")
                           .fillna(0).to_numpy(np.float64)) if "post_engagement__impressions_log1p" in frame else (
        np.zeros(len(frame)))
    per_impression = sum((w * pd.to_numeric(column(f"post_engagement__{r}_rate"), errors="coerce").fillna(0)
                          .to_numpy(np.float64) for r, w in weights.items()
                          if r in REACTIONS and f"post_engagement__{r}_rate" in frame), np.zeros(len(frame)))
    return per_impression * impressions / (impressions + POPULAR_PRIOR_IMPRESSIONS)


@dataclass(frozen=True)
class CorpusRows:
    """One consistent snapshot of the corpus's per-row arrays (row i is the same post in each)."""

    frame: pd.DataFrame  # feature columns plus post_id, author_id
    post_ids: np.ndarray
    author_ids: np.ndarray
    topic_ids: np.ndarray
    topic_names: np.ndarray
    created_unix: np.ndarray
    popularity: np.ndarray  # under the platform's weight table
    mentioned: dict[int, np.ndarray]  # user -> rows of posts mentioning them
    order: np.ndarray  # rows by post id (lookups are a binary search)

    @classmethod
    def of(cls, frame: pd.DataFrame, weights: dict[str, float], first_row: int = 0) -> "CorpusRows":
        frame = frame.reset_index(drop=True)
        frame["author_id"] = pd.to_numeric(frame["post_content__written_by"], errors="coerce").fillna(-1).astype(
            np.int64)
        mentions = frame["post_content__mentions"].to_numpy()
        lengths = np.fromiter((0 if m is None else len(m) for m in mentions), np.int64, len(mentions))
        mentioned: dict[int, np.ndarray] = {}
        if lengths.sum():
            users = np.concatenate([np.asarray(m, np.int64) for m in mentions if m is not None and len(m)])
            mentioned = group_by_key(users, np.repeat(np.arange(len(frame)) + first_row, lengths))
        post_ids = frame["post_id"].to_numpy(np.int64)
        return cls(frame=frame, post_ids=post_ids, author_ids=frame["author_id"].to_numpy(np.int64),
                   topic_ids=pd.to_numeric(frame["post_content__topic_id"], errors="coerce").fillna(-1).to_numpy(
                       np.int64),
                   topic_names=frame["post_content__topic"].astype(str).to_numpy(),
                   created_unix=pd.to_numeric(frame["post_content__created_unix"], errors="coerce").fillna(0)
                   .to_numpy(np.float64),
                   popularity=popularity(frame, weights), mentioned=mentioned,
                   order=np.argsort(post_ids, kind="stable"))

    def appended(self, more: "CorpusRows") -> "CorpusRows":
        mentioned = dict(self.mentioned)
        for user, rows in more.mentioned.items():
            mentioned[user] = np.union1d(mentioned.get(user, np.zeros(0, np.int64)), rows)
        post_ids = np.concatenate([self.post_ids, more.post_ids])
        # A new post has no engagement rows yet: those columns are left out of the concat (and
        # come back missing), so they keep the corpus's dtypes.
        known = more.frame.loc[:, more.frame.notna().any()]
        return CorpusRows(frame=pd.concat([self.frame, known], ignore_index=True), post_ids=post_ids,
                          author_ids=np.concatenate([self.author_ids, more.author_ids]),
                          topic_ids=np.concatenate([self.topic_ids, more.topic_ids]),
                          topic_names=np.concatenate([self.topic_names, more.topic_names]),
                          created_unix=np.concatenate([self.created_unix, more.created_unix]),
                          popularity=np.concatenate([self.popularity, more.popularity]), mentioned=mentioned,
                          order=np.argsort(post_ids, kind="stable"))


class PostCorpus:
    def __init__(self, rows: CorpusRows, weights: dict[str, float]):
        self._rows, self.weights = rows, weights
        self.lock = threading.RLock()  # every change of rows, and of what others hold per row
        self.live_read_unix = time.time()
        self._windows: dict = {}

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, weights: dict[str, float] | None = None) -> "PostCorpus":
        from newsfeed.scoring import load_weights

        weights = weights or load_weights()
        frame = frame.sort_values("post_id", kind="stable")
        return cls(CorpusRows.of(frame, weights), weights)

    @classmethod
    def from_store(cls, store, post_ids: np.ndarray) -> "PostCorpus":
        return cls.from_frame(read_posts(store, np.unique(np.asarray(post_ids, np.int64))))

    # one snapshot's arrays (a request that reads several may see a later snapshot for the
    # later ones: rows only append, so what it found earlier stays valid)
    frame = property(lambda self: self._rows.frame)
    post_ids = property(lambda self: self._rows.post_ids)
    author_ids = property(lambda self: self._rows.author_ids)
    topic_ids = property(lambda self: self._rows.topic_ids)
    topic_names = property(lambda self: self._rows.topic_names)
    created_unix = property(lambda self: self._rows.created_unix)
    popularity = property(lambda self: self._rows.popularity)
    mentioned = property(lambda self: self._rows.mentioned)

    def __len__(self) -> int:
        return len(self._rows.post_ids)

    def add(self, frame: pd.DataFrame, extend: Callable[[pd.DataFrame], None] = lambda rows: None) -> int:
        """Append the posts of ``frame`` (read_posts' columns) not held yet; ``extend(rows)``
        first grows whatever holds data per row of this corpus (the loaded models). Returns how
        many were added."""
        with self.lock:
            frame = frame.drop_duplicates("post_id")
            frame = frame[self.rows_of(frame["post_id"].to_numpy(np.int64)) < 0]
            if frame.empty:
                return 0
            more = CorpusRows.of(frame, self.weights, first_row=len(self))
            extend(more.frame)
            self._rows = self._rows.appended(more)
            self._windows = {}  # the fresh window holds them from the next request on
            return len(frame)

    def replicated(self, times: int) -> "PostCorpus":
        """Every post ``times`` over under new ids (the copies' ids follow the largest): a corpus
        ``times`` as large with the same feature distribution, for load benchmarks."""
        if times <= 1:
            return self
        step = int(self.post_ids.max()) + 1
        copies = [self.frame.assign(post_id=self.frame["post_id"] + k * step) for k in range(times)]
        return PostCorpus.from_frame(pd.concat(copies, ignore_index=True), self.weights)

    def window_of(self, now_unix: float, days: float) -> "PostCorpus | None":
        """A new corpus of the posts published within ``days`` before ``now_unix`` (None when
        none is older): what a replica swaps in to keep its memory flat."""
        rows = self._rows
        keep = rows.created_unix >= now_unix - days * 86_400
        if keep.all():
            return None
        return PostCorpus(CorpusRows.of(rows.frame[keep].drop(columns=["author_id"]), self.weights), self.weights)

    def rows_of(self, post_ids: np.ndarray) -> np.ndarray:
        """Corpus rows of ``post_ids``; -1 for a post the replica does not hold."""
        rows, post_ids = self._rows, np.asarray(post_ids, np.int64)
        if not len(rows.post_ids):
            return np.full(len(post_ids), -1)
        ordered = rows.post_ids[rows.order]
        at = np.searchsorted(ordered, post_ids).clip(0, len(ordered) - 1)
        return np.where(ordered[at] == post_ids, rows.order[at], -1)

    def fresh_rows(self, now_unix: float, horizon_days: float) -> np.ndarray:
        """Rows of the posts published within ``horizon_days`` before ``now_unix``, newest first."""
        created = self.created_unix
        age = now_unix - created
        rows = np.flatnonzero((age >= 0) & (age <= horizon_days * 86_400))
        return rows[np.argsort(-created[rows], kind="stable")]

    def window(self, now_unix: float, horizon_days: float) -> "FreshWindow":
        """The fresh posts as of ``now_unix``, recomputed at most once a minute and after posts
        arrive (every request in between shares its search filter)."""
        key = (int(now_unix // WINDOW_SECONDS), horizon_days)
        windows = self._windows
        cached = windows.get(key)
        if cached is None:
            rows = self.fresh_rows(now_unix, horizon_days)
            cached = FreshWindow(rows, IdFilter(self.post_ids[rows]))
            self._windows = {**({} if len(windows) > 8 else windows), key: cached}
        return cached

    def apply_counters(self, counters: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """The live counters (reaction -> (post ids, totals)) of the posts the shared store has
        counted; other posts keep their materialised values. Call under ``lock``."""
        frame = self.frame.copy()  # swapped whole: a request never sees half an update
        for reaction, (post_ids, totals) in counters.items():
            column = f"{LIVE_VIEW}__{reaction}_count"
            if column not in frame or not len(post_ids):
                continue
            rows = self.rows_of(post_ids)
            held = rows >= 0
            values = frame[column].to_numpy(copy=True)
            values[rows[held]] = totals[held]
            frame[column] = values
        self._rows = replace(self._rows, frame=frame)
        self.live_read_unix = time.time()
