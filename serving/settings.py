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
    clock: Literal["auto", "wall", "replayed", "simulated"] | None = Field(
        None, description="request time: wall (production) | replayed (simulated data) | simulated (set by a simulator) | auto: replayed when the "
                          "data ended over a day ago; default NEWSFEED_CLOCK, else auto")
    window_days: float = Field(WINDOW_DAYS, gt=0, description="posts older than this leave each replica's corpus and "
                                                        "indexes (at least every arm's freshness horizon)")
    mode: Literal["fused", "chained"] = "fused"
    replicas: int = Field(1, ge=1, description="replicas of each deployment (the floor, when autoscaling)")
    max_replicas: int | None = Field(None, ge=1, description="autoscale each deployment up to this many replicas "
                                                             "on ongoing requests; None: a fixed count")
    replica_cpus: float = Field(0.5, gt=0, description="CPUs each replica reserves (fractions on small machines)")
    target_ongoing_requests: float = Field(4.0, gt=0, description="autoscaling's target of requests per replica")
    max_ongoing_requests: int | None = Field(None, ge=1, description="requests a replica runs at once (more wait "
                                                                  "in the router); default: 1 fused, Ray's chained")
    replicate_posts: int = Field(1, ge=1, description="load benchmarks only: serve every post this many times over "
                                                      "under new ids, to measure a larger corpus")

    @model_validator(mode="after")
    def _bounds(self) -> "ServingSettings":
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise ValueError(f"--max-replicas ({self.max_replicas}) must be at least --replicas ({self.replicas})")
        return self

    def deployment_options(self) -> dict:
        """Every deployment's options: replicas (``scaling``), CPUs, concurrency. A fused replica
        runs one request at a time by default: requests sharing its fraction of a core only
        slow each other (8 clients: 88 req/s and p99 174 ms at 1, 79 and 214 ms at Ray's 5;
        benchmarks/serving_load.py). A chained ingress waits on its hops: Ray's default."""
        limit = self.max_ongoing_requests or (1 if self.mode == "fused" else None)
        return {**self.scaling(), "ray_actor_options": {"num_cpus": self.replica_cpus},
                **({"max_ongoing_requests": limit} if limit else {})}

    def scaling(self) -> dict:
        """A deployment's replica options: a fixed count, or Ray Serve autoscaling between
        ``replicas`` and ``max_replicas``."""
        if self.max_replicas is None:
            return {"num_replicas": self.replicas}
        return {"autoscaling_config": {"min_replicas": self.replicas, "max_replicas": self.max_replicas,
                                       "target_ongoing_requests": self.target_ongoing_requests}}
