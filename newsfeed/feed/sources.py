"""Candidate sources. Each adds up to ``k`` posts published within the freshness horizon,
remembering itself as their source; a post another source offered first keeps that one."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from newsfeed.feed.context import FeedContext
from newsfeed.feed.corpus import PostCorpus
from newsfeed.feed.models import RetrievalModel
from newsfeed.feed.stages import Slot


@dataclass
class AnnSource:
    """Nearest posts to the user's two-tower vector, searched in the registered FAISS index
    among the fresh posts only. Skipped for a user the store does not know (cold start)."""

    corpus: PostCorpus
    retrieval: RetrievalModel
    k: int
    horizon_days: float
    name: str = "source:ann"
    slot: Slot = Slot.SOURCES
    source: str = "ann"  # the code its candidates carry (context.SOURCES)

    def __call__(self, ctx: FeedContext) -> None:
        if not ctx.user.known or self.k <= 0:
            return
        if ctx.user.embedding is None:
            ctx.user.embedding = self.retrieval.user_vector(ctx.user.user_id, ctx.user.features)
        window = self.corpus.window(ctx.request.now_unix, self.horizon_days)
        scores, ids = self.retrieval.index.search(ctx.user.embedding, self.k, among=window.ids)
        scores, ids = scores[0], ids[0]
        rows = self.corpus.rows_of(ids)
        valid = (ids >= 0) & (rows >= 0)  # FAISS pads with -1 when fewer posts qualify
        ctx.offer(self.source, rows[valid], ids[valid], scores[valid])


@dataclass
class InNetworkSource:
    """Friends' fresh posts: close friends and family first, then the newest."""

    corpus: PostCorpus
    k: int
    horizon_days: float
    name: str = "source:in_network"
    slot: Slot = Slot.SOURCES
    source: str = "in_network"  # the code its candidates carry (context.SOURCES)

    def __call__(self, ctx: FeedContext) -> None:
        if not len(ctx.user.friends) or self.k <= 0:
            return
        rows = self.corpus.window(ctx.request.now_unix, self.horizon_days).rows  # newest first
        authors = self.corpus.author_ids[rows]
        rows = rows[np.isin(authors, ctx.user.friends)]
        close = np.isin(self.corpus.author_ids[rows], ctx.user.close_friends)
        rows = rows[np.argsort(~close, kind="stable")][: self.k]
        ctx.offer(self.source, rows, self.corpus.post_ids[rows])


@dataclass
class FreshSource:
    corpus: PostCorpus
    k: int
    horizon_days: float
    name: str = "source:fresh"
    slot: Slot = Slot.SOURCES
    source: str = "fresh"  # the code its candidates carry (context.SOURCES)

    def __call__(self, ctx: FeedContext) -> None:
        rows = self.corpus.window(ctx.request.now_unix, self.horizon_days).rows[: max(self.k, 0)]
        ctx.offer(self.source, rows, self.corpus.post_ids[rows])


@dataclass
class PopularSource:
    """The fresh posts of highest engagement per impression so far (the corpus's popularity)."""

    corpus: PostCorpus
    k: int
    horizon_days: float
    name: str = "source:popular"
    slot: Slot = Slot.SOURCES
    source: str = "popular"  # the code its candidates carry (context.SOURCES)

    # (window, popularity, its top rows): the same for every request until either is replaced
    _top: tuple = field(default=(None, None, None), init=False, repr=False, compare=False)

    def __call__(self, ctx: FeedContext) -> None:
        window, popularity = self.corpus.window(ctx.request.now_unix, self.horizon_days), self.corpus.popularity
        cached_window, cached_popularity, top = self._top
        if cached_window is not window or cached_popularity is not popularity:
            rows = window.rows
            top = rows[np.argsort(-popularity[rows], kind="stable")[: max(self.k, 0)]]
            self._top = (window, popularity, top)  # replaced whole: safe beside concurrent requests
        ctx.offer(self.source, top, self.corpus.post_ids[top])


@dataclass
class NewCommentsSource:
    """Posts the user saw that others commented on since: friends' comments first, then the
    most recent posts (each post comes back once per new activity: showing it marks it seen)."""

    corpus: PostCorpus
    k: int
    name: str = "source:new_comments"
    slot: Slot = Slot.SOURCES
    source: str = "new_comments"  # the code its candidates carry (context.SOURCES)

    def __call__(self, ctx: FeedContext) -> None:
        revived = ctx.user.new_comments
        if not revived or self.k <= 0:
            return
        ids = np.fromiter(revived, np.int64, len(revived))
        rows = self.corpus.rows_of(ids)
        ids, rows = ids[rows >= 0], rows[rows >= 0]
        by_friend = np.array([np.isin(revived[int(p)], ctx.user.friends).any() for p in ids], bool)
        order = np.lexsort((-self.corpus.created_unix[rows], ~by_friend))[: self.k]
        ctx.offer(self.source, rows[order], ids[order])
