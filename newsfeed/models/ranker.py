"""The multi-task ranker: shared layers (shared-bottom or MMoE), one head per reaction plus
skip, and a dwell-time regression head.

Position bias: a user is likelier to react to what is shown first. A shallow position
term is added to every head's logit during training (PAL-style), so the shared layers
learn relevance apart from position; scoring uses position 0 ("as if shown first"),
which ranks candidates on relevance alone.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn

from newsfeed.models.encoding import Encoder
from newsfeed.models.layers import CrossNetwork, InputLayer, id_tables, mlp
from newsfeed.models.training import Batch, weighted_mean
from newsfeed.schema import REACTIONS

HEADS: tuple[str, ...] = (*REACTIONS, "skip")
"""Binary heads, each trained with BCE; dwell is the extra regression head."""
MAX_POSITION = 50
REACTION_CHAIN: dict[str, str] = {"like": "click", "comment": "click", "share": "click", "friend_request": "click",
                                  "block": "hide"}
"""Reactions that follow another in the event model (a like, comment or share follows a click,
a block follows a hide): ``RankerConfig.nested`` may model each as its parent's probability
times a conditional one (ESMM-style), so the rare reaction's head learns only what the parent's
many labels do not already say."""


class RankerConfig(BaseModel):
    architecture: Literal["mmoe", "shared-bottom"] = "mmoe"
    hidden: list[int] = [256, 128]
    experts: int = Field(4, ge=1, description="MMoE experts")
    tower: int = Field(32, ge=1, description="width of each head's small tower")
    ids: list[str] = Field(default_factory=lambda: ["post_id", "author_id"],
                           description="entity keys embedded by hashed id")
    id_dim: int = Field(16, ge=1)
    id_buckets: int = Field(1 << 15, ge=16)
    dropout: float = Field(0.1, ge=0, lt=1)
    id_dropout: float = Field(0.5, ge=0, le=1, description="share of training rows trained as if their ids were new")
    loss_weights: dict[str, float] = Field(
        default_factory=lambda: {**{h: 1.0 for h in HEADS}, "dwell": 0.5},
        description="per-head loss weight (BCE heads and dwell's Huber)")
    cross_layers: int = Field(0, ge=0, description="DCN-v2 cross layers over the inputs, before the shared layers")
    cross_rank: int = Field(32, ge=1, description="rank of each cross layer's weight matrix")
    nested: dict[str, str] = Field(
        default_factory=dict,
        description="head -> parent head: the head's probability is its parent's times a conditional probability "
                    "(see REACTION_CHAIN); trained on the head's own labels, so a label without its parent's only "
                    "pulls the parent up")
    calibration: Literal["none", "platt"] = Field(
        "platt", description="per-head Platt scaling fitted on the validation days' predictions: the engagement "
                            "score adds the heads' probabilities, so each must be right in size, not only order")


def input_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if "__" in c]


class MultiTaskRanker(nn.Module):
    def __init__(self, encoder: Encoder, config: RankerConfig):
        super().__init__()
        self.config, self.encoder = config, encoder
        unknown = set(config.loss_weights) - {*HEADS, "dwell"}
        if unknown:
            raise ValueError(f"loss weights for unknown heads {sorted(unknown)}; heads are {[*HEADS, 'dwell']}")
        unknown = {*config.nested, *config.nested.values()} - set(HEADS)
        if unknown:
            raise ValueError(f"nested heads name unknown heads {sorted(unknown)}; heads are {list(HEADS)}")
        chained = sorted(set(config.nested) & set(config.nested.values()))
        if chained:
            raise ValueError(f"nested heads {chained} are both a child and a parent; a parent must be a root head")
        self.parents = [HEADS.index(config.nested.get(h, h)) for h in HEADS]  # a root head is its own parent
        self.tables = id_tables([encoder], config.id_dim)
        self.inputs = InputLayer(encoder, self.tables, id_dropout=config.id_dropout)
        self.cross = (CrossNetwork(self.inputs.out_dim, config.cross_layers, config.cross_rank)
                      if config.cross_layers else None)
        sizes = [self.inputs.out_dim, *config.hidden]
        n_tasks = len(HEADS) + 1
        if config.architecture == "mmoe":
            self.experts = nn.ModuleList(mlp(sizes, config.dropout) for _ in range(config.experts))
            self.gates = nn.Linear(self.inputs.out_dim, n_tasks * config.experts)
        else:
            self.bottom = mlp(sizes, config.dropout)
        self.towers = nn.ModuleList(mlp([config.hidden[-1], config.tower, 1], 0.0, False) for _ in range(n_tasks))
        self.position_bias = nn.Embedding(MAX_POSITION, len(HEADS))
        nn.init.zeros_(self.position_bias.weight)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, config: RankerConfig) -> "MultiTaskRanker":
        return cls(Encoder.fit(frame, input_columns(frame), config.ids, config.id_buckets), config)

    def log_probabilities(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p, log(1 - p)) of every binary head from ``forward``'s logits: a root head's
        sigmoid; a nested head's, its parent's times its own."""
        log_p = F.logsigmoid(logits)
        if not self.config.nested:
            return log_p, F.logsigmoid(-logits)
        nested = torch.tensor([p != h for h, p in enumerate(self.parents)])
        log_p = torch.where(nested, log_p + log_p[:, self.parents], log_p)
        return log_p, torch.where(nested, log1mexp(log_p), F.logsigmoid(-logits))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """P(head) for every binary head from ``forward``'s logits, (n, len(HEADS))."""
        return torch.sigmoid(logits) if not self.config.nested else self.log_probabilities(logits)[0].exp()

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(binary logits (n, len(HEADS)), predicted log1p dwell (n,)); a nested head's logit is
        its conditional probability's (``probabilities`` gives every head's own)."""
        x = self.inputs(batch)
        if self.cross is not None:
            x = self.cross(x)
        n_tasks = len(self.towers)
        if self.config.architecture == "mmoe":
            experts = torch.stack([e(x) for e in self.experts], dim=1)  # (n, E, h)
            gates = self.gates(x).view(len(x), n_tasks, -1).softmax(dim=-1)  # (n, T, E)
            shared = torch.einsum("nte,neh->nth", gates, experts)
            outputs = [tower(shared[:, t]) for t, tower in enumerate(self.towers)]
        else:
            shared = self.bottom(x)
            outputs = [tower(shared) for tower in self.towers]
        out = torch.cat(outputs, dim=1)
        position = batch.get("position")
        if position is None:
            position = torch.zeros(len(x), dtype=torch.long)
        logits = out[:, :len(HEADS)] + self.position_bias(position.clamp(0, MAX_POSITION - 1))
        return logits, out[:, len(HEADS)]

    @torch.no_grad()
    def predict(self, frame: pd.DataFrame, batch_size: int = 8192, logged_position: bool = False) -> pd.DataFrame:
        """P(head) for every binary head and expected dwell seconds: at position 0 (for
        ranking), or at each row's logged ``position`` (to check calibration against logs)."""
        self.eval()
        parts = []
        for i in range(0, len(frame), batch_size):
            rows = frame.iloc[i:i + batch_size]
            batch = self.encoder.transform(rows)
            if logged_position:
                batch["position"] = torch.from_numpy(rows["position"].to_numpy(np.int64))
            logits, dwell = self(batch)
            parts.append(np.column_stack([self.probabilities(logits).numpy(), np.expm1(dwell.clamp(min=0).numpy())]))
        values = np.concatenate(parts) if parts else np.zeros((0, len(HEADS) + 1))
        return pd.DataFrame(values, columns=[*(f"p_{h}" for h in HEADS), "dwell_seconds"], index=frame.index)


def training_batch(model: MultiTaskRanker, frame: pd.DataFrame) -> Batch:
    batch = model.encoder.transform(frame)
    batch["labels"] = torch.from_numpy(frame[list(HEADS)].to_numpy(np.float32))
    batch["log_dwell"] = torch.from_numpy(np.log1p(frame["dwell_seconds"].fillna(0).to_numpy(np.float32)))
    batch["position"] = torch.from_numpy(frame["position"].to_numpy(np.int64))
    return batch


def multitask_loss(model: MultiTaskRanker, batch: Batch) -> torch.Tensor:
    logits, dwell = model(batch)
    weights = model.config.loss_weights
    bce = weighted_mean(head_log_loss(model, logits, batch["labels"]), batch)
    head_weights = torch.tensor([weights.get(h, 1.0) for h in HEADS])
    huber = weighted_mean(F.huber_loss(dwell, batch["log_dwell"], reduction="none"), batch)
    return (bce * head_weights).sum() + weights.get("dwell", 0.5) * huber


def head_log_loss(model: MultiTaskRanker, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each row's and head's binary cross-entropy of the head's probability, (n, len(HEADS))."""
    if not model.config.nested:
        return F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    log_p, log_not_p = model.log_probabilities(logits)
    return -(labels * log_p + (1 - labels) * log_not_p)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate at both ends (Maechler 2012)."""
    x = x.clamp(max=-1e-7)
    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def logged_logits(model: MultiTaskRanker, frame: pd.DataFrame, batch_size: int = 8192) -> torch.Tensor:
    """Every binary head's logit at each row's logged position, (n, len(HEADS))."""
    model.eval()
    parts = []
    with torch.no_grad():
        for i in range(0, len(frame), batch_size):
            rows = frame.iloc[i:i + batch_size]
            batch = model.encoder.transform(rows)
            batch["position"] = torch.from_numpy(rows["position"].to_numpy(np.int64))
            parts.append(model(batch)[0])
    return torch.cat(parts) if parts else torch.zeros((0, len(HEADS)))


def fit_platt(model: MultiTaskRanker, frame: pd.DataFrame) -> torch.Tensor:
    """Per head (scale, shift) of its logit minimising log loss on ``frame``'s labels, (len(HEADS), 2):
    fitted on rows the model did not train on."""
    logits, labels = logged_logits(model, frame), torch.from_numpy(frame[list(HEADS)].to_numpy(np.float32))
    params = torch.tensor([[1.0, 0.0]] * len(HEADS), requires_grad=True)
    optimizer = torch.optim.LBFGS([params], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = head_log_loss(model, logits * params[:, 0] + params[:, 1], labels).mean()
        loss.backward()
        return loss
    optimizer.step(closure)
    return params.detach()


@torch.no_grad()
def apply_platt(model: MultiTaskRanker, params: torch.Tensor) -> None:
    """Fold per-head (scale, shift) into the model's own weights: each head's last layer and its
    position term are scaled, its bias shifted, so the model, its saved form and serving's fast
    path all give calibrated probabilities with nothing extra to carry."""
    for h, (scale, shift) in enumerate(params.tolist()):
        last = model.towers[h][-1]
        last.weight.mul_(scale)
        last.bias.mul_(scale).add_(shift)
        model.position_bias.weight[:, h].mul_(scale)
