"""MLflow ``pyfunc`` faces of the models, so any MLflow consumer (serving, BentoML, a
notebook) can load a registered version by alias and call ``predict`` on a feature frame."""

from __future__ import annotations

import numpy as np
import pandas as pd
import mlflow.pyfunc

MODEL_DIR = "model_dir"


def ranker_signature():
    """Declares ``params`` (MLflow ignores undeclared ones): a partial weight table, checked by reaction."""
    from mlflow.models import ModelSignature
    from mlflow.types import DataType
    from mlflow.types.schema import Object, ParamSchema, ParamSpec, Property

    from newsfeed.schema import REACTIONS

    weights = Object([Property(r, DataType.double, required=False) for r in REACTIONS])
    return ModelSignature(inputs=None, params=ParamSchema([ParamSpec("weights", weights, {})]))


def two_tower_signature():
    from mlflow.models import ModelSignature
    from mlflow.types import DataType
    from mlflow.types.schema import ParamSchema, ParamSpec

    return ModelSignature(inputs=None, params=ParamSchema([ParamSpec("tower", DataType.string, "post")]))


class RankerPyfunc(mlflow.pyfunc.PythonModel):
    """Feature rows (the ``ranker`` feature service's columns plus user_id, post_id,
    author_id) to P(reaction) per head, expected dwell and the engagement score.
    ``params={"weights": {...}}`` overrides the registered weight table (an experiment arm)."""

    def load_context(self, context) -> None:
        from newsfeed.models import saved

        self.model = saved.load(context.artifacts[MODEL_DIR])
        self.weights = saved.load_weights(context.artifacts[MODEL_DIR])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from newsfeed.scoring import engagement_score, validate

        weights = {**self.weights, **validate((params or {}).get("weights") or {})}
        out = self.model.predict(model_input)
        out["engagement"] = engagement_score(out, weights)
        return out


class TwoTowerPyfunc(mlflow.pyfunc.PythonModel):
    """Feature rows to the vectors the index holds (posts, by default) or searches with (users,
    ``params={"tower": "user"}``): their inner product is the model's score."""

    def load_context(self, context) -> None:
        from newsfeed.models import saved

        self.model = saved.load(context.artifacts[MODEL_DIR])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        tower = (params or {}).get("tower", "post")
        if tower not in ("post", "user"):
            raise ValueError(f"tower must be 'post' or 'user', got {tower!r}")
        return self.model.embed_users(model_input) if tower == "user" else self.model.embed_posts(model_input)
