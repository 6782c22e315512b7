"""Training settings and each model's defaults, without torch: the library, the command line
and the benchmarks read the defaults from here, so each is declared once."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class TrainConfig(BaseModel):
    """Optimisation settings; every field is logged with the run."""

    epochs: int = Field(12, ge=1)
    batch_size: int = Field(1024, ge=2)
    learning_rate: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    patience: int = Field(2, ge=0, description="epochs without validation improvement before stopping")
    seed: int = 7
    threads: int | None = Field(None, description="torch intra-op threads [default: the machine's cores]")
    refit: bool = Field(False, description="after early stopping, retrain on train + validation for the chosen "
                                           "number of epochs (the most recent days are the most informative)")
    early_stopping: Literal["loss", "engagement"] = Field(
        "loss", description="the ranker's early stopping: the validation loss, or the realised engagement of the "
                            "validation days' feeds as it orders them (the two-tower always stops on recall)")
    teachers: int = Field(
        0, ge=0, description="the ranker's ensemble distillation: train this many rankers first (seeds seed, seed+1, "
                             "...), then the ranker on their mean predicted probabilities in place of the 0/1 "
                             "reactions (soft labels carry less noise); 0: on the reactions")
    recency_half_life_days: float | None = Field(
        None, gt=0, description="weight training rows by 0.5 ** (age / half-life), age from the newest row: "
                                "under drift, recent behaviour says more about the days ahead")


TWO_TOWER_TRAINING = TrainConfig(batch_size=512, learning_rate=1e-3)
"""The two-tower's defaults: smaller batches and a gentler rate than the ranker's (in-batch
negatives; the sampled loss overfits fast). Early-stopped on validation recall, no refit."""


RANKER_TRAINING = TrainConfig(refit=True, recency_half_life_days=5.0, patience=1)
"""The ranker's defaults, each checked without the test period (``benchmarks/model_choices.py``:
a backtest over three windows before it, each variant trained for each on the data before it,
scored by the feeds' true expected engagement and paired against the default; seed 7, demo
scale). Distillation from 3 trainings (``teachers=3``, ``runs.soft_labels``) won +0.0224
[+0.0191, +0.0256] there, every window better, at 4.8x the training time, and +0.023 on a
fresh seed's served feed; it is not the default yet: on the test suite's small home (scale
0.15, ``--epochs 2``) the served feed fell below its floor with it, likely because the student,
which early-stops at 5-7 epochs at the default scale, is capped at 2 there, and the pipeline
has no per-run switch for it yet. Refit on train + validation (see fit_and_refit; without: -0.038 [-0.043, -0.033]),
MMoE (shared-bottom: -0.018), and recent rows weighted more, the weight halving every 5 days
(none: -0.007 [-0.010, -0.004]; 2.5 days ties, +0.000; 10 days -0.003). Shorter memories win
the window right after the simulator's interest drift and lose the two before it (0.3 days:
+0.048 there, -0.029 pooled), and what one window chose did not carry to a fresh seed's test
days (0.3 days lost 0.054 [0.045, 0.062] to 5 there): hence several windows. Patience 1: the
validation loss bottoms out early and only rises after (best epoch 2), and the refit retrains
from scratch for the chosen epoch count, so a third epoch of waiting bought the same model
one epoch later. Learning rate 2e-3: 1e-3 lost 0.0096 and 8e-3 lost 0.0050; 4e-3 won +0.0043
[+0.0010, +0.0076] here but lost 0.015 on a fresh seed's test days (0.672 against 0.687 on
seed 37), and the interval sees which users were drawn, not the training's own randomness
(larger, see newsfeed.gate), so it did not replace 2e-3."""


RANKER_FINE_TUNING = TrainConfig(epochs=2, learning_rate=2e-3, recency_half_life_days=5.0)
"""Continual training's defaults (``newsfeed.models.continual``): passes over the days since
the base ranker's window, from its weights; no early stopping or refit (the days are the
newest there are). Chosen on the backtest (``benchmarks/model_choices.py --only continual``,
seed 7: the champion trained afresh a window, 1.3-1.7 days, earlier, fine-tuned on the days
since): 2 passes at 2e-3 beat training afresh by +0.0225 [+0.0178, +0.0277] in 2 s against
29 s; 1 pass at 5e-4 lost 0.007, 2e-4 lost more, 3 passes or 4e-3 gained less."""
