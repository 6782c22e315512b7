"""Re-ranking: from the ranker's order to the feed shown. Boosts adjust scores (in
engagement units); the greedy re-rankers choose position by position among the leading
candidates, vectorised over the candidates at each step; exploration samples and records
each shown post's probability of being shown where it is, for off-policy evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from newsfeed.feed.context import FeedContext
from newsfeed.feed.corpus import PostCorpus
from newsfeed.feed.models import RetrievalModel
from newsfeed.feed.stages import Slot

LOOKAHEAD = 3
"""Greedy re-rankers choose among the leading ``LOOKAHEAD`` x limit candidates."""


def _ordering_score(ctx: FeedContext) -> np.ndarray:
    """The ranker's score; where ranking failed, the two-tower score (then the source order)."""
    c = ctx.candidates
    if np.isfinite(c.score).all():
        return c.score
    fallback = np.nan_to_num(c.retrieval_score.astype(np.float64), nan=0.0) - np.arange(len(c)) * 1e-9
    return np.where(np.isfinite(c.score), c.score, fallback)


def _reorder(ctx: FeedContext, head: np.ndarray) -> None:
    """Put the candidates at positions ``head`` first, in that order; the rest keep theirs."""
    rest = np.setdiff1d(np.arange(len(ctx.candidates)), head, assume_unique=True)
    ctx.candidates = ctx.candidates.take(np.r_[head, rest].astype(np.int64))


def _leading(ctx: FeedContext) -> int:
    """How many of the leading candidates a greedy re-ranker chooses among."""
    return min(len(ctx.candidates), LOOKAHEAD * ctx.request.limit)


def _greedy(n: int, limit: int, value, placed) -> np.ndarray:
    """Positions filled one at a time: the candidate (of ``n``) of highest ``value()`` not yet
    taken, then ``placed(pick)`` updates what ``value`` depends on."""
    taken = np.zeros(n, bool)
    order = []
    for _ in range(min(n, limit)):
        pick = int(np.argmax(np.where(taken, -np.inf, value())))
        order.append(pick)
        taken[pick] = True
        placed(pick)
    return np.array(order, np.int64)


@dataclass
class Order:
    """Candidates by score, highest first (by the two-tower score where ranking failed)."""

    name: str = "order"
    slot: Slot = Slot.RERANK

    def __call__(self, ctx: FeedContext) -> None:
        ctx.candidates = ctx.candidates.take(np.argsort(-_ordering_score(ctx), kind="stable"))


@dataclass
class Freshness:
    """Adds ``weight`` x 2^(-age / half-life) to each score: newer posts rise."""

    corpus: PostCorpus
    weight: float
    half_life_hours: float
    name: str = "rerank:freshness"
    slot: Slot = Slot.RERANK

    def __call__(self, ctx: FeedContext) -> None:
        age_hours = np.maximum(ctx.request.now_unix - self.corpus.created_unix[ctx.candidates.rows], 0) / 3600.0
        ctx.candidates.score = _ordering_score(ctx) + self.weight * np.exp2(-age_hours / self.half_life_hours)
        ctx.candidates = ctx.candidates.take(np.argsort(-ctx.candidates.score, kind="stable"))


@dataclass
class NewCommentsBoost:
    """A post back for its new comments gets ``friend`` engagement points when a friend of the
    user commented, ``other`` when only others did: friends' comments weigh most."""

    friend: float
    other: float
    name: str = "rerank:new_comments"
    slot: Slot = Slot.RERANK

    def __call__(self, ctx: FeedContext) -> None:
        revived = ctx.user.new_comments
        if not revived:
            return
        c = ctx.candidates
        points = np.array([0.0 if int(p) not in revived else self.friend
                           if np.isin(revived[int(p)], ctx.user.friends).any() else self.other
                           for p in c.post_ids.tolist()])
        c.score = _ordering_score(ctx) + points
        ctx.candidates = c.take(np.argsort(-c.score, kind="stable"))


@dataclass
class InterestBoost:
    """Adds ``weight`` x the user's stated share of interest in the post's topic."""

    corpus: PostCorpus
    weight: float
    name: str = "rerank:interest_boost"
    slot: Slot = Slot.RERANK

    def __call__(self, ctx: FeedContext) -> None:
        interest = np.asarray(ctx.user.features.get("user_engagement__topic_interest") or [], np.float64)
        topics = self.corpus.topic_ids[ctx.candidates.rows]
        inside = (topics >= 0) & (topics < len(interest))
        boost = np.where(inside, interest[np.where(inside, topics, 0)] if len(interest) else 0.0, 0.0)
        ctx.candidates.score = _ordering_score(ctx) + self.weight * boost
        ctx.candidates = ctx.candidates.take(np.argsort(-ctx.candidates.score, kind="stable"))


@dataclass
class AuthorDiversity:
    """Greedy: each further post of an author already placed counts ``decay`` times less
    (scores shifted to be positive first, so the penalty always lowers them)."""

    corpus: PostCorpus
    decay: float
    name: str = "rerank:author_diversity"
    slot: Slot = Slot.RERANK

    def __call__(self, ctx: FeedContext) -> None:
        n = _leading(ctx)
        if n < 2:
            return
        score = _ordering_score(ctx)[:n]
        score = score - score.min() + 1e-6
        authors = self.corpus.author_ids[ctx.candidates.rows[:n]]
        placed = np.zeros(n, np.int64)  # per candidate: posts of its author already placed

        def count(pick: int) -> None:
            placed[:] += authors == authors[pick]

        _reorder(ctx, _greedy(n, ctx.request.limit, lambda: score * self.decay ** placed, count))


@dataclass
class TopicMMR:
    """Maximal marginal relevance: ``lam`` x relevance - (1 - lam) x the highest similarity
    (two-tower post vectors) to a post already placed."""

    retrieval: RetrievalModel  # its post vectors: per corpus row, L2-normalised (read per request: they grow)
    lam: float
    name: str = "rerank:topic_mmr"
    slot: Slot = Slot.RERANK

    def __call__(self, ctx: FeedContext) -> None:
        n = _leading(ctx)
        if n < 2:
            return
        score = _ordering_score(ctx)[:n]
        spread = score.max() - score.min()
        relevance = (score - score.min()) / spread if spread > 0 else np.zeros(n)
        vectors = self.retrieval.post_vectors[ctx.candidates.rows[:n]]
        similarity = vectors @ vectors.T
        closest = np.full(n, -1.0)  # per candidate: its highest similarity to a post placed

        def note(pick: int) -> None:
            np.maximum(closest, similarity[pick], out=closest)

        value = lambda: self.lam * relevance - (1 - self.lam) * np.maximum(closest, 0)  # noqa: E731
        _reorder(ctx, _greedy(n, ctx.request.limit, value, note))


@dataclass
class Exploration:
    """Fills each position, in order, with the best remaining candidate or a sampled one:
    ``epsilon``-greedy (with probability epsilon a uniform draw among the leading ones), or
    ``softmax`` (a draw in proportion to exp(score / temperature)). Each shown post records
    the probability it had of being chosen for its position given those above it."""

    kind: str  # "epsilon" | "softmax"
    epsilon: float
    temperature: float
    seed: int | None = None
    name: str = "rerank:exploration"
    slot: Slot = Slot.RERANK

    def __call__(self, ctx: FeedContext) -> None:
        n = _leading(ctx)
        if n == 0:
            return
        rng = np.random.default_rng(self.seed)
        score = _ordering_score(ctx)[:n]
        remaining = np.ones(n, bool)
        order, probability = [], []
        for _ in range(min(n, ctx.request.limit)):
            live = np.flatnonzero(remaining)
            if self.kind == "softmax":
                logits = score[live] / self.temperature
                p = np.exp(logits - logits.max())
                p /= p.sum()
            else:
                p = np.full(len(live), self.epsilon / len(live))
                p[np.argmax(score[live])] += 1.0 - self.epsilon
            choice = int(rng.choice(len(live), p=p))
            order.append(live[choice])
            probability.append(p[choice])
            remaining[live[choice]] = False
        head = np.array(order)
        shown_p = ctx.candidates.show_probability.copy()
        shown_p[head] = probability
        ctx.candidates.show_probability = shown_p
        _reorder(ctx, head)


@dataclass
class Truncate:
    """The page: the first ``limit`` candidates (ordered by score if no re-ranker ran)."""

    name: str = "truncate"
    slot: Slot = Slot.SELECT

    def __call__(self, ctx: FeedContext) -> None:
        ctx.candidates = ctx.candidates.take(np.arange(min(len(ctx.candidates), ctx.request.limit)))
