"""What a serving deployment needs to open the feed service: one pydantic object, passed to
every replica (and written into the Serve config by `newsfeed serve build`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from newsfeed.feed.corpus import WINDOW_DAYS

MODES = ("fused", "chained")


class ServingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    home: str = Field(description="the platform's home folder (data, feature store, registry)")
    data_dir: str | None = Field(None, description="default <home>/data")
    store: str | None = Field(None, description="feature store: embedded | production")
    registry: str | None = Field(None, description="model registry: embedded | production")
    state: Literal["embedded", "production"] | None = Field(
        None, description="user state and the experiment: embedded (files under the home) | production (Redis at "
                          "NEWSFEED_REDIS)")
    clock: Literal["auto", "wall", "replayed"] | None = Field(
        None, description="request time: wall (production) | replayed (simulated data) | auto: replayed when the "
                          "data ended over a day ago; default NEWSFEED_CLOCK, else auto")
    window_days: float = Field(WINDOW_DAYS, gt=0, description="posts older than this leave each replica's corpus and "
                                                        "indexes (at least every arm's freshness horizon)")
    mode: Literal["fused", "chained"] = "fused"
    replicas: int = Field(1, ge=1, description="replicas of each deployment (the floor, when autoscaling)")
    max_replicas: int | None = Field(None, ge=1, description="autoscale each deployment up to this many replicas "
                                                             "on ongoing requests; None: a fixed count")
    replica_cpus: float = Field(0.5, gt=0, description="CPUs each replica reserves (fractions on small machines)")
    target_ongoing_requests: float = Field(4.0, gt=0, description="autoscaling's target of requests per replica")
    replicate_posts: int = Field(1, ge=1, description="load benchmarks only: serve every post this many times over "
                                                      "under new ids, to measure a larger corpus")

    @model_validator(mode="after")
    def _bounds(self) -> "ServingSettings":
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise ValueError(f"--max-replicas ({self.max_replicas}) must be at least --replicas ({self.replicas})")
        return self

    def scaling(self) -> dict:
        """A deployment's replica options: a fixed count, or Ray Serve autoscaling between
        ``replicas`` and ``max_replicas``."""
        if self.max_replicas is None:
            return {"num_replicas": self.replicas}
        return {"autoscaling_config": {"min_replicas": self.replicas, "max_replicas": self.max_replicas,
                                       "target_ongoing_requests": self.target_ongoing_requests}}
