"""Filters: what a user must never be shown. Each drops candidates with one ``np.isin``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from newsfeed.feed.context import FeedContext
from newsfeed.feed.corpus import PostCorpus
from newsfeed.feed.stages import Slot


@dataclass
class SeenFilter:
    """Posts the user was shown before (unless others commented on them since), and the posts
    of earlier pages of this feed."""

    name: str = "filter:seen"
    slot: Slot = Slot.FILTERS

    def __call__(self, ctx: FeedContext) -> None:
        ids, revived = ctx.candidates.post_ids, np.fromiter(ctx.user.new_comments, np.int64, len(ctx.user.new_comments))
        gone = (np.isin(ids, ctx.user.seen) & ~np.isin(ids, revived)) | np.isin(ids, ctx.request.exclude)
        ctx.candidates = ctx.candidates.take(~gone)


@dataclass
class HiddenFilter:
    name: str = "filter:hidden"
    slot: Slot = Slot.FILTERS

    def __call__(self, ctx: FeedContext) -> None:
        ctx.candidates = ctx.candidates.take(~np.isin(ctx.candidates.post_ids, ctx.user.hidden))


@dataclass
class BlockedAuthorsFilter:
    corpus: PostCorpus
    name: str = "filter:blocked_authors"
    slot: Slot = Slot.FILTERS

    def __call__(self, ctx: FeedContext) -> None:
        authors = self.corpus.author_ids[ctx.candidates.rows]
        ctx.candidates = ctx.candidates.take(~np.isin(authors, ctx.user.blocked_authors))


@dataclass
class OwnPostsFilter:
    corpus: PostCorpus
    name: str = "filter:own_posts"
    slot: Slot = Slot.FILTERS

    def __call__(self, ctx: FeedContext) -> None:
        ctx.candidates = ctx.candidates.take(self.corpus.author_ids[ctx.candidates.rows] != ctx.user.user_id)
