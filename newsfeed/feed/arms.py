"""Experiment arms as data: which models, which weights, which sources and re-rankers.

An experiment names its arms with traffic shares (percent, summing to 100) and an optional
shadow arm (share 0: scored for every request, never shown). A user's arm follows from a
stable hash of (experiment salt, user id): sticky, the same in every process and replica,
and reshuffled only by a new salt.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from newsfeed.index import FRESHNESS_HORIZON_DAYS
from newsfeed.scoring import validate as validate_weights

BUCKETS = 10_000
"""Assignment resolution: a share is honoured to 0.01%."""


class Sources(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ann: int = Field(300, ge=0, description="posts from the two-tower index")
    in_network: int = Field(100, ge=0, description="friends' posts")
    fresh: int = Field(100, ge=0, description="newest posts")
    popular: int = Field(100, ge=0, description="most engaging posts so far")
    new_comments: int = Field(50, ge=0, description="posts the user saw that others commented on since")
    horizon_days: float = Field(FRESHNESS_HORIZON_DAYS, gt=0, description="oldest post the other sources offer")
    popular_horizon_days: float = Field(
        7.0, gt=0, description="oldest post the popular source offers: a post still engaging after days is still "
                               "worth ranking (7, not 3: chosen on seed 7's served feed, docs/models.md)")
    ranker_budget: int = Field(
        100, ge=1, description="most candidates the ranker scores (pre-ranking cuts): 100, not 500, since the "
                               "distilled cut keeps the feed's value at a fifth of the ranker's work (seed 7, "
                               "docs/serving.md)")
    prerank: Literal["distilled", "two_tower"] = Field(
        "distilled", description="what cuts the candidates to ranker_budget: the pre-ranker distilled from the arm's "
                                 "ranker (two-tower similarity where its version has none), or two-tower similarity")
    minimum: int = Field(60, ge=0, description="fewer after filtering: backfill with popular posts")


class Reranking(BaseModel):
    model_config = ConfigDict(extra="forbid")
    author_diversity: float = Field(0.5, ge=0, le=1, description="each further post of an author counts x this; 1: off")
    topic_mmr: float = Field(1.0, ge=0, le=1, description="MMR lambda (relevance share); 1: off")
    freshness: float = Field(0.0, description="engagement points for a brand-new post; 0: off")
    freshness_half_life_hours: float = Field(12.0, gt=0)
    interest_boost: float = Field(0.0, description="engagement points x stated interest in the topic; 0: off")
    new_comments_friend: float = Field(10.0, description="engagement points for a seen post a friend commented on since")
    new_comments_other: float = Field(2.0, description="the same, when only others commented")
    exploration: Literal["none", "epsilon", "softmax"] = "none"
    epsilon: float = Field(0.1, ge=0, le=1)
    temperature: float = Field(1.0, gt=0)


class Arm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")
    share: float = Field(ge=0, le=100, description="percent of users")
    two_tower: str = Field("champion", description="alias or version of newsfeed-two-tower")
    ranker: str = Field("champion", description="alias or version of newsfeed-ranker")
    policy: Literal["model", "most_popular", "random"] = Field(
        "model", description="what orders the candidates: the ranker (model), or a baseline that needs none: engagement "
                             "so far (most_popular), a random order (random)")
    interleave: tuple[str, str] | None = Field(
        None, description="two other arms whose feeds this arm merges by team draft, each post credited to the arm "
                          "that picked it (their own settings apply; this arm's models and switches do not)")
    weights: dict[str, float] = Field(default_factory=dict, description="overrides of the ranker's weight table")
    sources: Sources = Field(default_factory=Sources)
    reranking: Reranking = Field(default_factory=Reranking)

    @field_validator("weights")
    @classmethod
    def _known_reactions(cls, value: dict[str, float]) -> dict[str, float]:
        return validate_weights(value)


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "feed"
    salt: str = Field("feed-1", min_length=1, description="change it to reshuffle users")
    version: int = Field(0, ge=0, description="raised by every change")
    arms: list[Arm] = Field(default_factory=lambda: [Arm(name="champion", share=100)], min_length=1)
    shadow: str | None = Field(None, description="an arm of share 0 scored beside every request, never shown")

    @model_validator(mode="after")
    def _consistent(self) -> "Experiment":
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must be unique, got {names}")
        total = sum(a.share for a in self.arms)
        if abs(total - 100) > 1e-6:
            raise ValueError(f"arm shares must sum to 100, got {total:g} ({', '.join(f'{a.name}={a.share:g}' for a in self.arms)})")
        for arm in self.arms:
            if arm.interleave is None:
                continue
            teams = [self.arm(name) for name in arm.interleave]
            if arm.name in arm.interleave or any(t is None or t.interleave for t in teams) or len(set(arm.interleave)) < 2:
                raise ValueError(f"arm {arm.name!r} interleaves {list(arm.interleave)}: two other arms of this "
                                 "experiment that do not interleave themselves")
        if self.shadow is not None:
            shadow = self.arm(self.shadow)
            if shadow is None or shadow.share != 0:
                raise ValueError(f"shadow {self.shadow!r} must name an arm with share 0")
        return self

    def arm(self, name: str) -> Arm | None:
        return next((a for a in self.arms if a.name == name), None)

    def assign(self, user_id: int) -> Arm:
        """The user's arm: their hash bucket against the cumulative shares."""
        point = bucket(self.salt, user_id)
        edge = 0.0
        for arm in self.arms:
            edge += arm.share / 100 * BUCKETS
            if point < edge:
                return arm
        return next(a for a in reversed(self.arms) if a.share > 0)

    def with_shares(self, shares: dict[str, float]) -> "Experiment":
        """A new version with these arms' shares (arms not named keep theirs)."""
        unknown = sorted(set(shares) - {a.name for a in self.arms})
        if unknown:
            raise ValueError(f"unknown arms {unknown}; the experiment has {[a.name for a in self.arms]}")
        arms = [a.model_copy(update={"share": shares.get(a.name, a.share)}) for a in self.arms]
        return Experiment.model_validate({**self.model_dump(), "arms": [a.model_dump() for a in arms],
                                          "version": self.version + 1})


def bucket(salt: str, user_id: int) -> int:
    """A stable bucket in [0, BUCKETS): not Python's ``hash()``, which is salted per process."""
    digest = hashlib.blake2b(f"{salt}:{int(user_id)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS
