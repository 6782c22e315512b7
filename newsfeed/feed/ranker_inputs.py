"""The ranker's input tensors for one user and hundreds of candidates, without a DataFrame
per request.

``Encoder.transform`` reads a frame column by column; per request that costs milliseconds.
Here the post columns are encoded once for the whole corpus (when a replica loads a ranker),
the user's columns once per request (one row, broadcast), and only the user-post pair
columns (affinity, request-time features) per candidate, with the encoder's own
vocabularies and scales. ``tests/test_feed.py`` checks the result equals
``Encoder.transform`` on the same rows.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from newsfeed.features import hashing
from newsfeed.features.request_time import AFFINITIES, derive
from newsfeed.models.encoding import MISSING, Encoder, hash_ids

USER_VIEWS = ("user_profile", "user_engagement", "user_history")
PAIR_VIEWS = ("user_author_affinity", "request_features")
AFFINITY = "user_author_affinity"


def view_of(column: str) -> str:
    return column.partition("__")[0]


@dataclass
class Affinity:
    """One user's affinity rows: author ids (sorted) and a value per affinity column."""

    authors: np.ndarray
    values: dict[str, np.ndarray]  # full column name -> per author

    def lookup(self, authors: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(found mask, column -> value per author, NaN where the pair has no row)."""
        if not len(self.authors):
            return np.zeros(len(authors), bool), {}
        at = np.searchsorted(self.authors, authors).clip(0, len(self.authors) - 1)
        found = self.authors[at] == authors
        return found, {c: np.where(found, v[at], np.nan) for c, v in self.values.items()}


def affinity_tables(latest: pd.DataFrame) -> dict[int, Affinity]:
    """user -> Affinity, from the affinity view's latest row per (user, author)."""
    columns = [c for c in latest.columns if c not in ("user_id", "author_id", "event_timestamp")]
    latest = latest.sort_values(["user_id", "author_id"], kind="stable")
    users = latest["user_id"].to_numpy(np.int64)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(users)]
    authors = latest["author_id"].to_numpy(np.int64)
    values = {c: pd.to_numeric(latest[c], errors="coerce").to_numpy(np.float64) for c in columns}
    return {int(users[s]): Affinity(authors[s:e], {f"{AFFINITY}__{c}": v[s:e] for c, v in values.items()})
            for s, e in zip(starts, ends)}


class RankerInputs:
    def __init__(self, encoder: Encoder, corpus_frame: pd.DataFrame):
        self.encoder = encoder
        columns = [*encoder.numeric, *encoder.categories, *encoder.vectors, *encoder.bags]
        self.side = {c: "user" if view_of(c) in USER_VIEWS else "pair" if view_of(c) in PAIR_VIEWS else "post"
                     for c in columns}
        missing = {c: None for c in columns if self.side[c] != "post" or c not in corpus_frame}
        base = encoder.transform(corpus_frame.assign(**missing))
        self.base = {k: v.numpy() for k, v in base.items()}
        self.numeric_at = {c: i for i, c in enumerate(encoder.numeric)}
        self.log_scaled = set(encoder.log_scaled)
        self.category_at = {c: i for i, c in enumerate(encoder.categories)}
        self.vocab = {c: {v: i for i, v in enumerate(vocab)} for c, vocab in encoder.categories.items()}
        offsets = np.cumsum([0, *encoder.vectors.values()])
        self.vector_at = {c: slice(int(a), int(b)) for c, a, b in zip(encoder.vectors, offsets[:-1], offsets[1:])}

    def extended(self, more: "RankerInputs") -> "RankerInputs":
        """These inputs with ``more``'s rows appended (the same encoder)."""
        out = copy.copy(self)
        out.base = {k: _stack(v, more.base[k]) for k, v in self.base.items()}
        return out

    def _numeric(self, column: str, raw: np.ndarray) -> np.ndarray:
        i = self.numeric_at[column]
        raw = np.asarray(raw, np.float64)
        scaled = np.sign(raw) * np.log1p(np.abs(raw)) if column in self.log_scaled else raw
        return np.nan_to_num((scaled - self.encoder.mean[i]) / self.encoder.std[i], nan=0.0)

    def _category(self, column: str, value) -> int:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return self.vocab[column].get(MISSING, 0)
        return self.vocab[column].get(str(value), 0)

    def batch(self, rows: np.ndarray, user: dict, pair: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Tensors for the corpus ``rows``: ``user`` maps the user's columns to one value each,
        ``pair`` the pair columns to one value per row (see ``pair_values``)."""
        n = len(rows)
        numeric = self.base["numeric"][rows]
        categorical = self.base["categorical"][rows]
        vectors = self.base["vectors"][rows]
        for column, side in self.side.items():
            if side == "post":
                continue
            value = user.get(column) if side == "user" else pair.get(column)
            if column in self.numeric_at:
                raw = np.nan if value is None else value
                numeric[:, self.numeric_at[column]] = self._numeric(column, np.broadcast_to(raw, (n,)).astype(
                    np.float64))
            elif column in self.category_at:
                codes = ([self._category(column, value)] * n if side == "user"
                         else [self._category(column, v) for v in np.asarray(value).tolist()])
                categorical[:, self.category_at[column]] = codes
            elif column in self.vector_at:
                width = self.vector_at[column].stop - self.vector_at[column].start
                vector = np.asarray(value, np.float32) if value is not None else np.zeros(0, np.float32)
                vectors[:, self.vector_at[column]] = vector if len(vector) == width else 0.0
        out = {"numeric": torch.from_numpy(numeric.astype(np.float32)), "categorical": torch.from_numpy(categorical),
               "vectors": torch.from_numpy(vectors)}
        for column, table in self.encoder.bags.items():
            if self.side[column] == "post":
                out[f"bag:{column}"] = torch.from_numpy(self.base[f"bag:{column}"][rows])
                continue
            ids = np.asarray(user.get(column) if user.get(column) is not None else [], np.int64)
            encoded = (hash_ids(ids, self.encoder.id_buckets) if table != "hashtag"
                       else np.clip(ids, 0, hashing.HASHTAG_BUCKETS - 1) + 1) if len(ids) else np.zeros(1, np.int64)
            out[f"bag:{column}"] = torch.from_numpy(np.ascontiguousarray(np.broadcast_to(encoded, (n, len(encoded)))))
        for key in self.encoder.ids:
            out[f"id:{key}"] = torch.from_numpy(self.base[f"id:{key}"][rows])
        return out


def _stack(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rows of ``a`` then ``b``; padded id matrices (bags) widened with 0, the padding id."""
    if a.ndim == 2 and a.shape[1] != b.shape[1] and a.dtype == np.int64:
        width = max(a.shape[1], b.shape[1])
        a, b = (np.pad(x, ((0, 0), (0, width - x.shape[1]))) for x in (a, b))
    return np.concatenate([a, b])


def pair_values(now_unix: float, user_id: int, user: dict, affinity: Affinity | None, authors: np.ndarray,
                created_unix: np.ndarray, topic_ids: np.ndarray, mentioned: np.ndarray) -> dict[str, np.ndarray]:
    """The pair columns for one user and candidates (their authors, creation times, topics,
    and whether each mentions the user): affinity rows and the request-time features."""
    found, values = affinity.lookup(authors) if affinity is not None else (np.zeros(len(authors), bool), {})
    since = values.get(f"{AFFINITY}__friends_since_unix")
    since = np.where(found, np.nan_to_num(since, nan=-1.0), -1.0) if since is not None else np.full(len(authors), -1.0)
    topics = np.asarray(topic_ids, np.int64)

    def interest(name: str) -> np.ndarray:
        vector = user.get(f"user_engagement__{name}")
        vector = np.asarray(vector, np.float32) if vector is not None else np.zeros(0, np.float32)
        inside = (topics >= 0) & (topics < len(vector))
        return np.where(inside, vector[np.where(inside, topics, 0)] if len(vector) else 0.0, 0.0)

    request = derive(np.full(len(authors), float(now_unix)), np.asarray(created_unix, np.float64), since, mentioned,
                     {name: interest(column) for name, column in AFFINITIES.items()})
    return {**values, **{f"request_features__{c}": request[c].to_numpy() for c in request.columns}}
