"""Pre-rankers judged by the ranker they feed: the share of the heavy ranker's top k that a
cut to a budget keeps, and the cut's cost per request, on a served home at its clock's now.

Two lists per user: the merged candidates after the filters (what serving pre-ranks today)
and the pool of every unseen post published by now that is not the user's own (what a
pre-ranker cheap enough could cut from instead)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from newsfeed import metrics
from newsfeed.feed import distilled
from newsfeed.feed.arms import Arm
from newsfeed.feed.context import FeedContext
from newsfeed.feed import offline
from newsfeed.feed.ranking import PreRank, Rank


@dataclass
class Judge:
    service: object  # FeedService, its window slid
    arm: Arm  # whose models and sources make the lists
    rank: Rank
    prerank: PreRank
    now: float

    @classmethod
    def open(cls, home: Path) -> "Judge":
        from newsfeed.feed.service import FeedService

        service = FeedService.open(home)
        service.slide_window()
        return cls.of(service)

    @classmethod
    def of(cls, service, arm: Arm | None = None) -> "Judge":
        """On ``arm`` (default: the experiment's first); its policy must be the model's."""
        arm = arm or service.experiments.current().arms[0]
        stages = service.pipeline(arm)[0]
        return cls(service, arm, next(s for s in stages if isinstance(s, Rank)),
                   next(s for s in stages if isinstance(s, PreRank)), service.clock.now())

    def users(self) -> np.ndarray:
        return np.array(sorted(self.service.directory.known_users), np.int64)

    def versions(self) -> dict[str, str]:
        return self.service.pipeline(self.arm)[1]

    @property
    def fast(self):
        return self.rank.ranking.prepared.fast

    def candidates(self, user: int) -> FeedContext:
        """The user's merged candidates after the filters, with their online features."""
        return offline.retrieved(self.service, self.arm, user, self.now, 10, None)

    def pool(self, ctx: FeedContext) -> np.ndarray:
        """Corpus rows of every unseen post published by now, not the user's own."""
        return offline.unseen_rows(self.rank.corpus, ctx.user, self.now)

    def teacher_list(self, user: int, extra: int = 300, seed: int = 0) -> distilled.TeacherList:
        """The ranker's scores of the user's merged candidates and ``extra`` random pool posts."""
        ctx = self.candidates(user)
        rows = ctx.candidates.rows
        pool = np.setdiff1d(self.pool(ctx), rows)
        more = np.random.default_rng(seed).choice(pool, min(extra, len(pool)), replace=False)
        rows = np.concatenate([rows, more]).astype(np.int64)
        return self._list(ctx, rows)

    def _list(self, ctx: FeedContext, rows: np.ndarray) -> distilled.TeacherList:
        pair = self.fast.pair_matrix(self.rank.pair(ctx, rows), len(rows))
        return distilled.TeacherList(self.fast.user_part(ctx.user.features), rows, pair, self.rank.scores(ctx, rows))

    def student(self, lists: list[distilled.TeacherList],
                config: distilled.DistillConfig = distilled.DistillConfig()) -> distilled.DistilledPreRanker:
        return distilled.DistilledPreRanker(distilled.distill(self.fast, lists, config), self.fast)

    def compare(self, student: distilled.DistilledPreRanker, users: np.ndarray, budgets: list[int],
                top: int = 10) -> dict:
        """Kept share of the ranker's top ``top`` per budget, and ms per request, for the
        two-tower cut and the student's, on both lists of each user (timed: scoring and the cut
        to serving's budget; the ranker: its scores of the whole list)."""
        serving_budget = self.prerank.budget
        kept = {pool: {cut: {b: [] for b in budgets} for cut in ("two-tower", "distilled")}
                for pool in ("merged candidates", "every unseen post")}
        ms = {pool: {cut: [] for cut in ("two-tower", "distilled", "ranker")} for pool in kept}
        sizes = {pool: [] for pool in kept}
        for user in users:
            ctx = self.candidates(int(user))
            for pool, rows in (("merged candidates", ctx.candidates.rows), ("every unseen post", self.pool(ctx))):
                if len(rows) <= top:
                    continue
                sizes[pool].append(len(rows))
                start = time.perf_counter()
                teacher = self.rank.scores(ctx, rows)
                ms[pool]["ranker"].append(1e3 * (time.perf_counter() - start))
                best = set(np.argsort(-teacher, kind="stable")[:top].tolist())
                for cut, score in (("two-tower", self._two_tower), ("distilled", self._distilled(student))):
                    start = time.perf_counter()
                    s = score(ctx, rows)
                    if len(s) > serving_budget:  # the cut as PreRank makes it
                        np.argpartition(-s, serving_budget - 1)[:serving_budget]
                    ms[pool][cut].append(1e3 * (time.perf_counter() - start))
                    order = np.argsort(-s, kind="stable")
                    for b in budgets:
                        kept[pool][cut][b].append(len(best & set(order[:b].tolist())) / top)
        report = {"top": top, "timed_cut_to": serving_budget, "pools": {}}
        for pool in kept:
            n = len(sizes[pool])
            report["pools"][pool] = {
                "posts_per_user": float(np.mean(sizes[pool])) if n else 0.0,
                "ranker_ms": float(np.median(ms[pool]["ranker"])) if n else float("nan"),
                "cuts": {cut: {"ms": float(np.median(ms[pool][cut])) if n else float("nan"),
                               "kept": {str(b): metrics.mean_interval(np.array(v), np.arange(n)).as_dict("kept")
                                        for b, v in kept[pool][cut].items() if n}}
                         for cut in kept[pool]}}
        return report

    def _two_tower(self, ctx: FeedContext, rows: np.ndarray) -> np.ndarray:
        retrieval = self.prerank.retrieval
        user = retrieval.user_vector(ctx.user.user_id, ctx.user.features)
        return retrieval.post_vectors[rows] @ user

    def _distilled(self, student: distilled.DistilledPreRanker):
        def score(ctx: FeedContext, rows: np.ndarray) -> np.ndarray:
            pair = self.fast.pair_matrix(self.rank.pair(ctx, rows), len(rows))
            return student.scores(rows, self.fast.user_part(ctx.user.features), pair)
        return score

    def feed_values(self, student: distilled.DistilledPreRanker, world, users: np.ndarray, budget: int,
                    limit: int = 10) -> dict:
        """The true expected engagement of the ranker's top ``limit`` (0 = random posts of the
        pool, 1 = the oracle's) when it ranks every unseen post, the distilled cut of them to
        ``budget``, or the two-tower cut; no re-ranking, no sources (``offline.evaluate``
        judges the served feed on the same scale)."""
        from newsfeed.scoring import load_weights

        pool = offline.unseen_pool(self.service, self.rank.corpus, world, users, self.now, load_weights())
        names = ("ranker alone (every unseen post)", f"ranker over the distilled top {budget}",
                 f"ranker over the two-tower top {budget}")
        scores = {name: np.full(len(pool.rows), -np.inf) for name in names}
        starts = np.flatnonzero(np.r_[True, pool.users[1:] != pool.users[:-1]])
        for start, end in zip(starts, np.r_[starts[1:], len(pool.users)]):
            ctx = self.candidates(int(pool.users[start]))
            rows = pool.rows[start:end]
            teacher = self.rank.scores(ctx, rows)
            scores[names[0]][start:end] = teacher
            for name, cut in zip(names[1:], (self._distilled(student), self._two_tower)):
                kept = np.argsort(-cut(ctx, rows), kind="stable")[:budget]
                scores[name][start + kept] = teacher[kept]
        rng = np.random.default_rng(0)
        return {name: offline.judge(pool, s, limit, rng) for name, s in scores.items()}
