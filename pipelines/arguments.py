"""Checks on the pipeline's parameters, made before a run or a submission does any work.

Only the values given are checked; the defaults live once, in the pipeline's signature
(``pipelines.training_pipeline``). A bad value is one clear error naming the option,
where it would otherwise surface minutes later in the step that reads it.
"""

from __future__ import annotations

from typing import get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from newsfeed.errors import NewsfeedError, option_message

UNIT = dict(ge=0, le=1)
OPTIONS = {"feature_store": "--store"}
"""Parameters whose command-line option has another name."""


class PipelineArgumentError(NewsfeedError, ValueError):
    """A pipeline parameter out of its range; the message names the option."""


def _store_kinds():
    from newsfeed.features.store import STORE_KINDS

    return STORE_KINDS


def _registry_kinds():
    from newsfeed.registry import REGISTRY_KINDS

    return REGISTRY_KINDS


def _trainers():
    from newsfeed.models.distributed import TRAINERS

    return TRAINERS


def _architectures():
    from newsfeed.models.ranker import RankerConfig

    return get_args(RankerConfig.model_fields["architecture"].annotation)


NAMED_CHOICES = {"feature_store": _store_kinds, "registry": _registry_kinds, "trainer": _trainers,
                 "ranker_architecture": _architectures}
"""Parameters that name one of a set, and where each set is declared (imported when checked)."""


class PipelineArguments(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    home: str | None = None
    data_dir: str | None = None
    feature_store: str | None = None
    registry: str | None = None
    scale: float | None = Field(None, gt=0, le=100, description="1.0: 2,000 users")
    seed: int | None = Field(None, ge=0)
    max_bad_rate: float | None = Field(None, **UNIT)
    epochs: int | None = Field(None, ge=1)
    two_tower_learning_rate: float | None = Field(None, gt=0, le=1)
    ranker_learning_rate: float | None = Field(None, gt=0, le=1)
    ranker_architecture: str | None = None
    ranker_from: str | None = None
    trainer: str | None = None
    ray_workers: int | None = Field(None, ge=1)
    ray_address: str | None = None
    gate_tolerance: float | None = Field(None, **UNIT)
    guardrail_tolerance: float | None = Field(None, **UNIT)
    calibration_tolerance: float | None = Field(None, **UNIT)
    holdout_days: float | None = Field(None, ge=0, le=365)
    prerank_users: int | None = Field(None, ge=0, le=100_000)

    @field_validator(*NAMED_CHOICES)
    @classmethod
    def _one_of(cls, value, info: ValidationInfo):
        choices = NAMED_CHOICES[info.field_name]()
        if value is not None and value not in choices:
            raise ValueError(f"choose one of {', '.join(choices)}")
        return value


    @field_validator("ranker_from")
    @classmethod
    def _registered_ref(cls, value):
        from newsfeed.registry import ALIASES

        if value and value not in ALIASES and not (value.isdigit() and len(value) <= 9 and int(value) > 0):
            raise ValueError(f"a registered ranker: {', '.join(ALIASES)} or a version number (empty: train afresh)")
        return value


def check(arguments: dict) -> dict:
    """``arguments`` (parameter -> value, None left out), or PipelineArgumentError naming the bad one."""
    try:
        PipelineArguments(**arguments)
    except ValidationError as err:
        raise PipelineArgumentError(option_message(err, OPTIONS)) from None
    return arguments
