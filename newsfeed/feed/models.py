"""Registered models as the feed uses them: the two-tower with its index and the corpus's
post vectors, the ranker with its weight table and its prepared inputs.

Both hold data per corpus row, and both grow with the corpus (``extend``, called under the
corpus's lock before it publishes the new rows): what a request reads is replaced whole
(a new array, a new index, a new prepared pair), never changed in place, so a request that
holds the old one finishes on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from newsfeed.feed.corpus import PostCorpus
from newsfeed.feed.distilled import DistilledPreRanker, StudentNet
from newsfeed.feed.fast_ranker import FastRanker
from newsfeed.feed.ranker_inputs import RankerInputs
from newsfeed.index import PostIndex
from newsfeed.models.ranker import HEADS, MultiTaskRanker
from newsfeed.models.two_tower import TwoTower


@dataclass
class RetrievalModel:
    version: str
    model: TwoTower
    index: PostIndex
    post_vectors: np.ndarray  # per corpus row

    @classmethod
    def prepare(cls, version: str, model: TwoTower, index: PostIndex, corpus: PostCorpus) -> "RetrievalModel":
        """Embeds the corpus (for pre-ranking) and adds to the index the posts published since
        it was built, embedded by the same version."""
        model.eval()
        vectors = model.embed_posts(corpus.frame).astype(np.float32)
        missing = ~np.isin(corpus.post_ids, index.ids())
        if missing.any():
            index.add(vectors[missing], corpus.post_ids[missing])
        return cls(version, model, index, vectors)

    def on(self, corpus: PostCorpus) -> "RetrievalModel":
        """This version over another corpus (the window after old posts left): its posts
        embedded again and an index of its own built from them (the old one holds the
        posts that left)."""
        vectors = self.model.embed_posts(corpus.frame).astype(np.float32)
        index = PostIndex.build(vectors, corpus.post_ids, kind=self.index.kind) if len(vectors) else self.index
        return RetrievalModel(self.version, self.model, index, vectors)

    def extend(self, frame: pd.DataFrame) -> None:
        """Posts appended to the corpus (``frame``: their rows, in order), embedded by this
        version's post tower and added to its index by id, without a rebuild."""
        vectors = self.model.embed_posts(frame).astype(np.float32)
        self.index = self.index.with_added(vectors, frame["post_id"].to_numpy(np.int64))
        self.post_vectors = np.concatenate([self.post_vectors, vectors])

    def user_vector(self, user_id: int, features: dict) -> np.ndarray:
        """The user tower on one request's features (one row encoded without a DataFrame)."""
        batch = self.model.user_encoder.transform_one({**features, "user_id": int(user_id)})
        with torch.no_grad():
            return self.model.user_embedding(batch)[0].numpy()


class Prepared(NamedTuple):
    """The ranker's inputs over a corpus, its split forward pass, and its distilled pre-ranker
    (None: the version has none): what a request reads, replaced together."""

    inputs: RankerInputs
    fast: FastRanker
    prerank: DistilledPreRanker | None


@dataclass
class RankingModel:
    version: str
    model: MultiTaskRanker
    weights: dict[str, float]  # the registered table
    student: StudentNet | None  # the distilled pre-ranker registered with this version
    prepared: Prepared | None = None  # replaced whole when the corpus's values change
    student_error: str | None = None  # why the version's pre-ranker could not be loaded (None: it was, or it has none)

    @classmethod
    def prepare(cls, version: str, model: MultiTaskRanker, weights: dict[str, float] | None,
                corpus: PostCorpus, student: StudentNet | None = None,
                student_error: str | None = None) -> "RankingModel":
        from newsfeed.scoring import load_weights

        ranking = cls(version, model, weights or load_weights(), student, student_error=student_error)
        ranking.encode_corpus(corpus.frame)
        return ranking

    def encode_corpus(self, frame: pd.DataFrame) -> None:
        """Encode the corpus's post side (again, when its values changed: live counters)."""
        self.prepared = self._prepared(frame, self.student)

    def add_student(self, student: StudentNet, frame: pd.DataFrame) -> None:
        """The version's pre-ranker, found after the version was loaded, joins it: prepared
        first, so a student that does not fit raises and leaves the version as it was."""
        prepared = self._prepared(frame, student)
        self.student, self.student_error, self.prepared = student, None, prepared

    def _prepared(self, frame: pd.DataFrame, student: StudentNet | None) -> Prepared:
        inputs = RankerInputs(self.model.encoder, frame)
        fast = FastRanker(self.model, inputs)
        return Prepared(inputs, fast, DistilledPreRanker(student, fast) if student else None)

    def on(self, corpus: PostCorpus) -> "RankingModel":
        """This version over another corpus (see ``RetrievalModel.on``)."""
        return RankingModel.prepare(self.version, self.model, self.weights, corpus, self.student, self.student_error)

    def extend(self, frame: pd.DataFrame) -> None:
        """Posts appended to the corpus: only their rows are encoded."""
        inputs, fast, prerank = self.prepared
        more = RankerInputs(self.model.encoder, frame)
        fast = fast.extended(more)
        self.prepared = Prepared(inputs.extended(more), fast, prerank.extended(fast) if prerank else None)

    def heads(self, rows: np.ndarray, user: dict, pair: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """P(reaction) per head at position 0 (relevance alone), ``p_<head>`` -> per row."""
        probabilities = self.prepared.fast.probabilities(rows, user, pair)
        return {f"p_{h}": probabilities[:, i] for i, h in enumerate(HEADS)}
