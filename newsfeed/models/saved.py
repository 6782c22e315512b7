"""A trained model as a folder: weights (``model.pt``), architecture and encoders
(``model.json``), and for the ranker its engagement weight table. What MLflow stores
and what serving and the Bento load, so a model rebuilt anywhere scores the same."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from newsfeed.models.encoding import Encoder
from newsfeed.models.ranker import MultiTaskRanker, RankerConfig
from newsfeed.models.two_tower import TwoTower, TwoTowerConfig
from newsfeed.scoring import dump_weights, validate

WEIGHTS_FILE = "engagement_weights.yaml"


def save(model: TwoTower | MultiTaskRanker, folder: Path, weights: dict[str, float] | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(model, TwoTower):
        spec = {"kind": "two_tower", "config": model.config.model_dump(),
                "user_encoder": model.user_encoder.to_dict(), "post_encoder": model.post_encoder.to_dict()}
    else:
        spec = {"kind": "ranker", "config": model.config.model_dump(), "encoder": model.encoder.to_dict()}
        (folder / WEIGHTS_FILE).write_text(dump_weights(weights or {}))
    (folder / "model.json").write_text(json.dumps(spec, indent=1))
    torch.save(model.state_dict(), folder / "model.pt")
    return folder


def load(folder: Path) -> TwoTower | MultiTaskRanker:
    folder = Path(folder)
    spec = json.loads((folder / "model.json").read_text())
    # A model saved before a setting existed was built without it: its absence means off.
    if spec["kind"] == "two_tower":
        config = TwoTowerConfig(**{"post_bias": False, "recency": False, **spec["config"]})
        model = TwoTower(Encoder.from_dict(spec["user_encoder"]), Encoder.from_dict(spec["post_encoder"]), config)
    else:
        config = RankerConfig(**{"calibration": "none", "nested": {}, **spec["config"]})
        model = MultiTaskRanker(Encoder.from_dict(spec["encoder"]), config)
    model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
    model.eval()
    return model


def load_weights(folder: Path) -> dict[str, float]:
    """The engagement weight table a ranker was registered with."""
    return validate(yaml.safe_load((Path(folder) / WEIGHTS_FILE).read_text()) or {})
