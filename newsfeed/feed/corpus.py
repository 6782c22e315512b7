"""The replica's copy of every post's features, read once from the online store.

Per request, reading 500 posts from Feast costs ~30 ms median and ~210 ms p99, one user
~0.3 ms (../shared/NOTES.md): so a replica holds the post side (content, engagement, live
counters) as arrays, refreshes the live counters from the shared user-state store on a
short TTL, and reads only the user per request. Posts are kept sorted by id so lookups are a binary search.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

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


@dataclass
class PostCorpus:
    frame: pd.DataFrame  # one row per post, sorted by post_id; feature columns plus post_id, author_id
    post_ids: np.ndarray
    author_ids: np.ndarray
    topic_ids: np.ndarray
    topic_names: np.ndarray
    created_unix: np.ndarray
    mentioned: dict[int, np.ndarray] = field(default_factory=dict)  # user -> rows of posts mentioning them
    live_read_unix: float = 0.0
    _windows: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> "PostCorpus":
        frame = frame.sort_values("post_id", kind="stable").reset_index(drop=True)
        frame["author_id"] = pd.to_numeric(frame["post_content__written_by"], errors="coerce").fillna(-1).astype(
            np.int64)
        mentions = frame["post_content__mentions"].to_numpy()
        lengths = np.fromiter((0 if m is None else len(m) for m in mentions), np.int64, len(mentions))
        mentioned: dict[int, np.ndarray] = {}
        if lengths.sum():
            users = np.concatenate([np.asarray(m, np.int64) for m in mentions if m is not None and len(m)])
            rows = np.repeat(np.arange(len(frame)), lengths)
            mentioned = group_by_key(users, rows)
        return cls(frame=frame, post_ids=frame["post_id"].to_numpy(np.int64),
                   author_ids=frame["author_id"].to_numpy(np.int64),
                   topic_ids=pd.to_numeric(frame["post_content__topic_id"], errors="coerce").fillna(-1).to_numpy(
                       np.int64),
                   topic_names=frame["post_content__topic"].astype(str).to_numpy(),
                   created_unix=pd.to_numeric(frame["post_content__created_unix"], errors="coerce").fillna(0).to_numpy(
                       np.float64),
                   mentioned=mentioned, live_read_unix=time.time())

    @classmethod
    def from_store(cls, store, post_ids: np.ndarray) -> "PostCorpus":
        frame = read_posts(store, np.unique(np.asarray(post_ids, np.int64)))
        return cls.from_frame(frame)

    def __len__(self) -> int:
        return len(self.post_ids)

    def replicated(self, times: int) -> "PostCorpus":
        """Every post ``times`` over under new ids (the copies' ids follow the largest): a corpus
        ``times`` as large with the same feature distribution, for load benchmarks."""
        if times <= 1:
            return self
        step = int(self.post_ids.max()) + 1
        copies = [self.frame.assign(post_id=self.frame["post_id"] + k * step) for k in range(times)]
        return PostCorpus.from_frame(pd.concat(copies, ignore_index=True))

    def rows_of(self, post_ids: np.ndarray) -> np.ndarray:
        """Corpus rows of ``post_ids``; -1 for a post the replica does not hold."""
        post_ids = np.asarray(post_ids, np.int64)
        at = np.searchsorted(self.post_ids, post_ids).clip(0, max(len(self) - 1, 0))
        found = len(self) > 0
        return np.where(found & (self.post_ids[at] == post_ids), at, -1) if found else np.full(len(post_ids), -1)

    def fresh_rows(self, now_unix: float, horizon_days: float) -> np.ndarray:
        """Rows of the posts published within ``horizon_days`` before ``now_unix``, newest first."""
        age = now_unix - self.created_unix
        rows = np.flatnonzero((age >= 0) & (age <= horizon_days * 86_400))
        return rows[np.argsort(-self.created_unix[rows], kind="stable")]

    def window(self, now_unix: float, horizon_days: float) -> "FreshWindow":
        """The fresh posts as of ``now_unix``, recomputed at most once a minute (every request
        of that minute shares its search filter)."""
        key = (int(now_unix // WINDOW_SECONDS), horizon_days)
        cached = self._windows.get(key)
        if cached is None:
            rows = self.fresh_rows(now_unix, horizon_days)
            cached = FreshWindow(rows, IdFilter(self.post_ids[rows]))
            self._windows = {key: cached}  # one minute at a time: the old one is dropped
        return cached

    def popularity(self, weights: dict[str, float]) -> np.ndarray:
        """Engagement per impression so far (weighted by ``weights``), shrunk by a prior."""
        column = self.frame.get
        impressions = np.expm1(pd.to_numeric(column("post_engagement__impressions_log1p"), errors="coerce")
                               .fillna(0).to_numpy(np.float64))
        per_impression = sum(w * pd.to_numeric(column(f"post_engagement__{r}_rate"), errors="coerce").fillna(0)
                             .to_numpy(np.float64) for r, w in weights.items() if r in REACTIONS)
        return per_impression * impressions / (impressions + POPULAR_PRIOR_IMPRESSIONS)

    def apply_counters(self, counters: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """The live counters (reaction -> (post ids, totals)) of the posts the shared store has
        counted; other posts keep their materialised values."""
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
        self.frame = frame
        self.live_read_unix = time.time()
