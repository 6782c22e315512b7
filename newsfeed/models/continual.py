"""Continual training: a ranker trained on from its own weights over the days since its
training window, instead of afresh on the whole history.

A fresh ranker re-learns everything each time; a fine-tuned one keeps what it learnt (its
encoder, its embeddings, its calibration folded into the heads) and spends a few passes on
what happened since. Which one serves better is measured, not assumed: the backtest in
``benchmarks/model_choices.py --only continual`` and, in a pipeline run, the gate, which
compares the fine-tuned challenger with the champion it started from on the same feeds.
"""

from __future__ import annotations

import copy

import pandas as pd

from newsfeed.features.catalog import TIMESTAMP
from newsfeed.models.ranker import MultiTaskRanker, multitask_loss, training_batch
from newsfeed.models.settings import TrainConfig
from newsfeed.models.training import History, fit, recency_weights

TRAINED_THROUGH = "trained_through"
"""Lineage key: the time up to which a model has learnt from the data (the start of the
held-out test period it was scored on); a fine-tune starts there."""


class NothingToFineTune(ValueError):
    """No impressions between the base model's window and the held-out period."""


def rows_since(frame: pd.DataFrame, since: pd.Timestamp, until: pd.Timestamp) -> pd.DataFrame:
    """The rows of a joined training set from ``since`` (inclusive) to ``until`` (exclusive)."""
    ts = pd.to_datetime(frame[TIMESTAMP], utc=True)
    return frame[(ts >= since) & (ts < until)]


def fine_tune(base: MultiTaskRanker, rows: pd.DataFrame, train: TrainConfig, show_progress: bool = True,
              description: str = "ranker fine-tune") -> tuple[MultiTaskRanker, History]:
    """(a copy of ``base`` trained ``train.epochs`` passes over ``rows``, history); ``base``
    is left as it was. No early stopping: the rows are the newest there are, so nothing
    newer is left to judge the passes on (their count and rate are chosen on the backtest)."""
    if rows.empty:
        raise NothingToFineTune("no impressions to fine-tune on")
    model = copy.deepcopy(base)
    batch = training_batch(model, rows)
    judged = dict(batch)  # the loss shown per pass: unweighted, on the same rows
    if train.recency_half_life_days:
        batch["weight"] = recency_weights(rows[TIMESTAMP], train.recency_half_life_days)
    history = fit(model, multitask_loss, batch, judged, train, description, show_progress, keep_best=False,
                  val_label="unweighted")
    return model, history
