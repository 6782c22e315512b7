"""Two-tower retrieval: a user tower and a content-driven post tower, L2-normalised, trained
with in-batch negatives and log-Q correction.

In-batch negatives sample posts in proportion to how often they are positives, so a
plain softmax learns "popular" instead of "relevant to this user"; subtracting log Q
(each post's sampling probability) from its logit corrects that bias (Yi et al.,
RecSys 2019). The post tower reads content (text embedding, topic, hashtags, media,
author) plus a hashed post id, so a post published a minute ago gets an embedding
from its content alone.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn

from newsfeed.models.encoding import Encoder
from newsfeed.models.layers import InputLayer, id_tables, mlp
from newsfeed.models.training import Batch, weighted_mean

USER_VIEWS = ("user_profile", "user_engagement", "user_history")
POST_VIEWS = ("post_content",)
"""The views the towers' inputs come from (the ``two_tower`` feature service reads more)."""
USER_INPUTS = ["user_engagement__topic_interest", "user_engagement__topic_interest_7d",
               "user_engagement__topic_interest_rate",
               "user_history__recent_post_ids", "user_history__recent_author_ids"]
POST_INPUTS = ["post_content__topic_id", "post_content__hashtag_buckets", "post_content__media_type",
               "post_content__text_embedding"]


class TwoTowerConfig(BaseModel):
    # A dot product can only use what describes interests and content: a user's activity
    # counters and demographics only rescale the user vector, and on ~10k engaged
    # impressions they add noise (benchmarks/model_choices.py, Recall@500 on the serving
    # corpus: every user feature -0.037 [-0.058, -0.018] against these).
    user_inputs: list[str] = Field(default_factory=lambda: list(USER_INPUTS), description="user tower features")
    post_inputs: list[str] = Field(default_factory=lambda: list(POST_INPUTS), description="post tower features")
    embedding_dim: int = Field(64, ge=4)
    hidden: list[int] = [256, 128]
    user_ids: list[str] = Field(default_factory=lambda: ["user_id"], description="user-side keys embedded by id")
    post_ids: list[str] = Field(default_factory=lambda: ["post_id", "author_id"],
                                description="post-side keys embedded by id")
    id_dim: int = Field(32, ge=1)
    id_buckets: int = Field(1 << 15, ge=16)
    temperature: float = Field(0.05, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    id_dropout: float = Field(0.5, ge=0, le=1, description="share of training rows trained as if their ids were new")
    logq_correction: bool = True


class TwoTower(nn.Module):
    def __init__(self, user_encoder: Encoder, post_encoder: Encoder, config: TwoTowerConfig):
        super().__init__()
        self.config = config
        self.user_encoder, self.post_encoder = user_encoder, post_encoder
        self.tables = id_tables([user_encoder, post_encoder], config.id_dim)
        self.user_input = InputLayer(user_encoder, self.tables, id_dropout=config.id_dropout)
        self.post_input = InputLayer(post_encoder, self.tables, id_dropout=config.id_dropout)
        self.user_mlp = mlp([self.user_input.out_dim, *config.hidden, config.embedding_dim], config.dropout, False)
        self.post_mlp = mlp([self.post_input.out_dim, *config.hidden, config.embedding_dim], config.dropout, False)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, config: TwoTowerConfig) -> "TwoTower":
        missing = [c for c in (*config.user_inputs, *config.post_inputs) if c not in frame.columns]
        if missing:
            raise ValueError(f"the training frame lacks tower inputs {missing}: are they in the feature service?")
        user = Encoder.fit(frame, config.user_inputs, config.user_ids, config.id_buckets)
        post = Encoder.fit(frame, config.post_inputs, config.post_ids, config.id_buckets)
        return cls(user, post, config)

    def user_embedding(self, batch: Batch) -> torch.Tensor:
        return F.normalize(self.user_mlp(self.user_input(batch)), dim=-1)

    def post_embedding(self, batch: Batch) -> torch.Tensor:
        return F.normalize(self.post_mlp(self.post_input(batch)), dim=-1)

    @torch.no_grad()
    def embed_users(self, frame: pd.DataFrame, batch_size: int = 8192) -> np.ndarray:
        return self._embed(self.user_encoder, self.user_embedding, frame, batch_size)

    @torch.no_grad()
    def embed_posts(self, frame: pd.DataFrame, batch_size: int = 8192) -> np.ndarray:
        return self._embed(self.post_encoder, self.post_embedding, frame, batch_size)

    def _embed(self, encoder: Encoder, tower, frame: pd.DataFrame, batch_size: int) -> np.ndarray:
        self.eval()
        parts = [tower(encoder.transform(frame.iloc[i:i + batch_size])).numpy()
                 for i in range(0, len(frame), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, self.config.embedding_dim), np.float32)


def training_batch(model: TwoTower, positives: pd.DataFrame, log_q: np.ndarray) -> Batch:
    """Tensors for positive (user, post) pairs: both towers' inputs, the post id (to mask
    in-batch duplicates) and each post's log sampling probability."""
    batch = {f"user/{k}": v for k, v in model.user_encoder.transform(positives).items()}
    batch.update({f"post/{k}": v for k, v in model.post_encoder.transform(positives).items()})
    batch["post_id"] = torch.from_numpy(positives["post_id"].to_numpy(np.int64))
    batch["log_q"] = torch.from_numpy(log_q.astype(np.float32))
    return batch


def sampling_log_q(post_ids: np.ndarray) -> np.ndarray:
    """log of each row's post frequency among the positives: the in-batch sampling probability."""
    counts = pd.Series(post_ids).map(pd.Series(post_ids).value_counts()).to_numpy(np.float64)
    return np.log(counts / len(post_ids))


def tower_inputs(batch: Batch, tower: str, rows: torch.Tensor | None = None) -> Batch:
    """One tower's tensors of a ``training_batch`` (keys ``user/...`` or ``post/...``), optionally some rows."""
    prefix = f"{tower}/"
    return {k[len(prefix):]: v if rows is None else v[rows] for k, v in batch.items() if k.startswith(prefix)}


@torch.no_grad()
def full_corpus_recall(model: TwoTower, batch: Batch, k: int = 100) -> float:
    """Share of ``batch``'s (user, post) positives whose post ranks in the user's top ``k``
    among every distinct post in the batch: retrieval itself, on validation data, with no
    sampling to correct for. What early stopping watches (the in-batch loss starts rising
    epochs before retrieval stops improving)."""
    model.eval()
    users = model.user_embedding(tower_inputs(batch, "user"))
    _, first, target = np.unique(batch["post_id"].numpy(), return_index=True, return_inverse=True)
    posts = model.post_embedding(tower_inputs(batch, "post", torch.from_numpy(first)))
    scores = users @ posts.T
    target = torch.from_numpy(target.reshape(-1))
    rank = (scores > scores.gather(1, target[:, None])).sum(dim=1)
    return float((rank < k).float().mean())


def in_batch_loss(model: TwoTower, batch: Batch) -> torch.Tensor:
    users = model.user_embedding(tower_inputs(batch, "user"))
    posts = model.post_embedding(tower_inputs(batch, "post"))
    logits = users @ posts.T / model.config.temperature
    if model.config.logq_correction:
        logits = logits - batch["log_q"][None, :]
    # The same post twice in a batch is not a negative for either of its users.
    same = batch["post_id"][:, None] == batch["post_id"][None, :]
    same.fill_diagonal_(False)
    logits = logits.masked_fill(same, float("-inf"))
    return weighted_mean(F.cross_entropy(logits, torch.arange(len(logits)), reduction="none"), batch)
