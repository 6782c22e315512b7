"""From merged candidates to scored ones: the user's online features (one read), backfill
when the sources came up short, pre-ranking (two-tower or distilled), then the multi-task
ranker's engagement score under the arm's weight table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from newsfeed.feed.context import FeedContext
from newsfeed.feed.corpus import PostCorpus
from newsfeed.feed.models import RankingModel, RetrievalModel
from newsfeed.feed.ranker_inputs import Affinity, pair_values
from newsfeed.feed.stages import Slot
from newsfeed.scoring import engagement_score

USER_FEATURE_TIMEOUT_MS = 50.0


@dataclass
class UserFeatures:
    """One online-store read of the user's features. Late or failing: the user is ranked
    with missing features (what a brand-new user has), and the response says so."""

    read: Callable[[int], dict | None]  # user id -> {view__feature: value}, None for an unknown user
    timeout_ms: float = USER_FEATURE_TIMEOUT_MS
    name: str = "user_features"
    slot: Slot = Slot.HYDRATE

    def load(self, ctx: FeedContext):
        return self.read(ctx.user.user_id)

    def apply(self, ctx: FeedContext, value) -> None:
        if value is None:
            ctx.user.known = False
        else:
            ctx.user.features = value
        if not ctx.user.known:
            ctx.degrade("cold_start", "unknown user: fresh and popular posts")

    def fallback(self, ctx: FeedContext) -> None:
        ctx.user.features = {}


@dataclass
class Backfill:
    """When filters left fewer than ``minimum`` candidates, adds the most popular posts of the
    whole corpus that pass the same filters."""

    corpus: PostCorpus
    filters: list
    minimum: int
    name: str = "backfill"
    slot: Slot = Slot.BACKFILL

    def __call__(self, ctx: FeedContext) -> None:
        if len(ctx.candidates) >= self.minimum:
            return
        order = np.argsort(-self.corpus.popularity, kind="stable")
        pool = FeedContext(ctx.request, ctx.user)
        pool.candidates.extend(order, self.corpus.post_ids[order], "popular")
        for stage in self.filters:
            stage(pool)
        before = len(ctx.candidates)
        extra = pool.candidates.take(~np.isin(pool.candidates.post_ids, ctx.candidates.post_ids))
        need = self.minimum - before
        ctx.candidates.extend(extra.rows[:need], extra.post_ids[:need], "popular")
        ctx.degrade(self.name, f"only {before} candidates after filtering; {len(ctx.candidates) - before} popular added")


@dataclass
class PreRank:
    """Two-tower similarity for every candidate; when there are more than the ranker's
    ``budget``, only the best ``budget`` go on: best by that similarity, or, given the ranker
    stage (``rank``), by the pre-ranker distilled from its ranker (``newsfeed.feed.distilled``;
    a ranker version without one is cut by similarity, and the response says so)."""

    retrieval: RetrievalModel
    budget: int
    rank: Rank | None = None
    name: str = "prerank"
    slot: Slot = Slot.PRERANK

    def __call__(self, ctx: FeedContext) -> None:
        if not len(ctx.candidates):
            return
        if ctx.user.embedding is None:
            ctx.user.embedding = self.retrieval.user_vector(ctx.user.user_id, ctx.user.features)
        scores = self.retrieval.post_vectors[ctx.candidates.rows] @ ctx.user.embedding
        ctx.candidates.retrieval_score = scores.astype(np.float32)
        if len(scores) <= self.budget:
            return
        if self.rank is not None:
            distilled = self.rank.distilled_scores(ctx, ctx.candidates.rows)
            if distilled is None:
                ranking = self.rank.ranking
                missing = (f"cannot load its distilled pre-ranker ({ranking.student_error})" if ranking.student_error
                           else "has no distilled pre-ranker")
                ctx.degrade(self.name, f"ranker v{ranking.version} {missing}: cut by two-tower similarity")
            else:
                scores = distilled
        keep = np.argpartition(-scores, self.budget - 1)[: self.budget]
        ctx.candidates = ctx.candidates.take(np.sort(keep))


@dataclass
class Rank:
    corpus: PostCorpus
    ranking: RankingModel
    weights: dict[str, float]
    affinity: Callable[[int], Affinity | None]
    name: str = "rank"
    slot: Slot = Slot.RANK

    def __call__(self, ctx: FeedContext) -> None:
        c = ctx.candidates
        if not len(c):
            return
        c.score = self.scores(ctx, c.rows)
        ctx.candidates = c.take(np.argsort(-c.score, kind="stable"))

    def pair(self, ctx: FeedContext, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The user-post pair inputs of corpus ``rows`` for this request (``pair_values``)."""
        mentioned = np.isin(rows, self.corpus.mentioned.get(ctx.user.user_id, np.zeros(0, np.int64)))
        return pair_values(ctx.request.now_unix, ctx.user.user_id, ctx.user.features, self.affinity(ctx.user.user_id),
                           self.corpus.author_ids[rows], self.corpus.created_unix[rows], self.corpus.topic_ids[rows],
                           mentioned)

    def distilled_scores(self, ctx: FeedContext, rows: np.ndarray) -> np.ndarray | None:
        """The distilled pre-ranker's scores of corpus ``rows`` (None: this version has none)."""
        inputs = self.ranking.prepared
        if inputs.prerank is None:
            return None
        pair = inputs.fast.pair_matrix(self.pair(ctx, rows), len(rows))
        return inputs.prerank.scores(rows, inputs.fast.user_part(ctx.user.features), pair)

    def scores(self, ctx: FeedContext, rows: np.ndarray) -> np.ndarray:
        """The engagement score of corpus ``rows`` for this request's user, in their order."""
        heads = self.ranking.heads(rows, ctx.user.features, self.pair(ctx, rows))
        return engagement_score(heads, self.weights)


@dataclass
class PopularityRank:
    """The most-popular baseline: candidates by their engagement so far (the platform's weight
    table over the live counters), no model."""

    corpus: PostCorpus
    name: str = "rank:most_popular"
    slot: Slot = Slot.RANK

    def __call__(self, ctx: FeedContext) -> None:
        c = ctx.candidates
        c.score = self.corpus.popularity[c.rows].astype(np.float32)
        ctx.candidates = c.take(np.argsort(-c.score, kind="stable"))


@dataclass
class RandomRank:
    """The random baseline: candidates in a random order, drawn anew for every request."""

    seed: int | None = None
    name: str = "rank:random"
    slot: Slot = Slot.RANK

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)

    def __call__(self, ctx: FeedContext) -> None:
        c = ctx.candidates
        c.score = self.rng.random(len(c)).astype(np.float32)
        ctx.candidates = c.take(np.argsort(-c.score, kind="stable"))
