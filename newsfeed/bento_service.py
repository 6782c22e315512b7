"""The BentoML service inside the ranker's Bento: a standalone scoring endpoint.

POST /score with ``{"rows": [feature row, ...], "weights": {"share": 40}}`` returns, per
row, P(reaction) for every head, the expected dwell and the engagement score. Rows carry
the ``ranker`` feature service's columns (``view__feature``) plus user_id, post_id and
author_id, as ``newsfeed features training-set`` writes them. Built by
``newsfeed package``; not on the Ray Serve request path.
"""

from __future__ import annotations

from typing import Any

import bentoml
from bentoml.exceptions import InvalidArgument

MODEL_NAME = "newsfeed-ranker"


@bentoml.service(resources={"cpu": "1"}, traffic={"timeout": 30})
class RankerService:
    model_ref = bentoml.models.BentoModel(f"{MODEL_NAME}:latest")

    def __init__(self) -> None:
        self.model = bentoml.mlflow.load_model(self.model_ref)

    @bentoml.api
    def score(self, rows: list[dict[str, Any]], weights: dict[str, float] | None = None) -> list[dict[str, float]]:
        import pandas as pd
        from mlflow.exceptions import MlflowException

        if not rows:
            return []
        try:
            out = self.model.predict(pd.DataFrame(rows), params={"weights": weights or {}})
        except (KeyError, ValueError, MlflowException) as err:  # missing columns, unknown reactions
            raise InvalidArgument(str(err)) from None
        return out.to_dict("records")
