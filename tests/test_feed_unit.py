"""The feed pipeline's parts without models: arms and assignment, cursors, the executor,
candidates, re-rankers."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from pydantic import ValidationError

from newsfeed.feed.arms import Arm, Experiment, bucket
from newsfeed.feed.context import Candidates, FeedContext, FeedRequest, UserView
from newsfeed.feed.reranking import Exploration, Order, Truncate
from newsfeed.feed.stages import Slot, run_pipeline


def _experiment(**shares) -> Experiment:
    return Experiment(arms=[Arm(name=n, share=s) for n, s in shares.items()])


def test_assignment_is_sticky_across_processes_and_follows_the_shares():
    experiment = _experiment(champion=70, canary=20, other=10)
    users = np.arange(20_000)
    arms = np.array([experiment.assign(u).name for u in users])
    for name, share in (("champion", 0.7), ("canary", 0.2), ("other", 0.1)):
        observed = (arms == name).mean()
        assert abs(observed - share) < 4 * np.sqrt(share * (1 - share) / len(users)), (name, observed)
    # Python's hash() is salted per process; the assignment must not be.
    code = "from newsfeed.feed.arms import bucket; print([bucket('feed-1', u) for u in range(50)])"
    other_process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert other_process.strip() == str([bucket("feed-1", u) for u in range(50)])


def test_a_share_change_moves_only_the_users_it_must():
    before = _experiment(champion=90, canary=10)
    after = before.with_shares({"champion": 80, "canary": 20})
    assert after.version == before.version + 1
    users = range(5_000)
    moved = [u for u in users if before.assign(u).name != after.assign(u).name]
    # Growing the canary from 10% to 20% moves about 10% of users, all towards the canary.
    assert all(after.assign(u).name == "canary" for u in moved)
    assert 0.07 < len(moved) / 5_000 < 0.13


@pytest.mark.parametrize("arms, shadow, message", [
    ([("a", 60), ("b", 30)], None, "sum to 100"),
    ([("a", 50), ("a", 50)], None, "unique"),
    ([("a", 100), ("s", 0)], "missing", "shadow"),
    ([("a", 90), ("s", 10)], "s", "share 0"),
])
def test_inconsistent_experiments_are_refused_with_the_reason(arms, shadow, message):
    with pytest.raises(ValidationError, match=message):
        Experiment(arms=[Arm(name=n, share=s) for n, s in arms], shadow=shadow)


def test_an_arm_refuses_unknown_reactions_and_settings():
    with pytest.raises(ValidationError, match="unknown reactions"):
        Arm(name="x", share=100, weights={"clap": 3})
    with pytest.raises(ValidationError):
        Arm(name="x", share=100, reranking={"diversity": 0.3})


def _context(n: int = 30, limit: int = 10) -> FeedContext:
    ctx = FeedContext(FeedRequest(user_id=1, limit=limit), UserView(1))
    ctx.candidates.extend(np.arange(n), np.arange(100, 100 + n), "ann", np.linspace(1, 0, n).astype(np.float32))
    ctx.candidates.score = np.linspace(0, 1, n)  # the last is best
    return ctx


def test_candidates_keep_the_first_source_and_never_repeat_a_post():
    c = Candidates.empty()
    assert c.extend(np.array([0, 1, 1]), np.array([10, 11, 11]), "ann") == 2
    assert c.extend(np.array([1, 2]), np.array([11, 12]), "fresh") == 1
    assert c.post_ids.tolist() == [10, 11, 12] and c.source_names() == ["ann", "ann", "fresh"]


class Boom:
    name, slot = "boom", Slot.RANK

    def __call__(self, ctx):
        raise RuntimeError("model exploded")


class SlowRead:
    name, slot, timeout_ms = "user_features", Slot.HYDRATE, 50.0

    def load(self, ctx):
        time.sleep(0.5)
        return {"late": True}

    def apply(self, ctx, value):
        ctx.user.features = value

    def fallback(self, ctx):
        ctx.user.features = {}


def test_the_executor_times_stages_and_turns_failures_and_late_reads_into_degradations():
    ctx = run_pipeline([SlowRead(), Boom(), Order(), Truncate()], _context())
    assert [d.split(":")[0] for d in ctx.degraded] == ["user_features", "boom"]
    assert "no answer within 50 ms" in ctx.degraded[0] and "model exploded" in ctx.degraded[1]
    assert ctx.user.features == {}
    assert set(ctx.timings_ms) == {"user_features", "boom", "order", "truncate"}
    assert ctx.timings_ms["user_features"] < 400  # it did not wait for the late read
    time.sleep(0.6)
    assert ctx.user.features == {}  # and the late read never touched the context
    assert ctx.candidates.post_ids.tolist() == list(range(129, 119, -1))  # best first


def test_epsilon_greedy_records_the_probability_of_each_shown_post():
    epsilon, n, limit = 0.2, 30, 10
    ctx = run_pipeline([Order(), Exploration("epsilon", epsilon, 1.0, seed=3), Truncate()], _context(n, limit))
    p = ctx.candidates.show_probability
    assert len(p) == limit
    pool = np.minimum(3 * limit, n) - np.arange(limit)  # candidates left to choose from at each position
    greedy, explored = 1 - epsilon + epsilon / pool, epsilon / pool
    assert np.all(np.isclose(p, greedy) | np.isclose(p, explored))
    # Without exploration every shown post had probability 1.
    plain = run_pipeline([Order(), Truncate()], _context(n, limit))
    assert np.all(plain.candidates.show_probability == 1)


def _ranked(n: int = 30, limit: int = 10) -> FeedContext:
    ctx = _context(n, limit)
    ctx.candidates.score = np.arange(n, 0, -1).astype(float)  # row 0 best
    return ctx


def test_author_diversity_and_mmr_spread_a_feed_that_one_author_or_one_theme_would_fill():
    from types import SimpleNamespace

    from newsfeed.feed.reranking import AuthorDiversity, TopicMMR

    authors = np.r_[np.ones(10, np.int64), np.arange(2, 22)]  # the 10 best posts: one author
    corpus = SimpleNamespace(author_ids=authors)
    plain = run_pipeline([Order(), Truncate()], _ranked())
    assert (authors[plain.candidates.rows] == 1).all()
    diverse = run_pipeline([Order(), AuthorDiversity(corpus, 0.5), Truncate()], _ranked())
    assert diverse.candidates.rows[0] == 0 and (authors[diverse.candidates.rows] == 1).sum() <= 3
    vectors = np.eye(30, dtype=np.float32)
    vectors[:10] = vectors[0]  # the 10 best posts: the same content
    mmr = run_pipeline([Order(), TopicMMR(SimpleNamespace(post_vectors=vectors), 0.5), Truncate()], _ranked())
    assert mmr.candidates.rows[0] == 0 and (mmr.candidates.rows < 10).sum() <= 2
    assert len(set(mmr.candidates.rows.tolist())) == 10
