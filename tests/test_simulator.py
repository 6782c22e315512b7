"""The simulator: deterministic, valid, calibrated against its own truth, and its effects are real."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from newsfeed.data.simulator import SimConfig, generate
from newsfeed.data.validation import validate_tables
from newsfeed.data.world import World
from newsfeed.schema import REACTIONS, TABLES


def test_same_seed_same_data_other_seed_other_data():
    small = dict(users=150, posts=600, days=3)
    a, _ = generate(SimConfig(seed=3, **small))
    b, _ = generate(SimConfig(seed=3, **small))
    c, _ = generate(SimConfig(seed=4, **small))
    for table in TABLES:
        pd.testing.assert_frame_equal(a[table], b[table])
    assert not a["impressions"][["user_id", "post_id"]].equals(c["impressions"][["user_id", "post_id"]])


def test_scale_follows_the_flags(sim):
    config, tables, _ = sim
    assert len(tables["users"]) == config.users
    assert len(tables["posts"]) == config.posts
    # About users x days x sessions/day x feed size impressions (own posts and repeats are dropped).
    expected = config.users * config.days * config.sessions_per_day * config.feed_size
    assert 0.7 * expected < len(tables["impressions"]) < 1.2 * expected


def test_generated_data_passes_validation(sim):
    _, tables, _ = sim
    result = validate_tables(tables)
    assert result.errors == []
    assert result.bad_rows == 0
    assert set(result.clean) == set(TABLES)


@pytest.mark.parametrize("label", [*REACTIONS, "skip"])
def test_observed_rate_matches_mean_true_probability(sim, label):
    _, tables, _ = sim
    imp = tables["impressions"]
    p = imp[f"p_{label}"].to_numpy()
    # The labels are independent Bernoulli draws: their mean has this standard error.
    se = np.sqrt((p * (1 - p)).sum()) / len(p)
    assert abs(imp[label].mean() - p.mean()) < 5 * se + 1e-4


def test_clicks_are_calibrated_per_probability_decile(sim):
    _, tables, _ = sim
    imp = tables["impressions"]
    decile = pd.qcut(imp["p_click"], 10, labels=False)
    by = imp.groupby(decile).agg(observed=("click", "mean"), predicted=("p_click", "mean"), n=("click", "size"))
    se = np.sqrt(by["predicted"] * (1 - by["predicted"]) / by["n"])
    assert ((by["observed"] - by["predicted"]).abs() < 5 * se + 1e-3).all(), by


def _with_author_ties(tables) -> pd.DataFrame:
    """Impressions with the viewer's tie to the post's author as of the impression."""
    imp = tables["impressions"].merge(tables["posts"][["post_id", "author_id"]], on="post_id")
    ties = tables["friendships"].rename(columns={"friend_id": "author_id"})
    imp = imp.merge(ties, on=["user_id", "author_id"], how="left")
    formed = imp["formed_ts"].notna() & (imp["formed_ts"] <= imp["ts"])
    imp["tie"] = np.where(formed & imp["close_friend"].eq(True), "close",
                          np.where(formed, "friend", "none"))
    return imp


def test_close_friends_posts_get_more_engagement(sim):
    _, tables, _ = sim
    imp = _with_author_ties(tables)
    click = imp.groupby("tie")["click"].mean()
    comment = imp.groupby("tie")["comment"].mean()
    assert click["close"] > 1.5 * click["none"]
    assert click["friend"] > 1.2 * click["none"]
    assert comment["close"] > 2 * comment["none"]
    assert (imp["tie"] == "close").sum() > 500  # enough close-friend impressions to mean something


def test_on_topic_posts_get_more_engagement(sim):
    _, tables, world = sim
    imp = tables["impressions"]
    ts = imp["ts"].astype("int64").to_numpy()
    interest = world.interest(imp["user_id"].to_numpy(), imp["post_id"].to_numpy(), ts)
    on, off = interest >= 0.3, interest <= 0.02
    assert on.sum() > 1000 and off.sum() > 1000
    assert imp["click"][on].mean() > 2 * imp["click"][off].mean()
    assert imp["hide"][off].mean() > 1.5 * imp["hide"][on].mean()


def test_position_bias(sim):
    _, tables, _ = sim
    ctr = tables["impressions"].groupby("position")["click"].mean()
    assert ctr[0] > 1.8 * ctr[9]


def test_fresh_posts_beat_stale_ones(sim):
    _, tables, _ = sim
    imp = tables["impressions"].merge(tables["posts"][["post_id", "created_ts"]], on="post_id")
    age_h = (imp["ts"] - imp["created_ts"]).dt.total_seconds() / 3600
    assert imp["click"][age_h < 6].mean() > 1.3 * imp["click"][age_h > 72].mean()


def test_passive_users_rarely_react(sim):
    _, tables, world = sim
    imp = tables["impressions"]
    passive = world.passive[imp["user_id"].to_numpy()]
    for label in ("click", "like", "comment"):
        assert imp[label][passive].mean() < 0.4 * imp[label][~passive].mean()


def test_viral_posts_are_shared_more(sim):
    _, tables, world = sim
    imp = tables["impressions"]
    viral = world.post_viral[imp["post_id"].to_numpy()]
    assert viral.sum() > 200
    assert imp["share"][viral].mean() > 2 * imp["share"][~viral].mean()


def test_new_users_and_posts_arrive_over_time(sim):
    config, tables, _ = sim
    users, posts, imp = tables["users"], tables["posts"], tables["impressions"]
    start = pd.Timestamp(config.start)
    new_users = users.loc[users["signup_ts"] > start, ["user_id", "signup_ts"]]
    assert len(new_users) > 0.05 * len(users)
    seen = imp.merge(new_users, on="user_id")
    assert len(seen) > 0 and (seen["ts"] >= seen["signup_ts"]).all()
    assert (posts["created_ts"] > start + pd.Timedelta(days=config.days - 1)).sum() > 0.03 * len(posts)
    # No post is shown before it exists (validation checks it too).
    shown = imp.merge(posts[["post_id", "created_ts"]], on="post_id")
    assert (shown["ts"] >= shown["created_ts"]).all()


def test_interests_drift_after_the_drift_day(sim):
    config, tables, world = sim
    rising = np.argsort((world.interest_after - world.interest_before).mean(axis=0))[-3:]
    trending = {world.topics[i] for i in rising}
    clicks = tables["impressions"].query("click == 1").merge(tables["posts"][["post_id", "topic"]], on="post_id")
    after = clicks["ts"] >= pd.Timestamp(config.start) + pd.Timedelta(days=config.drift_day)
    share_before = clicks["topic"][~after].isin(trending).mean()
    share_after = clicks["topic"][after].isin(trending).mean()
    assert share_after > share_before + 0.05


def test_drift_can_be_disabled():
    tables, world = generate(SimConfig(seed=1, users=100, posts=300, days=2, drift_day=-1))
    assert world.drift_ns == np.iinfo(np.int64).max
    assert len(tables["impressions"]) > 0


def test_saved_world_reproduces_the_stored_probabilities(sim, tmp_path):
    _, tables, world = sim
    world.save(tmp_path / "world.npz")
    loaded = World.load(tmp_path / "world.npz")
    imp = tables["impressions"].sample(5_000, random_state=0)
    p = loaded.probabilities(imp["user_id"], imp["post_id"], imp["ts"].astype("int64"), imp["position"])
    for label in (*REACTIONS, "skip"):
        np.testing.assert_allclose(p[f"p_{label}"], imp[f"p_{label}"], rtol=1e-9, atol=1e-12)


def test_oracle_scores_pairs_never_shown(sim):
    """The oracle is defined for any (user, post, time), not only logged impressions."""
    _, tables, world = sim
    users = np.arange(50)
    posts = np.full(50, len(tables["posts"]) - 1)  # the newest post
    ts = np.full(50, tables["posts"]["created_ts"].max().value + 3_600 * 10**9)
    weights = {"click": 1, "like": 5, "comment": 10, "share": 20, "friend_request": 30, "hide": -20, "block": -50}
    score = world.engagement(users, posts, ts, np.zeros(50), weights)
    assert score.shape == (50,) and np.isfinite(score).all() and score.std() > 0
