"""A light pre-ranker distilled from the heavy ranker: trained on the ranker's own scores of
candidate lists, to keep what the ranker would put on top at a fraction of its cost.

It reads the ranker's first layer as split by ``FastRanker`` (the post part per corpus row,
the user part per request, the pair inputs per candidate) and scores

    s(user, post) = (u(user) + A pair) . v(post) + b(post) + w . pair

with v and b computed once per corpus row (like the two-tower's post vectors), u once per
request, and the pair term one small matrix product: a dot product per candidate, where the
ranker runs its experts and towers. Training is listwise: the student's softmax over a list
against the ranker's, sharpened by a temperature, so that the top of each list counts most.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from newsfeed.feed.fast_ranker import FastRanker


@dataclass
class TeacherList:
    """One user's candidates with the heavy ranker's scores of them."""

    user_part: torch.Tensor  # (1, width): the ranker's first-layer share of the user's inputs
    rows: np.ndarray  # corpus rows
    pair: torch.Tensor  # (n, pair inputs): FastRanker.pair_matrix
    score: np.ndarray  # the ranker's engagement score per row


class StudentNet(nn.Module):
    def __init__(self, width: int, pair_dims: int, dim: int = 32):
        super().__init__()
        self.dim = dim
        self.post = nn.Sequential(nn.ReLU(), nn.Linear(width, dim + 1))  # v and b
        self.user = nn.Sequential(nn.ReLU(), nn.Linear(width, dim))
        self.pair = nn.Linear(pair_dims, dim + 1)  # A and w

    def post_side(self, post_part: torch.Tensor) -> torch.Tensor:
        """(rows, dim + 1): v and b per corpus row."""
        return self.post(post_part)

    def score(self, post_side: torch.Tensor, user_part: torch.Tensor, pair: torch.Tensor) -> torch.Tensor:
        p = self.pair(pair)
        query = self.user(user_part) + p[:, :self.dim]
        return (query * post_side[:, :self.dim]).sum(1) + post_side[:, self.dim] + p[:, self.dim]


@dataclass
class DistillConfig:
    dim: int = 32
    epochs: int = 30
    lr: float = 3e-3
    temperature: float = 0.1  # on the ranker's scores standardised per list: small = only the top counts
    seed: int = 0


def distill(fast: FastRanker, lists: list[TeacherList], config: DistillConfig = DistillConfig()) -> StudentNet:
    """A student trained to reproduce the ranker's order of each list."""
    torch.manual_seed(config.seed)
    net = StudentNet(fast.post_part.shape[1], fast.pair_weight.shape[0], config.dim)
    optimiser = torch.optim.Adam(net.parameters(), lr=config.lr)
    targets = [torch.softmax(torch.from_numpy(_standardised(t.score) / config.temperature), 0) for t in lists]
    rows = [torch.from_numpy(np.asarray(t.rows, np.int64)) for t in lists]
    order = np.random.default_rng(config.seed)
    for _ in range(config.epochs):
        for i in order.permutation(len(lists)):
            t = lists[i]
            logits = net.score(net.post_side(fast.post_part[rows[i]]), t.user_part, t.pair)
            loss = -(targets[i] * torch.log_softmax(logits, 0)).sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    net.eval()
    return net


def save(net: StudentNet, folder: Path) -> Path:
    """The student's weights and shape into ``folder`` (what ``load`` reads)."""
    folder.mkdir(parents=True, exist_ok=True)
    shape = {"width": net.post[1].in_features, "pair_dims": net.pair.in_features, "dim": net.dim}
    torch.save(net.state_dict(), folder / "student.pt")
    (folder / "shape.json").write_text(json.dumps(shape))
    return folder


def load(folder: Path) -> StudentNet:
    net = StudentNet(**json.loads((folder / "shape.json").read_text()))
    net.load_state_dict(torch.load(folder / "student.pt", weights_only=True))
    net.eval()
    return net


class DistilledPreRanker:
    """The student over a corpus: its post side per row computed once, a score per request.
    Replaced whole (``extended``, or anew over a new ``FastRanker``), never changed in place."""

    def __init__(self, net: StudentNet, fast: FastRanker, post_side: torch.Tensor | None = None):
        if net.post[1].in_features != fast.post_part.shape[1] or net.pair.in_features != fast.pair_weight.shape[0]:
            raise ValueError(f"the student's inputs ({net.post[1].in_features} post, {net.pair.in_features} pair) "
                             f"are not this ranker's ({fast.post_part.shape[1]}, {fast.pair_weight.shape[0]})")
        self.net, self.fast = net, fast
        if post_side is None:
            with torch.no_grad():
                post_side = net.post_side(fast.post_part)
        self.post_side = post_side

    def extended(self, fast: FastRanker) -> "DistilledPreRanker":
        """Over ``fast``, the same rows and more appended: only the new rows' post side is computed."""
        with torch.no_grad():
            more = self.net.post_side(fast.post_part[len(self.post_side):])
        return DistilledPreRanker(self.net, fast, torch.cat([self.post_side, more]))

    @torch.no_grad()
    def scores(self, rows: np.ndarray, user_part: torch.Tensor, pair: torch.Tensor) -> np.ndarray:
        """The student's score of corpus ``rows`` (``FastRanker.user_part``, ``pair_matrix`` inputs)."""
        side = self.post_side[torch.from_numpy(np.asarray(rows, np.int64))]
        return self.net.score(side, user_part, pair).numpy()


def _standardised(score: np.ndarray) -> np.ndarray:
    score = np.asarray(score, np.float32)
    return (score - score.mean()) / (score.std() + 1e-6)
