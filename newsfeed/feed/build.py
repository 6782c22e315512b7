"""The one wiring of the feed pipeline: an arm's configuration to its list of stages."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from newsfeed.feed.arms import Arm
from newsfeed.feed.corpus import PostCorpus
from newsfeed.feed.filters import BlockedAuthorsFilter, HiddenFilter, OwnPostsFilter, SeenFilter
from newsfeed.feed.models import RankingModel, RetrievalModel
from newsfeed.feed.ranker_inputs import Affinity
from newsfeed.feed.ranking import Backfill, PopularityRank, PreRank, RandomRank, Rank, UserFeatures
from newsfeed.feed.reranking import (AuthorDiversity, Exploration, Freshness, InterestBoost, NewCommentsBoost, Order,
                                     TopicMMR, Truncate)
from newsfeed.feed.sources import AnnSource, FreshSource, InNetworkSource, NewCommentsSource, PopularSource


@dataclass
class Resources:
    """What every arm shares: the replica's posts, and how to read a user."""

    corpus: PostCorpus  # its popularity: per row, under the platform's weight table
    read_user: Callable[[int], dict | None]  # online features of one user; None: unknown
    affinity: Callable[[int], Affinity | None]  # the user's rows of user-author affinity


def build_pipeline(arm: Arm, retrieval: RetrievalModel, ranking: RankingModel, res: Resources,
                   seed: int | None = None) -> list:
    s, r, corpus = arm.sources, arm.reranking, res.corpus
    filters = [SeenFilter(), HiddenFilter(), BlockedAuthorsFilter(corpus), OwnPostsFilter(corpus)]
    stages = [
        UserFeatures(res.read_user),
        AnnSource(corpus, retrieval, s.ann, s.horizon_days),
        InNetworkSource(corpus, s.in_network, s.horizon_days),
        FreshSource(corpus, s.fresh, s.horizon_days),
        PopularSource(corpus, s.popular, s.popular_horizon_days),
        NewCommentsSource(corpus, s.new_comments),
        *filters,
        Backfill(corpus, filters, s.minimum),
        *scorers(arm, retrieval, ranking, res, seed),
        Order(),
        *([NewCommentsBoost(r.new_comments_friend, r.new_comments_other)]
          if r.new_comments_friend or r.new_comments_other else []),
        *([Freshness(corpus, r.freshness, r.freshness_half_life_hours)] if r.freshness else []),
        *([InterestBoost(corpus, r.interest_boost)] if r.interest_boost else []),
        *([AuthorDiversity(corpus, r.author_diversity)] if r.author_diversity < 1 else []),
        *([TopicMMR(retrieval, r.topic_mmr)] if r.topic_mmr < 1 else []),
        *([Exploration(r.exploration, r.epsilon, r.temperature, seed)] if r.exploration != "none" else []),
        Truncate(),
    ]
    # Chained mode cuts the list into slot ranges (stages.Group): a stage out of order would
    # run in the wrong deployment.
    if any(a.slot > b.slot for a, b in zip(stages, stages[1:])):
        raise ValueError(f"stages out of slot order: {[(x.name, x.slot.name) for x in stages]}")
    return stages


def scorers(arm: Arm, retrieval: RetrievalModel, ranking: RankingModel, res: Resources, seed: int | None) -> list:
    """What orders an arm's candidates: pre-ranking and the ranker, or a baseline's one stage."""
    if arm.policy == "most_popular":
        return [PopularityRank(res.corpus)]
    if arm.policy == "random":
        return [RandomRank(seed)]
    rank = Rank(res.corpus, ranking, {**ranking.weights, **arm.weights}, res.affinity)
    return [PreRank(retrieval, arm.sources.ranker_budget, rank if arm.sources.prerank == "distilled" else None), rank]
