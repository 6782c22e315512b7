"""What flows through the feed pipeline: the request, the user as serving knows them, the
candidates (one numpy array per field, so every stage is vectorised), per-stage timings
and the degradations a response must own up to."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SOURCES: tuple[str, ...] = ("ann", "in_network", "fresh", "popular", "new_comments")
"""Candidate sources, by code (a candidate remembers the first source that offered it)."""


@dataclass
class FeedRequest:
    user_id: int
    limit: int = 20
    now_unix: float = 0.0
    request_id: str = ""
    exclude: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # earlier pages' posts
    context: dict = field(default_factory=dict)
    explain: bool = False  # the response lists each source's candidates (debugging a feed)


@dataclass
class UserView:
    """The user at request time: online features (one row, ``view__feature`` keys), what they
    saw, hid and blocked, and their friends. ``known`` is False for a user the store lacks."""

    user_id: int
    known: bool = True
    features: dict = field(default_factory=dict)
    seen: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    hidden: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    blocked_authors: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    friends: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    close_friends: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    new_comments: dict = field(default_factory=dict)  # seen post -> who commented since the user saw it
    embedding: np.ndarray | None = None  # the two-tower user vector, once computed


@dataclass
class Candidates:
    """Parallel arrays, one entry per candidate post. ``rows`` index the replica's corpus."""

    rows: np.ndarray
    post_ids: np.ndarray
    sources: np.ndarray  # codes into SOURCES
    retrieval_score: np.ndarray  # two-tower similarity (NaN until pre-ranking computes it)
    score: np.ndarray  # engagement score (NaN until ranking)
    show_probability: np.ndarray  # of being shown where it is; 1 unless exploration sampled

    @classmethod
    def empty(cls) -> "Candidates":
        return cls(*(np.zeros(0, t) for t in (np.int64, np.int64, np.int8, np.float32, np.float64, np.float64)))

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def joined(cls, parts: list["Candidates"]) -> "Candidates":
        """One after another, in order."""
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__))

    def take(self, index: np.ndarray) -> "Candidates":
        """The candidates at ``index`` (a boolean mask or positions, in that order)."""
        return Candidates(*(getattr(self, f)[index] for f in self.__dataclass_fields__))

    def extend(self, rows: np.ndarray, post_ids: np.ndarray, source: str, retrieval_score=None) -> int:
        """Add the posts not already here, remembering ``source``; return how many were new."""
        new = ~np.isin(post_ids, self.post_ids)
        _, first = np.unique(post_ids, return_index=True)  # a source may repeat itself
        repeated = np.ones(len(post_ids), bool)
        repeated[first] = False
        new &= ~repeated
        n = int(new.sum())
        score = np.full(len(post_ids), np.nan, np.float32) if retrieval_score is None else retrieval_score
        self.rows = np.concatenate([self.rows, rows[new]])
        self.post_ids = np.concatenate([self.post_ids, post_ids[new]])
        self.sources = np.concatenate([self.sources, np.full(n, SOURCES.index(source), np.int8)])
        self.retrieval_score = np.concatenate([self.retrieval_score, np.asarray(score, np.float32)[new]])
        self.score = np.concatenate([self.score, np.full(n, np.nan)])
        self.show_probability = np.concatenate([self.show_probability, np.ones(n)])
        return n

    def on(self, corpus) -> "Candidates":
        """The same candidates in ``corpus``'s rows (another replica's corpus numbers posts in
        the order it received them); a post it does not hold yet is left out."""
        rows = corpus.rows_of(self.post_ids)
        held = self.take(rows >= 0)
        held.rows = rows[rows >= 0]
        return held

    def source_names(self) -> list[str]:
        return [SOURCES[c] for c in self.sources]


@dataclass
class FeedContext:
    request: FeedRequest
    user: UserView
    arm: str = ""
    model_versions: dict[str, str] = field(default_factory=dict)
    candidates: Candidates = field(default_factory=Candidates.empty)
    timings_ms: dict[str, float] = field(default_factory=dict)
    degraded: list[str] = field(default_factory=list)  # "stage: why", in the order they happened
    explain: dict = field(default_factory=dict)  # what the pipeline found, when the request asks
    teams: list[str] | None = None  # interleaving: the arm that picked each candidate

    def offer(self, source: str, rows: np.ndarray, post_ids: np.ndarray, retrieval_score=None) -> int:
        """A source's candidates: added where new (a post keeps the first source that offered
        it), and, when the request asks to explain its feed, recorded under ``source``."""
        if self.request.explain:
            self.explain.setdefault("sources", {})[source] = np.asarray(post_ids).tolist()
        return self.candidates.extend(rows, post_ids, source, retrieval_score)

    def degrade(self, stage: str, why: str) -> None:
        self.degraded.append(f"{stage}: {why}")
