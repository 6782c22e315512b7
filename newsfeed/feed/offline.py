"""The served feed judged by the simulator's world: what the candidate sources find of the
oracle's choice, and how much of the attainable engagement the feed delivers.

At the service's now (the data's end, on simulated data), for a sample of users: the pool
is every post they have not seen, published by now and not their own. The oracle ranks
the pool by true expected engagement (hides and blocks counted). Measured:
- recall of the oracle's top ``oracle_k`` in each source's candidates (alone, after the
  filters) and in the merged set;
- the feed's true expected engagement under the world's position bias, 0 = ``limit``
  random posts of the pool, 1 = the oracle's ``limit`` (the evaluation's primary measure),
  beside a most-popular feed, a random feed, and the ranker alone over the whole pool;
  intervals resample users.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from newsfeed import metrics
from newsfeed.data.world import World, examine_probability
from newsfeed.feed.arms import Arm
from newsfeed.feed.context import SOURCES, FeedContext, FeedRequest, UserView
from newsfeed.feed.models import RankingModel
from newsfeed.feed.ranking import Rank
from newsfeed.feed.stages import Slot, run_pipeline
from newsfeed.scoring import load_weights

@dataclass
class Pool:
    users: np.ndarray  # per row
    rows: np.ndarray  # corpus row per row
    value: np.ndarray  # true expected engagement at position 0

    def spans(self) -> tuple[np.ndarray, np.ndarray]:
        """(starts, ends): each user's rows (a pool is grouped by user)."""
        starts = np.flatnonzero(np.r_[True, self.users[1:] != self.users[:-1]])
        return starts, np.r_[starts[1:], len(self.users)]


def judged_service(home: Path, n_users: int):
    """(service, users): ``home``'s service as the oracle benchmarks judge it, and every n-th
    of its known users, ``n_users`` at most. Its clock stands at the data's end (or where a
    simulator set it): a replayed clock runs on from when the home was first served, so a rerun
    an hour later would judge another pool. The window is slid to that time once, as a
    replica's content follower would within its first minute."""
    from newsfeed.feed.service import FeedService

    service = FeedService.open(home, clock="simulated")
    service.slide_window()
    users = np.array(sorted(service.directory.known_users))
    return service, users[:: max(1, len(users) // n_users)][:n_users]


def rank_whole_pool(service, arm: Arm, corpus, pool: Pool, now_unix: float, model=None) -> np.ndarray:
    """The score ``arm``'s ranker gives each row of ``pool`` (every user's whole pool, no
    retrieval or cut before it); given a trained ``model`` (a MultiTaskRanker), that model's
    scores in the arm's place."""
    rank_stage = next(s for s in service.pipeline(arm)[0] if isinstance(s, Rank))
    if model is not None:
        ranking = RankingModel.prepare("unregistered", model, rank_stage.weights, corpus)
        rank_stage = replace(rank_stage, ranking=ranking)
    scores = np.full(len(pool.rows), -np.inf)
    for start, end in zip(*pool.spans()):
        user, rows = int(pool.users[start]), pool.rows[start:end]
        ids = corpus.post_ids[rows]
        whole = FeedContext(FeedRequest(user, len(rows), now_unix), service.user_view(user)[0])
        whole.user.features = service.read_user(user) or {}
        whole.candidates.extend(rows, ids, "ann")
        rank_stage(whole)
        order = {int(p): s for p, s in zip(whole.candidates.post_ids, whole.candidates.score)}
        scores[start:end] = [order[p] for p in ids.tolist()]
    return scores


def unseen_rows(corpus, view: UserView, now_unix: float) -> np.ndarray:
    """Corpus rows of the posts ``view``'s user has not seen, published by now and not their own."""
    rows = np.flatnonzero(corpus.created_unix <= now_unix)
    keep = ~np.isin(corpus.post_ids[rows], view.seen) & (corpus.author_ids[rows] != view.user_id)
    return rows[keep]


def unseen_pool(service, corpus, world: World, users: np.ndarray, now_unix: float, weights: dict) -> Pool:
    """Every user's ``unseen_rows`` and each one's true expected engagement at position 0."""
    user_parts, row_parts = [], []
    for user in users:
        rows = unseen_rows(corpus, service.user_view(int(user))[0], now_unix)
        row_parts.append(rows)
        user_parts.append(np.full(len(rows), user, np.int64))
    rows, user_ids = np.concatenate(row_parts), np.concatenate(user_parts)
    ts = np.full(len(rows), int(now_unix * 1e9), np.int64)
    value = world.engagement(user_ids, corpus.post_ids[rows], ts, np.zeros(len(rows), np.int64), weights)
    return Pool(user_ids, rows, value)


def judge(pool: Pool, scores: np.ndarray, limit: int, rng: np.random.Generator | None = None) -> dict:
    """A feed of ``limit`` per user by ``scores`` over ``pool``, against the oracle's (0 random,
    1 oracle; 95% interval over users). Rows scored -inf (not in the feed) sink below every
    other in a random order drawn from ``rng``."""
    if rng is not None:
        scores = np.where(np.isfinite(scores), scores, -1e12 - rng.random(len(scores)))
    return metrics.normalised_slate_value(pool.users, pool.value, scores, truncated_examination(limit),
                                          clusters=pool.users).as_dict("engagement_vs_oracle")


def truncated_examination(limit: int):
    """The world's chance of examining each position, zero from ``limit`` on (a feed's page)."""
    return lambda rank: examine_probability(rank) * (np.asarray(rank) < limit)


def retrieved(service, arm: Arm, user: int, now_unix: float, limit: int, only: str | None) -> FeedContext:
    """The retrieval group of ``arm`` (``only`` one source, or all) without backfill and
    pre-ranking: what the sources found that passes the filters."""
    stages, _, _ = service.pipeline(arm)
    kept = [s for s in stages if s.slot in (Slot.HYDRATE, Slot.SOURCES, Slot.FILTERS)
            and (only is None or s.slot is not Slot.SOURCES or s.source == only)]
    return run_pipeline(kept, FeedContext(FeedRequest(int(user), limit, now_unix), service.user_view(int(user))[0]))


def evaluate(service, world: World, users: np.ndarray, limit: int = 10, oracle_k: int = 50, seed: int = 0,
             variants: dict[str, Arm] | None = None) -> dict:
    """``variants``: more served feeds to judge beside the first arm's, by name (an arm
    changed in one setting, say the pre-rank budget), on the same users and pool."""
    weights = load_weights()
    arm = service.experiments.current().arms[0]
    variants = variants or {}
    now = service.clock.now()
    corpus = service.corpus  # the pool's rows name this corpus's posts (slide the window before, not during)
    pool = unseen_pool(service, corpus, world, users, now, weights)
    rng = np.random.default_rng(seed)
    # Oracle top-k per user, and recall of it per source.
    recall: dict[str, list[float]] = {name: [] for name in (*SOURCES, "merged")}
    served = {name: np.full(len(pool.rows), -np.inf) for name in ("served feed", *variants)}
    starts, ends = pool.spans()
    for start, end in zip(starts, ends):
        user = int(pool.users[start])
        rows, value = pool.rows[start:end], pool.value[start:end]
        best = set(corpus.post_ids[rows[np.argsort(-value)[:oracle_k]]].tolist())
        for source in (*SOURCES, None):
            found = retrieved(service, arm, user, now, limit, source).candidates.post_ids
            recall[source or "merged"].append(len(best & set(found.tolist())) / len(best))
        # The served feeds, without marking them seen (an evaluation, not a visit).
        ids = corpus.post_ids[rows]
        for name, feed_arm in {"served feed": arm, **variants}.items():
            ctx = run_pipeline(service.pipeline(feed_arm)[0], FeedContext(FeedRequest(user, limit, now),
                                                                          service.user_view(user)[0]))
            position = {int(p): i for i, p in enumerate(ctx.candidates.post_ids)}
            served[name][start:end] = [limit - position[p] if p in position else -np.inf for p in ids.tolist()]
    ranker_alone = rank_whole_pool(service, arm, corpus, pool, now)
    popularity = corpus.popularity[pool.rows]
    scorers = {**served, "ranker alone (whole pool)": ranker_alone, "most popular": popularity,
               "random": rng.random(len(pool.rows)), "oracle": pool.value}
    feed_quality = {name: judge(pool, scores, limit, rng) for name, scores in scorers.items()}
    return {"users": len(starts), "pool_posts_per_user": float(np.mean(ends - starts)), "limit": limit,
            "oracle_k": oracle_k,
            "candidate_recall": {k: metrics.mean_interval(np.array(v), np.arange(len(v))).as_dict("recall")
                                 for k, v in recall.items()},
            "feed": feed_quality}
