"""The ranker's forward pass with its first layers precomputed for every post.

Most of the ranker's work is the first linear layer of each expert (and the gates) over
~290 inputs, and most inputs do not change between requests: the post's are fixed, the
user's are one row for all candidates. A linear layer splits over its inputs, so
W x = W x_post + W_user x_user + W_pair x_pair: the post part is computed once per post
when a replica loads the ranker, the user part once per request, and only the few
user-post pair inputs (affinity, request-time features) per candidate. The layers after
the first run as in the model. ``tests/test_feed.py`` checks the heads equal the model's.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from newsfeed.feed.ranker_inputs import RankerInputs
from newsfeed.models.ranker import HEADS, MultiTaskRanker


def input_sides(model: MultiTaskRanker, inputs: RankerInputs) -> np.ndarray:
    """The side ("post", "user" or "pair") of each dimension of the model's input layer, in
    the order ``InputLayer.forward`` concatenates them."""
    layer, encoder = model.inputs, model.encoder
    sides: list[str] = [inputs.side[c] for c in encoder.numeric]
    for column, width in encoder.vectors.items():
        sides += [inputs.side[column]] * width
    for column, embedding in zip(encoder.categories, layer.categories):
        sides += [inputs.side[column]] * embedding.embedding_dim
    for column, table in encoder.bags.items():
        width = layer.hashtags[column].embedding_dim if table == "hashtag" else layer.tables[table].embedding_dim
        sides += [inputs.side[column]] * width
    for key in encoder.ids:
        sides += ["post"] * layer.tables[key].embedding_dim
    return np.array(sides)


class FastRanker:
    def __init__(self, model: MultiTaskRanker, inputs: RankerInputs):
        model.eval()
        self.model = model
        mmoe = model.config.architecture == "mmoe"
        self.branches = list(model.experts) if mmoe else [model.bottom]
        firsts = [branch[0] for branch in self.branches] + ([model.gates] if mmoe else [])
        self.widths = [layer.out_features for layer in firsts]
        weight = torch.cat([layer.weight for layer in firsts]).detach()
        bias = torch.cat([layer.bias for layer in firsts]).detach()
        sides = input_sides(model, inputs)
        if len(sides) != weight.shape[1]:
            raise ValueError(f"input layout {len(sides)} does not match the first layer's {weight.shape[1]} inputs")
        with torch.no_grad():
            x0 = model.inputs({k: torch.from_numpy(v) for k, v in inputs.base.items()})
            self.post_part = x0 @ weight.T + bias  # per corpus row
        self.weight, self.bias = weight, bias
        self.user_dims = torch.from_numpy(np.flatnonzero(sides == "user"))
        self.pair_dims = torch.from_numpy(np.flatnonzero(sides == "pair"))
        # Where the corpus encoding left the user and pair inputs missing (the same for every post).
        self.user_base, self.pair_base = x0[0, self.user_dims], x0[0, self.pair_dims]
        self.user_weight = weight[:, self.user_dims].contiguous()
        self.pair_weight = weight[:, self.pair_dims].contiguous()
        self.position_zero = model.position_bias.weight[0].detach()

    def extended(self, more: RankerInputs) -> "FastRanker":
        """This ranker with the post part of ``more``'s rows appended."""
        out = copy.copy(self)
        with torch.no_grad():
            x0 = self.model.inputs({k: torch.from_numpy(v) for k, v in more.base.items()})
            out.post_part = torch.cat([self.post_part, x0 @ self.weight.T + self.bias])
        return out

    @torch.no_grad()
    def probabilities(self, rows: np.ndarray, batch: dict[str, torch.Tensor]) -> np.ndarray:
        """P(head) per row at position 0, (len(rows), len(HEADS)); ``batch`` as RankerInputs.batch."""
        model = self.model
        x = model.inputs(batch)
        first = (self.post_part[torch.from_numpy(np.asarray(rows))]
                 + (x[0, self.user_dims] - self.user_base) @ self.user_weight.T
                 + (x[:, self.pair_dims] - self.pair_base) @ self.pair_weight.T)
        parts = first.split(self.widths, dim=1)
        outputs = [branch[1:](part) for branch, part in zip(self.branches, parts)]
        if model.config.architecture == "mmoe":
            experts = torch.stack(outputs, dim=1)
            gates = parts[-1].view(len(x), len(model.towers), -1).softmax(dim=-1)
            shared = torch.einsum("nte,neh->nth", gates, experts)
            heads = [tower(shared[:, t]) for t, tower in enumerate(model.towers)]
        else:
            heads = [tower(outputs[0]) for tower in model.towers]
        logits = torch.cat(heads, dim=1)[:, :len(HEADS)] + self.position_zero
        return torch.sigmoid(logits).numpy()
