"""What a serving deployment needs to open the feed service: one pydantic object, passed to
every replica (and written into the Serve config by `newsfeed serve build`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MODES = ("fused", "chained")


class ServingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    home: str = Field(description="the platform's home folder (data, feature store, registry)")
    data_dir: str | None = Field(None, description="default <home>/data")
    store: str | None = Field(None, description="feature store: embedded | production")
    registry: str | None = Field(None, description="model registry: embedded | production")
    mode: Literal["fused", "chained"] = "fused"
    replicas: int = Field(1, ge=1, description="replicas of each deployment")
    replica_cpus: float = Field(0.5, gt=0, description="CPUs each replica reserves (fractions on small machines)")
    replicate_posts: int = Field(1, ge=1, description="load benchmarks only: serve every post this many times over "
                                                      "under new ids, to measure a larger corpus")
