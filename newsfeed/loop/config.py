"""What a loop run simulates and the schedule of its jobs: settings as validated data (light
to import: the command line shows their defaults in its help)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

BASELINES = ("most_popular", "random")
"""Arms the loop can run without a model: ``Arm.policy`` of the same name."""


class LoopConfig(BaseModel):
    """What the loop simulates, and the schedule of its jobs (simulated hours)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    days: float = Field(7.0, gt=0, le=60, description="simulated days")
    step_hours: float = Field(1.0, gt=0, le=24, description="the clock's step")
    drift_day: float | None = Field(3.0, ge=0, description="loop day interests drift; None: never")
    drift_strength: float = Field(1.0, ge=0, le=1, description="how far interests move towards the trending topics")
    arms: list[str] = Field(default_factory=list, description="arms side by side, equal shares: the experiment's "
                                                              "or a baseline (most_popular, random); []: as served")
    interleave: tuple[str, str] | None = Field(None, description="two of the arms also interleaved (team draft) in "
                                                                 "an arm of their own, as many users as each")
    retrain: bool = Field(True, description="run the drift check, retrain, canary and verdict on schedule")
    retrain_epochs: int | None = Field(None, ge=1, description="the retrain's epochs, unless a policy says "
                                                               "(None: the pipeline's default)")
    drift_every_hours: float = Field(24.0, gt=0, description="how often the drift check runs")
    reference_days: float = Field(2.0, gt=0, description="the drift check compares the last day with the days "
                                                         "before it: the first check waits for these and one more")
    decide_every_hours: float = Field(24.0, gt=0, description="how often a running canary is judged")
    canary_share: float = Field(50.0, gt=0, lt=100, description="percent of the control arm's users a challenger "
                                                                "takes (the other arms keep theirs)")
    feed_size: int = Field(10, ge=1, le=50, description="posts per page")
    next_page: float = Field(0.3, ge=0, le=1, description="chance a user asks for one more page")
    max_pages: int = Field(3, ge=1, le=10)
    clients: int = Field(4, ge=1, le=64, description="sessions in flight at once")
    seed: int = 0

    @field_validator("arms")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"arms must be distinct, got {value}")
        return value

    @model_validator(mode="after")
    def _interleaved(self) -> "LoopConfig":
        if self.interleave and (len(set(self.interleave)) != 2 or not set(self.interleave) <= set(self.arms)):
            raise ValueError(f"interleave: two different arms of --arms {self.arms}, got {list(self.interleave)}")
        return self

    @property
    def interleaved_arm(self) -> str | None:
        return "-vs-".join(self.interleave) if self.interleave else None
