"""The FAISS index of post embeddings.

The type follows the size: exact inner-product search up to ``EXACT_LIMIT`` posts
(~1 ms per query at 100k x 64), HNSW beyond. The inner product is the two-tower's score:
the cosine of the L2-normalised match vectors, plus (by default) the post's bias and its
age penalty, carried as two more dimensions (see newsfeed.models.two_tower). Ids are post
ids (an id map), so new posts are added with ``add`` without a retrain or a rebuild.
HNSW's ``efSearch`` is kept >= k: FAISS does not raise it, and recall collapses when k
exceeds it.
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np

EXACT_LIMIT = 100_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
FRESHNESS_HORIZON_DAYS = 3.0
"""The oldest post the ANN source offers, at request time: older posts are no news. The
index holds every post; serving leaves out the older ones, and the retrieval evaluation
searches the same corpus (on the demo data 90% of what users engage with is younger)."""


class PostIndex:
    def __init__(self, index: faiss.Index, kind: str, dim: int):
        self.index, self.kind, self.dim = index, kind, dim

    @classmethod
    def build(cls, embeddings: np.ndarray, post_ids: np.ndarray, kind: str = "auto") -> "PostIndex":
        embeddings = np.ascontiguousarray(embeddings, np.float32)
        if embeddings.ndim != 2 or len(embeddings) != len(post_ids):
            raise ValueError(f"embeddings {embeddings.shape} and {len(post_ids)} post ids do not match")
        dim = embeddings.shape[1]
        if kind == "auto":
            kind = "flat" if len(embeddings) <= EXACT_LIMIT else "hnsw"
        if kind == "flat":
            inner = faiss.IndexFlatIP(dim)
        elif kind == "hnsw":
            inner = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            inner.hnsw.efSearch = HNSW_EF_SEARCH
        else:
            raise ValueError(f"unknown index kind {kind!r}: auto, flat or hnsw")
        index = cls(faiss.IndexIDMap2(inner), kind, dim)
        index.add(embeddings, post_ids)
        return index

    @property
    def size(self) -> int:
        return self.index.ntotal

    def add(self, embeddings: np.ndarray, post_ids: np.ndarray) -> None:
        """Add posts (e.g. published since the build), embedded by the same model version."""
        embeddings = np.ascontiguousarray(embeddings, np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise ValueError(f"expected embeddings of dimension {self.dim}, got shape {embeddings.shape}")
        self.index.add_with_ids(embeddings, np.asarray(post_ids, np.int64))

    def with_added(self, embeddings: np.ndarray, post_ids: np.ndarray) -> "PostIndex":
        """A copy holding these posts too: searches running on this index meanwhile are never
        raced by a write (FAISS indexes are not safe to add to while searched)."""
        copy = PostIndex(faiss.clone_index(self.index), self.kind, self.dim)
        copy.add(embeddings, post_ids)
        return copy

    def search(self, queries: np.ndarray, k: int, among: "IdFilter | None" = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, post ids) of the k nearest posts per query row; id -1 where fewer exist.
        ``among``: search only those posts (serving's freshness horizon)."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
        ef = max(k, HNSW_EF_SEARCH)
        if among is not None:
            params = (faiss.SearchParametersHNSW(sel=among.selector, efSearch=ef) if self.kind == "hnsw"
                      else faiss.SearchParameters(sel=among.selector))
            return self.index.search(queries, k, params=params)
        if self.kind == "hnsw":
            faiss.downcast_index(self.index.index).hnsw.efSearch = ef
        return self.index.search(queries, k)

    def ids(self) -> np.ndarray:
        """The post ids the index holds."""
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def save(self, folder: Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(folder / "posts.faiss"))
        (folder / "index.json").write_text(json.dumps({"kind": self.kind, "dim": self.dim, "size": self.size}))
        return folder

    @classmethod
    def load(cls, folder: Path) -> "PostIndex":
        folder = Path(folder)
        meta = json.loads((folder / "index.json").read_text())
        return cls(faiss.read_index(str(folder / "posts.faiss")), meta["kind"], meta["dim"])


class IdFilter:
    """A set of post ids a search is restricted to (built once, reused by every request)."""

    def __init__(self, post_ids: np.ndarray):
        self.post_ids = np.ascontiguousarray(post_ids, np.int64)  # FAISS keeps a pointer: keep the array alive
        self.selector = faiss.IDSelectorBatch(self.post_ids)


def recall_against_exact(index: PostIndex, embeddings: np.ndarray, post_ids: np.ndarray, queries: np.ndarray,
                         k: int = 100) -> float:
    """Share of the exact top-k neighbours the index returns (1.0 for a flat index)."""
    exact = PostIndex.build(embeddings, post_ids, kind="flat")
    _, truth = exact.search(queries, k)
    _, found = index.search(queries, k)
    hits = [len(np.intersect1d(t[t >= 0], f[f >= 0])) / max((t >= 0).sum(), 1) for t, f in zip(truth, found)]
    return float(np.mean(hits))
