"""Two-tower retrieval: a user tower and a content-driven post tower, L2-normalised, trained
with in-batch negatives and log-Q correction.

In-batch negatives sample posts in proportion to how often they are positives, so a
plain softmax learns "popular" instead of "relevant to this user"; subtracting log Q
(each post's sampling probability) from its logit corrects that bias (Yi et al.,
RecSys 2019). The post tower reads content (text embedding, topic, hashtags, media,
author) plus a hashed post id, so a post published a minute ago gets an embedding
from its content alone.

Two optional terms make the score more than a match of tastes, and both stay exact in an
inner-product index: a per-post bias from the post tower (what engages anyone: an author's
reach, a medium), and a learned penalty per day of a post's age at the request. The age
term is linear in time, so it splits: -rate x (now - created) = rate x created - rate x now,
and the last part is the same for every post of one query. The index then holds
[p, bias, created day] per post and the query is [u / temperature, 1, rate]: its inner
products are the training logits up to a constant per query, so the ranking is the model's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn

from newsfeed.features.catalog import HISTORY_LENGTH, TIMESTAMP
from newsfeed.index import FRESHNESS_HORIZON_DAYS
from newsfeed.models.encoding import Encoder
from newsfeed.models.layers import InputLayer, SequencePooling, id_tables, mlp
from newsfeed.models.training import Batch, weighted_mean

USER_VIEWS = ("user_profile", "user_engagement", "user_history")
POST_VIEWS = ("post_content",)
"""The views the towers' inputs come from (the ``two_tower`` feature service reads more)."""
USER_INPUTS = ["user_engagement__topic_interest", "user_engagement__topic_interest_7d",
               "user_engagement__topic_interest_rate",
               "user_history__recent_post_ids", "user_history__recent_author_ids"]
CREATED = "post_content__created_unix"
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
    # The score's terms, chosen together on the backtest (benchmarks/model_choices.py, Recall@500
    # on the serving corpus, seed 7): a per-post bias and the age penalty without the log-Q
    # correction beat the bare match with it, +0.038 [+0.020, +0.056].
    logq_correction: bool = False
    post_bias: bool = Field(True, description="add a per-post score from the post tower (one more index dimension)")
    recency: bool = Field(True, description="add a learned penalty per day of the post's age at the request "
                                            "(one more index dimension: the post's creation day)")
    time_origin_unix: float = Field(0.0, description="creation days count from here (the training data's end: the "
                                                     "index's values stay small)")
    history_length: int = Field(HISTORY_LENGTH, ge=1, description="places of the ordered history pooling (the "
                                                                  "newest that many items)")
    history_pooling: SequencePooling = Field(
        "mean", description="how the user tower pools the user's recent posts and authors (newest first): their "
                            "mean, a learned weight per place, or one self-attention layer over them")
    mixed_negatives: bool = Field(
        False, description="besides the batch's own posts, score each row against one post drawn uniformly from the "
                           "training posts (mixed negative sampling: the long tail, which in-batch negatives "
                           "rarely sample, is pushed down too)")


class TwoTower(nn.Module):
    def __init__(self, user_encoder: Encoder, post_encoder: Encoder, config: TwoTowerConfig):
        super().__init__()
        self.config = config
        self.user_encoder, self.post_encoder = user_encoder, post_encoder
        self.tables = id_tables([user_encoder, post_encoder], config.id_dim)
        self.user_input = InputLayer(user_encoder, self.tables, id_dropout=config.id_dropout,
                                     sequence_pooling=config.history_pooling, sequence_length=config.history_length)
        self.post_input = InputLayer(post_encoder, self.tables, id_dropout=config.id_dropout)
        self.user_mlp = mlp([self.user_input.out_dim, *config.hidden, config.embedding_dim], config.dropout, False)
        self.post_mlp = mlp([self.post_input.out_dim, *config.hidden, config.embedding_dim + config.post_bias],
                            config.dropout, False)
        self.age_rate = nn.Parameter(torch.zeros(())) if config.recency else None

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, config: TwoTowerConfig) -> "TwoTower":
        missing = [c for c in (*config.user_inputs, *config.post_inputs) if c not in frame.columns]
        if config.recency:
            missing += [c for c in (CREATED, TIMESTAMP) if c not in frame.columns]
            config = config.model_copy(update={"time_origin_unix": _unix(frame[TIMESTAMP]).max()})
        if missing:
            raise ValueError(f"the training frame lacks tower inputs {missing}: are they in the feature service?")
        user = Encoder.fit(frame, config.user_inputs, config.user_ids, config.id_buckets)
        post = Encoder.fit(frame, config.post_inputs, config.post_ids, config.id_buckets)
        return cls(user, post, config)

    @property
    def extended(self) -> bool:
        """Whether the index vectors carry more than the L2-normalised match (see the module's doc)."""
        return self.config.post_bias or self.config.recency

    @property
    def vector_dim(self) -> int:
        return self.config.embedding_dim + self.config.post_bias + self.config.recency

    def user_tower(self, batch: Batch) -> torch.Tensor:
        return F.normalize(self.user_mlp(self.user_input(batch)), dim=-1)

    def post_tower(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(L2-normalised post vectors, their bias or None)."""
        out = self.post_mlp(self.post_input(batch))
        d = self.config.embedding_dim
        return F.normalize(out[:, :d], dim=-1), (out[:, d] if self.config.post_bias else None)

    def user_embedding(self, batch: Batch) -> torch.Tensor:
        """The query vector: the user's match vector, and with the extra terms [u / temperature, 1, rate]."""
        u = self.user_tower(batch)
        if not self.extended:
            return u
        parts = [u / self.config.temperature]
        if self.config.post_bias:
            parts.append(torch.ones(len(u), 1))
        if self.config.recency:
            parts.append(self.age_rate.expand(len(u), 1))
        return torch.cat(parts, dim=1)

    def post_embedding(self, batch: Batch) -> torch.Tensor:
        """The indexed vector: the post's match vector, and with the extra terms [p, bias, created day]."""
        p, bias = self.post_tower(batch)
        if not self.extended:
            return p
        parts = [p]
        if bias is not None:
            parts.append(bias[:, None])
        if self.config.recency:
            parts.append(batch["created_days"][:, None])
        return torch.cat(parts, dim=1)

    def days(self, unix: np.ndarray) -> torch.Tensor:
        """Seconds since the epoch as days since the model's time origin."""
        return torch.from_numpy(((np.asarray(unix, np.float64) - self.config.time_origin_unix) / 86_400)
                                .astype(np.float32))

    @torch.no_grad()
    def embed_users(self, frame: pd.DataFrame, batch_size: int = 8192) -> np.ndarray:
        return self._embed(self.user_encoder, self.user_embedding, frame, batch_size)

    @torch.no_grad()
    def embed_posts(self, frame: pd.DataFrame, batch_size: int = 8192) -> np.ndarray:
        return self._embed(self.post_encoder, self.post_embedding, frame, batch_size)

    def _embed(self, encoder: Encoder, tower, frame: pd.DataFrame, batch_size: int) -> np.ndarray:
        self.eval()
        parts = []
        for i in range(0, len(frame), batch_size):
            rows = frame.iloc[i:i + batch_size]
            batch = encoder.transform(rows)
            if self.config.recency and encoder is self.post_encoder:
                batch["created_days"] = self.days(pd.to_numeric(rows[CREATED], errors="coerce").fillna(0))
            parts.append(tower(batch).numpy())
        return np.concatenate(parts) if parts else np.zeros((0, self.vector_dim), np.float32)


def training_batch(model: TwoTower, positives: pd.DataFrame, log_q: np.ndarray) -> Batch:
    """Tensors for positive (user, post) pairs: both towers' inputs, the post id (to mask
    in-batch duplicates) and each post's log sampling probability. With mixed negatives, each
    row also carries a post drawn uniformly from the distinct posts of ``positives`` (keys
    ``negative/...``), drawn with torch's seeded generator; every row of a minibatch is scored
    against all of them, as against the batch's own posts."""
    batch = {f"user/{k}": v for k, v in model.user_encoder.transform(positives).items()}
    batch.update(_post_tensors(model, positives, "post"))
    batch["post_id"] = torch.from_numpy(positives["post_id"].to_numpy(np.int64))
    batch["log_q"] = torch.from_numpy(log_q.astype(np.float32))
    if model.config.recency:  # when each request was
        batch["request_days"] = model.days(_unix(positives[TIMESTAMP]))
    if model.config.mixed_negatives:
        distinct = positives.drop_duplicates("post_id")
        drawn = distinct.iloc[torch.randint(len(distinct), (len(positives),)).numpy()]
        batch.update(_post_tensors(model, drawn, "negative"))
        batch["negative_post_id"] = torch.from_numpy(drawn["post_id"].to_numpy(np.int64))
        # A candidate's chance of being scored is now its in-batch share plus the uniform one.
        log_q_of = pd.Series(log_q, index=positives["post_id"].to_numpy()).groupby(level=0).first()
        mixed = lambda lq: np.logaddexp(lq, -np.log(len(distinct))).astype(np.float32)  # noqa: E731
        batch["log_q"] = torch.from_numpy(mixed(log_q))
        batch["negative_log_q"] = torch.from_numpy(mixed(log_q_of.reindex(drawn["post_id"].to_numpy()).to_numpy()))
    return batch


def _post_tensors(model: TwoTower, rows: pd.DataFrame, prefix: str) -> Batch:
    batch = {f"{prefix}/{k}": v for k, v in model.post_encoder.transform(rows).items()}
    if model.config.recency:  # when each post appeared
        batch[f"{prefix}/created_days"] = model.days(pd.to_numeric(rows[CREATED], errors="coerce").fillna(0))
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
    first = torch.from_numpy(first)
    posts = model.post_embedding(tower_inputs(batch, "post", first))
    scores = users @ posts.T
    if model.config.recency:  # only what serving could return: published by then, within the horizon
        age = batch["request_days"][:, None] - batch["post/created_days"][first][None, :]
        scores = scores.masked_fill((age < 0) | (age > FRESHNESS_HORIZON_DAYS), float("-inf"))
    target = torch.from_numpy(target.reshape(-1))
    rank = (scores > scores.gather(1, target[:, None])).sum(dim=1)
    return float((rank < k).float().mean())


def in_batch_loss(model: TwoTower, batch: Batch) -> torch.Tensor:
    """Softmax over the batch's posts (row i's own post is its positive, on the diagonal),
    and with mixed negatives over the uniformly drawn posts too."""
    users = model.user_tower(tower_inputs(batch, "user"))
    logits, excluded = _candidate_logits(model, batch, users, "post", batch["post_id"], batch["log_q"])
    excluded.fill_diagonal_(False)  # the positive itself was there to be chosen (whatever its clock says)
    logits = [logits.masked_fill(excluded, float("-inf"))]
    if model.config.mixed_negatives:
        drawn, excluded = _candidate_logits(model, batch, users, "negative", batch["negative_post_id"],
                                            batch["negative_log_q"])
        logits.append(drawn.masked_fill(excluded, float("-inf")))
    logits = torch.cat(logits, dim=1)
    return weighted_mean(F.cross_entropy(logits, torch.arange(len(logits)), reduction="none"), batch)


def _candidate_logits(model: TwoTower, batch: Batch, users: torch.Tensor, tower: str, post_ids: torch.Tensor,
                      log_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, excluded): every row's training logit for each of ``tower``'s posts, and which
    are no negative of the row: a post published after the request (not there to be chosen)
    and the row's own post (another user's positive twice in a batch)."""
    posts, bias = model.post_tower(tower_inputs(batch, tower))
    logits = users @ posts.T / model.config.temperature
    if bias is not None:
        logits = logits + bias[None, :]
    excluded = batch["post_id"][:, None] == post_ids[None, :]
    if model.config.recency:
        age = batch["request_days"][:, None] - batch[f"{tower}/created_days"][None, :]
        logits = logits - model.age_rate * age
        excluded |= age < 0
    if model.config.logq_correction:
        logits = logits - log_q[None, :]
    return logits, excluded


def _unix(timestamps) -> np.ndarray:
    return pd.to_datetime(pd.Series(timestamps), utc=True).astype("datetime64[ns, UTC]").array.asi8 / 1e9
