"""The ranker's forward pass for one user and hundreds of candidates, with the first layer
split by who its inputs belong to and the rest as a few batched matrix products.

Most of the ranker's work is the first linear layer of each expert (and the gates) over
~290 inputs, and most inputs do not change between requests. A linear layer splits over its
inputs, W x = W_post x_post + W_user x_user + W_pair x_pair: the post part is computed once
per post when a replica loads the ranker; the user part once per request, from one encoded
row; the pair part (affinity, request-time features) per candidate, from their values
directly: numeric columns through their weight columns, a categorical one through a table
of its embedding already multiplied by its weights. After the first layer, the experts'
layers and the task towers of the same shape run stacked, one ``baddbmm`` per layer instead
of one small matmul per expert and per tower. ``tests/test_feed.py`` checks the heads equal
the model's own forward pass on Feast's online features.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from newsfeed.feed.ranker_inputs import RankerInputs
from newsfeed.models.ranker import HEADS, MultiTaskRanker


def input_columns(model: MultiTaskRanker, inputs: RankerInputs) -> np.ndarray:
    """The column each dimension of the model's input layer comes from, in the order
    ``InputLayer.forward`` concatenates them (an id embedding: its entity key)."""
    layer, encoder = model.inputs, model.encoder
    columns: list[str] = list(encoder.numeric)
    for column, width in encoder.vectors.items():
        columns += [column] * width
    for column, embedding in zip(encoder.categories, layer.categories):
        columns += [column] * embedding.embedding_dim
    for column, table in encoder.bags.items():
        width = layer.hashtags[column].embedding_dim if table == "hashtag" else layer.tables[table].embedding_dim
        columns += [column] * width
    for key in encoder.ids:
        columns += [key] * layer.tables[key].embedding_dim
    return np.array(columns, dtype=object)


class StackedMLP:
    """Several ``mlp`` stacks of the same shape (Linear, ReLU[, Dropout] ..., eval mode) run as
    one: each layer a batched matmul over the stack. Input (S, n, d) -> output (S, n, h)."""

    def __init__(self, stacks: list[nn.Sequential]):
        linears = [[m for m in s if isinstance(m, nn.Linear)] for s in stacks]
        shapes = {tuple((m.in_features, m.out_features) for m in ls) for ls in linears}
        kinds = {tuple(type(m) for m in s if not isinstance(m, nn.Dropout)) for s in stacks}
        if len(shapes) != 1 or len(kinds) != 1 or not set(next(iter(kinds))) <= {nn.Linear, nn.ReLU}:
            raise ValueError("stacked layers need the same Linear/ReLU shape in every stack")
        self.plan = [type(m) for m in stacks[0] if not isinstance(m, nn.Dropout)]
        with torch.no_grad():
            self.weights = [torch.stack([ls[i].weight.T for ls in linears]).contiguous() for i in range(len(linears[0]))]
            self.biases = [torch.stack([ls[i].bias for ls in linears])[:, None, :].contiguous()
                           for i in range(len(linears[0]))]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        layer = 0
        for kind in self.plan:
            if kind is nn.Linear:
                x = torch.baddbmm(self.biases[layer], x, self.weights[layer])
                layer += 1
            else:
                x = torch.relu(x)
        return x


class FastRanker:
    def __init__(self, model: MultiTaskRanker, inputs: RankerInputs):
        model.eval()
        if model.cross is not None:
            raise ValueError("the fast path splits the first layer by input, which cross layers do not allow")
        self.model = model
        self.mmoe = model.config.architecture == "mmoe"
        branches = list(model.experts) if self.mmoe else [model.bottom]
        firsts = [branch[0] for branch in branches] + ([model.gates] if self.mmoe else [])
        self.widths = [layer.out_features for layer in firsts]
        with torch.no_grad():
            weight = torch.cat([layer.weight for layer in firsts])
            bias = torch.cat([layer.bias for layer in firsts])
        columns = input_columns(model, inputs)
        if len(columns) != weight.shape[1]:
            raise ValueError(f"input layout {len(columns)} does not match the first layer's {weight.shape[1]} inputs")
        sides = np.array([inputs.side.get(c, "post") for c in columns])
        post = torch.from_numpy(np.flatnonzero(sides == "post"))
        self.post_weight, self.bias = weight[:, post].T.contiguous(), bias
        self.post_dims = post
        with torch.no_grad():
            self.post_part = model.inputs(_tensors(inputs.base))[:, post] @ self.post_weight + bias  # per corpus row
        user = torch.from_numpy(np.flatnonzero(sides == "user"))
        self.user_dims, self.user_weight = user, weight[:, user].T.contiguous()
        self._pair_layout(model, inputs, columns, weight)
        with torch.no_grad():
            self.rest = StackedMLP([branch[1:] for branch in branches])
            self.towers = StackedMLP(list(model.towers)[:len(HEADS)])  # the dwell tower is not served
            self.position_zero = model.position_bias.weight[0].detach().clone()

    def _pair_layout(self, model, inputs: RankerInputs, columns, weight) -> None:
        """The pair inputs as one matrix per request: numeric columns through their weight
        columns, each categorical one as a one-hot through a table (its embedding times its
        weight columns, one row per code)."""
        self.pair_numeric = [c for c in inputs.encoder.numeric if inputs.side[c] == "pair"]
        dims = [int(np.flatnonzero(columns == c)[0]) for c in self.pair_numeric]
        parts, self.pair_categories = [weight[:, dims].T], {}
        for column, embedding in zip(inputs.encoder.categories, model.inputs.categories):
            if inputs.side[column] == "pair":
                at = torch.from_numpy(np.flatnonzero(columns == column))
                with torch.no_grad():
                    parts.append(embedding.weight @ weight[:, at].T)
                self.pair_categories[column] = embedding.num_embeddings
        self.pair_weight = torch.cat(parts).contiguous()
        other = {c for c, s in inputs.side.items() if s == "pair"} - set(self.pair_numeric) - set(self.pair_categories)
        if other:
            raise ValueError(f"pair columns of a kind the fast path does not take (vectors, bags): {sorted(other)}")

    def extended(self, more: RankerInputs) -> "FastRanker":
        """This ranker with the post part of ``more``'s rows appended."""
        out = copy.copy(self)
        with torch.no_grad():
            x0 = self.model.inputs(_tensors(more.base))[:, self.post_dims]
            out.post_part = torch.cat([self.post_part, x0 @ self.post_weight + self.bias])
        return out

    @torch.no_grad()
    def user_part(self, user: dict) -> torch.Tensor:
        """The first layer's share of the user's inputs, (1, width): one row through the input layer."""
        x = self.model.inputs(self.model.encoder.transform_one(user))
        return x[:, self.user_dims] @ self.user_weight

    def pair_matrix(self, pair: dict[str, np.ndarray], n: int) -> torch.Tensor:
        """The pair inputs of ``n`` candidates, (n, numeric + one-hot codes), for ``pair_weight``."""
        raw = np.column_stack([_column(pair.get(c), n) for c in self.pair_numeric])
        encoder = self.model.encoder
        parts = [encoder.standardise(self.pair_numeric, raw)]
        for column, vocab in self.pair_categories.items():
            parts.append(np.eye(vocab)[encoder.codes(column, pair.get(column), n)])
        return torch.from_numpy(np.hstack(parts).astype(np.float32))

    @torch.no_grad()
    def probabilities(self, rows: np.ndarray, user: dict, pair: dict[str, np.ndarray]) -> np.ndarray:
        """P(head) per corpus row at position 0, (len(rows), len(HEADS)): ``user`` maps the user's
        columns to one value each, ``pair`` the pair columns to one value per row (``pair_values``)."""
        n = len(rows)
        first = torch.addmm(self.post_part[torch.from_numpy(np.asarray(rows))] + self.user_part(user),
                            self.pair_matrix(pair, n), self.pair_weight)
        if self.mmoe:
            experts = len(self.widths) - 1
            shared_in = self.rest(first[:, :-self.widths[-1]].view(n, experts, -1).transpose(0, 1))  # (E, n, h)
            gates = first[:, -self.widths[-1]:].view(n, -1, experts)[:, :len(HEADS)]  # (n, T, E) logits
            # Softmax over experts with the experts on the middle axis: ~4x faster than over a last axis of 4.
            gates = gates.transpose(1, 2).contiguous().softmax(dim=1)  # (n, E, T)
            shared = torch.einsum("net,enh->tnh", gates, shared_in)  # one input per task tower
        else:
            shared = self.rest(first[None]).expand(len(HEADS), -1, -1)
        logits = self.towers(shared)[:, :, 0].T + self.position_zero
        return self.model.probabilities(logits).numpy()


def _tensors(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


def _column(values, n: int) -> np.ndarray:
    return np.full(n, np.nan) if values is None else np.broadcast_to(np.asarray(values, np.float64), (n,))
