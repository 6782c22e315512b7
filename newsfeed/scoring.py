"""The engagement score: sum of weight x P(reaction), with the weights as data.

The default table is ``newsfeed/engagement_weights.yaml``; a registered ranker
stores the table it was evaluated with, and an experiment arm may override it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import yaml

from newsfeed.errors import NewsfeedError
from newsfeed.schema import REACTIONS

DEFAULT_WEIGHTS_FILE = Path(__file__).with_name("engagement_weights.yaml")


class WeightsError(NewsfeedError, ValueError):
    """A weight table that names unknown reactions or holds non-numbers."""


def validate(weights: Mapping[str, float]) -> dict[str, float]:
    unknown = sorted(set(weights) - set(REACTIONS))
    if unknown:
        raise WeightsError(f"unknown reactions {unknown}: weights may name {', '.join(REACTIONS)}")
    out: dict[str, float] = {}
    for reaction, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise WeightsError(f"weight of {reaction!r} must be a finite number, got {value!r}")
        out[reaction] = float(value)
    return out


def load_weights(path: Path | str | None = None, overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """The weight table from ``path`` (default: the shipped table), then ``overrides`` on top."""
    path = Path(path) if path else DEFAULT_WEIGHTS_FILE
    try:
        table = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise WeightsError(f"{path}: cannot read the weight table: {err}") from None
    if not isinstance(table, dict):
        raise WeightsError(f"{path}: expected a mapping of reaction to weight")
    return validate({**table, **(overrides or {})})


def dump_weights(weights: Mapping[str, float]) -> str:
    return yaml.safe_dump(dict(weights), sort_keys=False)


def engagement_score(probabilities: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Sum of weight x probability; ``probabilities`` is keyed by reaction (``click``) or ``p_click``."""
    total = None
    for reaction, w in weights.items():
        p = probabilities[reaction] if reaction in probabilities else probabilities[f"p_{reaction}"]
        term = w * np.asarray(p, np.float64)
        total = term if total is None else total + term
    if total is None:
        raise WeightsError("empty weight table")
    return total


def realised_engagement(labels: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """The same sum over observed 0/1 labels: what an impression actually earned."""
    return engagement_score({r: labels[r] for r in weights}, weights)
