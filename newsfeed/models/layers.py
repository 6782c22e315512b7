"""Building blocks shared by the models: the input layer over an Encoder's tensors, MLPs."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from newsfeed.features import hashing
from newsfeed.features.catalog import HISTORY_LENGTH
from newsfeed.models.encoding import Encoder


def mlp(sizes: list[int], dropout: float = 0.0, last_activation: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_activation:
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class CrossNetwork(nn.Module):
    """DCN-v2's cross layers (Wang et al., 2021), low-rank: x_{l+1} = x0 * (U V x_l + b) + x_l.
    Each layer multiplies every input by a learned mix of all of them, so products such as
    "this user's interest in the topic" x "the post's engagement rate" are formed explicitly
    rather than left for the ReLU layers to approximate."""

    def __init__(self, dim: int, layers: int, rank: int):
        super().__init__()
        self.down = nn.ModuleList(nn.Linear(dim, rank, bias=False) for _ in range(layers))
        self.up = nn.ModuleList(nn.Linear(rank, dim) for _ in range(layers))
        for up in self.up:  # start as the identity: the plain network, crosses grown from there
            nn.init.zeros_(up.weight)
            nn.init.zeros_(up.bias)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for down, up in zip(self.down, self.up):
            x = x0 * up(down(x)) + x
        return x


def id_tables(encoders: list[Encoder], dim: int) -> nn.ModuleDict:
    """One hashed embedding table per entity key any encoder reads (as an id or a bag of
    ids), shared between them: a post's id row is the same in the post tower and in a
    user's history."""
    keys = sorted({k for e in encoders for k in (*e.ids, *(t for t in e.bags.values() if t != "hashtag"))})
    buckets = {e.id_buckets for e in encoders}
    if len(buckets) > 1:
        raise ValueError(f"encoders disagree on id buckets: {buckets}")
    n = buckets.pop()
    tables = nn.ModuleDict({k: nn.Embedding(n, dim, padding_idx=0) for k in keys})
    # Small init: a row never trained (a brand-new post) must add almost nothing, so
    # content alone places it.
    for table in tables.values():
        nn.init.normal_(table.weight, std=0.01)
        with torch.no_grad():
            table.weight[0].zero_()
    return tables


SequencePooling = Literal["mean", "position", "attention"]


class SequencePool(nn.Module):
    """A sequence of entity ids, newest first (0 = padding), pooled with its order: "position"
    weighs each place by a learned softmax weight (a learned recency decay); "attention" adds a
    learned position embedding to each item, lets the items attend to one another (one
    self-attention layer, SASRec-style, its output added to its input and normalised) and
    averages them. "position" starts as the plain mean (equal weights) and learns away from it."""

    def __init__(self, dim: int, length: int, pooling: SequencePooling, heads: int = 2):
        super().__init__()
        self.length, self.pooling = length, pooling
        if pooling == "position":
            self.position_logits = nn.Parameter(torch.zeros(length))
        elif pooling == "attention":
            self.position = nn.Embedding(length, dim)
            nn.init.zeros_(self.position.weight)
            self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
            self.norm = nn.LayerNorm(dim)
        else:
            raise ValueError(f"unknown sequence pooling {pooling!r}: use mean, position or attention")

    def forward(self, weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        ids = ids[:, :self.length]  # the newest
        items, present = F.embedding(ids, weight), (ids != 0)
        if self.pooling == "position":
            logits = self.position_logits[:ids.shape[1]].expand_as(ids).masked_fill(~present, float("-inf"))
            share = torch.softmax(logits, dim=1).nan_to_num(0.0)  # an empty sequence: all zero
            return (share.unsqueeze(-1) * items).sum(dim=1)
        x = items + self.position(torch.arange(ids.shape[1])) * present.unsqueeze(-1)
        mask = ~present
        mask[:, 0] = False  # an empty sequence attends to its (zero) first place, not to nothing (NaN)
        attended, _ = self.attention(x, x, x, key_padding_mask=mask, need_weights=False)
        y = self.norm(x + attended) * present.unsqueeze(-1)
        return y.sum(dim=1) / present.sum(dim=1, keepdim=True).clamp(min=1)


class InputLayer(nn.Module):
    """Concatenates numeric, vector, categorical-embedding, bag and id-embedding inputs.

    ``id_dropout``: in training, the share of rows whose own id embeddings are zeroed, as
    a brand-new entity's are (DropoutNet): the other inputs must then carry the signal
    instead of memorised ids, which is what lets a model place entities it never saw."""

    def __init__(self, encoder: Encoder, tables: nn.ModuleDict, category_dim: int = 8, hashtag_dim: int = 16,
                 id_dropout: float = 0.0, sequence_pooling: SequencePooling = "mean",
                 sequence_length: int = HISTORY_LENGTH):
        super().__init__()
        self.encoder, self.id_dropout = encoder, id_dropout
        self.tables = tables
        id_dim = next(iter(tables.values())).embedding_dim if len(tables) else 0
        # Bags of entity ids are sequences, newest first (a user's recent posts and authors).
        self.sequences = nn.ModuleDict({
            name: SequencePool(id_dim, sequence_length, sequence_pooling)
            for name, table in encoder.bags.items() if table != "hashtag" and sequence_pooling != "mean"
        })
        self.categories = nn.ModuleList(nn.Embedding(len(v), min(category_dim, len(v))) for v in encoder.categories.values())
        self.hashtags = nn.ModuleDict({
            name: nn.EmbeddingBag(hashing.HASHTAG_BUCKETS + 1, hashtag_dim, mode="mean", padding_idx=0)
            for name, table in encoder.bags.items() if table == "hashtag"
        })
        self.out_dim = (encoder.numeric_dim + encoder.vector_dim + sum(e.embedding_dim for e in self.categories)
                        + len(self.hashtags) * hashtag_dim + (len(encoder.bags) - len(self.hashtags)) * id_dim
                        + len(encoder.ids) * id_dim)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [batch["numeric"], batch["vectors"]]
        parts += [emb(batch["categorical"][:, j]) for j, emb in enumerate(self.categories)]
        for name, table in self.encoder.bags.items():
            ids = batch[f"bag:{name}"]
            if table == "hashtag":
                parts.append(self.hashtags[name](ids))
            elif name in self.sequences:
                parts.append(self.sequences[name](self.tables[table].weight, ids))
            else:
                parts.append(_mean_bag(self.tables[table].weight, ids))
        ids = [self.tables[key](batch[f"id:{key}"]) for key in self.encoder.ids]
        if ids and self.training and self.id_dropout:
            keep = (torch.rand(len(ids[0]), 1) >= self.id_dropout).to(ids[0].dtype)
            ids = [e * keep for e in ids]
        return torch.cat(parts + ids, dim=1)


def _mean_bag(weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean of the rows of ``weight`` named in each row of ``ids`` (0 = padding; empty -> 0)."""
    return F.embedding_bag(ids, weight, mode="mean", padding_idx=0)
