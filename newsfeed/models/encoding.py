"""Feature frames (Feast's ``view__feature`` columns) to model tensors.

Which columns a model reads, and how, follows from the feature catalog's types:
strings and a few small integer codes become categories, int64 lists become bags
of hashed ids, float lists stay vectors, everything else is numeric (log-scaled
when heavy-tailed, then standardised). Entity ids become hashed id embeddings so
a model can memorise popular posts and authors while content carries new ones.
The fitted encoder (vocabularies, scales) is plain JSON saved with each model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import torch

from newsfeed.features import catalog, hashing

CATEGORICAL_CODES = {"age_bucket", "topic_id", "post_age_bucket"}
"""Integer columns that are codes, not quantities."""
SKIPPED = {"topic", "created_unix", "mentions", "friends_since_unix", "written_by"}
"""Covered by another input: topic_id, post_age_bucket, user_mentioned, friendship_days, the author id."""
REQUEST_FEATURES = {"post_age_bucket": "int64", "post_age_hours": "float32", "user_mentioned": "int64",
                    "friendship_days": "float32", "topic_affinity": "float32", "topic_affinity_7d": "float32",
                    "topic_affinity_rate": "float32"}
ID_BAGS = {"recent_post_ids": "post_id", "recent_author_ids": "author_id"}
"""List columns of entity ids, embedded with that entity's id table."""
MISSING = "<missing>"


def column_type(name: str) -> str:
    """The catalog type of a full feature name (``view__feature``) or an entity key."""
    view, _, feature = name.partition("__")
    if view == "request_features":
        return REQUEST_FEATURES[feature]
    return catalog.TABLES[view].columns[feature]


@dataclass
class Encoder:
    """What a model reads from a feature frame and how, fitted on training rows."""

    numeric: list[str] = field(default_factory=list)
    log_scaled: list[str] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    categories: dict[str, list[str]] = field(default_factory=dict)  # index 0: unseen / missing
    vectors: dict[str, int] = field(default_factory=dict)  # column -> length
    bags: dict[str, str] = field(default_factory=dict)  # column -> id table ("hashtag" or an entity key)
    ids: list[str] = field(default_factory=list)  # entity keys embedded by hashed id
    id_buckets: int = 1 << 15

    @classmethod
    def fit(cls, frame: pd.DataFrame, columns: list[str], ids: list[str], id_buckets: int = 1 << 15) -> "Encoder":
        enc = cls(ids=list(ids), id_buckets=id_buckets)
        for name in columns:
            feature = name.partition("__")[2]
            kind = column_type(name)
            if feature in SKIPPED:
                continue
            if kind == "string" or feature in CATEGORICAL_CODES:
                values = frame[name].dropna().astype(str).unique()
                enc.categories[name] = [MISSING, *sorted(values)]
            elif kind == "float32_list":
                lengths = frame[name].dropna().map(len)
                enc.vectors[name] = int(lengths.max()) if len(lengths) else 0
            elif kind == "int64_list":
                enc.bags[name] = ID_BAGS.get(feature, "hashtag")
            else:
                enc.numeric.append(name)
        raw = _numeric(frame, enc.numeric)
        heavy = np.nanmax(np.abs(raw), axis=0, initial=0) > 20 if len(raw) else np.zeros(0, bool)
        enc.log_scaled = [c for c, h in zip(enc.numeric, heavy) if h]
        if len(raw):
            scaled = enc._scale_raw(raw)
            # An all-missing column gets mean 0, std 1: it then encodes as 0 like any missing value.
            enc.mean = np.nan_to_num(np.nanmean(scaled, axis=0), nan=0.0).tolist()
            enc.std = np.nan_to_num(np.nanstd(scaled, axis=0), nan=1.0).clip(1e-6).tolist()
        return enc

    def _scale_raw(self, raw: np.ndarray, columns: list[str] | None = None) -> np.ndarray:
        """A float64 copy of ``raw`` (columns: ``columns``, default all numeric ones), log-scaled
        where fitted so; changed in place after, since per request it spans thousands of rows."""
        logged = [i for i, c in enumerate(self.numeric if columns is None else columns) if c in self._log_scaled]
        out = np.array(raw, np.float64)
        if logged:
            out[:, logged] = np.sign(out[:, logged]) * np.log1p(np.abs(out[:, logged]))
        return out

    @property
    def numeric_dim(self) -> int:
        return len(self.numeric)

    @property
    def vector_dim(self) -> int:
        return sum(self.vectors.values())

    def transform(self, frame: pd.DataFrame) -> dict[str, torch.Tensor]:
        """Tensors for ``frame``: numeric (n, d) standardised with missing as the mean, categorical
        codes (n, c), vectors (n, v), one padded id matrix per bag, one hashed id per entity key."""
        n = len(frame)
        missing = [c for c in (*self.numeric, *self.categories, *self.vectors, *self.bags, *self.ids)
                   if c not in frame.columns]
        if missing:
            raise KeyError(f"feature frame lacks columns the model reads: {missing[:5]}{'...' if len(missing) > 5 else ''}")
        numeric = (self._scale_raw(_numeric(frame, self.numeric)) - np.array(self.mean)) / np.array(self.std)
        out = {"numeric": torch.from_numpy(np.nan_to_num(numeric, nan=0.0).astype(np.float32))}
        codes = np.zeros((n, len(self.categories)), np.int64)
        for j, (name, vocab) in enumerate(self.categories.items()):
            index = pd.Index(vocab).get_indexer(frame[name].astype(str).where(frame[name].notna(), MISSING))
            codes[:, j] = np.where(index < 0, 0, index)
        out["categorical"] = torch.from_numpy(codes)
        out["vectors"] = torch.from_numpy(np.concatenate(
            [_stack(frame[name], dim) for name, dim in self.vectors.items()], axis=1)
            if self.vectors else np.zeros((n, 0), np.float32))
        for name, table in self.bags.items():
            out[f"bag:{name}"] = torch.from_numpy(_pad(frame[name], self.id_buckets if table != "hashtag" else None))
        for key in self.ids:
            out[f"id:{key}"] = torch.from_numpy(hash_ids(frame[key].to_numpy(), self.id_buckets))
        return out

    def transform_one(self, values: dict) -> dict[str, torch.Tensor]:
        """``transform`` of a single row given as ``{column: value}`` (a missing key: a missing
        value), without a DataFrame: what a request encodes for its one user (~20x faster)."""
        raw = np.array([[_float(values.get(c)) for c in self.numeric]], np.float64)
        out = {"numeric": torch.from_numpy(self.standardise(self.numeric, raw).astype(np.float32))}
        codes = [self.code(name, values.get(name)) for name in self.categories]
        out["categorical"] = torch.tensor([codes], dtype=torch.int64).reshape(1, len(self.categories))
        vectors = [np.asarray(v, np.float32) if v is not None and len(v) == dim else np.zeros(dim, np.float32)
                   for v, dim in ((values.get(name), dim) for name, dim in self.vectors.items())]
        out["vectors"] = torch.from_numpy(np.concatenate(vectors)[None, :] if vectors else np.zeros((1, 0), np.float32))
        for name, table in self.bags.items():
            out[f"bag:{name}"] = torch.from_numpy(_pad_one(values.get(name), self.id_buckets if table != "hashtag"
                                                           else None))
        for key in self.ids:
            value = values.get(key)
            ids = np.array([value], np.int64) if isinstance(value, (int, np.integer)) else np.array([_float(value)])
            out[f"id:{key}"] = torch.from_numpy(hash_ids(ids, self.id_buckets))
        return out

    def standardise(self, columns: list[str], raw: np.ndarray) -> np.ndarray:
        """Raw values of some numeric columns, (n, len(columns)), as the model reads them:
        log-scaled where fitted so, standardised, missing as 0."""
        at = [self._numeric_at[c] for c in columns]
        out = self._scale_raw(raw, columns)
        out -= np.asarray(self.mean)[at]
        out /= np.asarray(self.std)[at]
        return np.nan_to_num(out, copy=False, nan=0.0)

    def code(self, column: str, value) -> int:
        """A category's index as ``transform`` finds it: by its string form, ``MISSING`` when
        null, 0 when unseen."""
        missing = value is None or (isinstance(value, (float, np.floating)) and np.isnan(value))
        return self._codes[column].get(MISSING if missing else str(value), 0)

    def codes(self, column: str, values, n: int) -> np.ndarray:
        """``code`` for ``n`` rows (``values``: one per row, or None: all missing)."""
        if values is None:
            return np.full(n, self.code(column, None), np.int64)
        index, uniques = pd.factorize(np.asarray(values).reshape(-1))  # a handful of values per request; -1: missing
        mapped = np.array([*(self.code(column, u) for u in uniques.tolist()), self.code(column, None)], np.int64)
        return mapped[np.where(index < 0, len(uniques), index)]

    @cached_property
    def _log_scaled(self) -> frozenset[str]:
        return frozenset(self.log_scaled)

    @cached_property
    def _numeric_at(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.numeric)}

    @cached_property
    def _codes(self) -> dict[str, dict[str, int]]:
        return {c: {v: i for i, v in enumerate(vocab)} for c, vocab in self.categories.items()}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Encoder":
        return cls(**data)


def hash_ids(ids: np.ndarray, buckets: int) -> np.ndarray:
    """Entity ids to embedding rows 1..buckets-1 (0 is padding / unknown), by a stable
    multiplicative hash so consecutive ids spread out."""
    ids = np.asarray(ids)
    if ids.dtype.kind in "iu":  # already numbers: no pandas (the request path hashes a few per call)
        values = ids.astype(np.int64)
    elif ids.dtype.kind == "f":
        values = np.where(np.isfinite(ids), ids, -1).astype(np.int64)
    else:
        values = pd.to_numeric(pd.Series(ids), errors="coerce").fillna(-1).to_numpy(np.int64)
    hashed = (values.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(33)
    return np.where(values < 0, 0, 1 + (hashed % np.uint64(buckets - 1)).astype(np.int64))


def _numeric(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    if not columns:
        return np.zeros((len(frame), 0))
    return np.column_stack([pd.to_numeric(frame[c], errors="coerce").to_numpy(np.float64) for c in columns])


def _float(value) -> float:
    """A numeric cell as ``pd.to_numeric(errors="coerce")`` reads it: NaN for missing or not a number."""
    try:
        return float(value) if value is not None else np.nan
    except (TypeError, ValueError):
        return np.nan


def _pad_one(value, id_buckets: int | None) -> np.ndarray:
    """``_pad`` of one list: a (1, len) matrix of embedding rows, (1, 1) of padding when empty."""
    ids = np.asarray(value if value is not None else [], np.int64)
    if not len(ids):
        return np.zeros((1, 1), np.int64)
    rows = hash_ids(ids, id_buckets) if id_buckets else np.clip(ids, 0, hashing.HASHTAG_BUCKETS - 1) + 1
    return rows[None, :]


def _stack(values: pd.Series, dim: int) -> np.ndarray:
    out = np.zeros((len(values), dim), np.float32)
    for i, v in enumerate(values.to_numpy()):
        if v is not None and len(v) == dim:
            out[i] = v
    return out


def _pad(values: pd.Series, id_buckets: int | None) -> np.ndarray:
    """Lists to a (n, longest) matrix of embedding rows, 0 = padding. Hashtag buckets shift
    by one; entity ids are hashed like the id embeddings they share."""
    lists = [v if v is not None and len(v) else [] for v in values.to_numpy()]
    width = max((len(v) for v in lists), default=0) or 1
    out = np.zeros((len(lists), width), np.int64)
    lengths = np.fromiter((len(v) for v in lists), np.int64, len(lists))
    if lengths.sum():
        flat = np.concatenate([np.asarray(v, np.int64) for v in lists if len(v)])
        flat = hash_ids(flat, id_buckets) if id_buckets else np.clip(flat, 0, hashing.HASHTAG_BUCKETS - 1) + 1
        rows = np.repeat(np.arange(len(lists)), lengths)
        cols = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        out[rows, cols] = flat
    return out
