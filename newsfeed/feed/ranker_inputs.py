"""The ranker's inputs for one user and hundreds of candidates, without a DataFrame per
request.

``Encoder.transform`` reads a frame column by column; per request that costs milliseconds.
Here the post columns are encoded once for the whole corpus (when a replica loads a ranker:
``RankerInputs.base``), the user's columns once per request (``Encoder.transform_one``), and
only the user-post pair columns (affinity, request-time features) per candidate, with the
encoder's own vocabularies and scales (``Encoder.standardise``, ``Encoder.codes``).
``tests/test_feed.py`` checks the served heads equal the model's on Feast's own frame.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pandas as pd

from newsfeed.features.request_time import AFFINITIES, derive
from newsfeed.models.encoding import Encoder

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

    def extended(self, more: "RankerInputs") -> "RankerInputs":
        """These inputs with ``more``'s rows appended (the same encoder)."""
        out = copy.copy(self)
        out.base = {k: _stack(v, more.base[k]) for k, v in self.base.items()}
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
    return {**values, **{f"request_features__{c}": v for c, v in request.items()}}
