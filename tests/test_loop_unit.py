"""The closed loop's parts without a service: the simulated clock every replica shares, served
impressions becoming training data, the baseline arms, the canary's verdict rule, the
retrain's options, the living world."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from newsfeed.feed.context import FeedContext, FeedRequest, UserView


def test_the_simulated_clock_is_one_time_for_every_replica_and_only_moves_forward(tmp_path):
    from newsfeed.feed.clock import ClockError, SimulatedClock, open_clock
    from newsfeed.feed.user_state import SqliteUserState

    state = SqliteUserState(tmp_path / "state.sqlite")
    first = open_clock("simulated", 1_790_000_000.0, state, tmp_path / "data")
    second = open_clock("simulated", 1_790_000_000.0, SqliteUserState(tmp_path / "state.sqlite"), tmp_path / "data")
    assert isinstance(first, SimulatedClock) and first.now() == 1_790_000_000.0  # the data's end, until set
    first.set(1_790_003_600.0)
    import time
    time.sleep(0.05)  # SIMULATED_CHECK_SECONDS
    assert second.now() == 1_790_003_600.0 and first.describe()["kind"] == "simulated"
    with pytest.raises(ClockError, match="only moves forward"):
        second.set(1_790_000_000.0)
    assert first.now() == 1_790_003_600.0
    wall = open_clock("wall", 1_790_000_000.0, state, tmp_path / "data")
    with pytest.raises(ClockError, match="only a simulated clock"):
        wall.set(1_790_003_600.0)


def _served(home, shown_at: float, requests: int = 3) -> None:
    from newsfeed.feed.served_log import ServedLog

    log = ServedLog(home)
    for r in range(requests):
        log.write({"request_id": f"r{r}", "ts": shown_at + r * 3_600, "user_id": r, "arm": "champion",
                   "experiment_version": 2, "model_versions": {"ranker": "4"}, "degraded": [],
                   "items": [{"post_id": 10 + i, "position": i, "score": 1.0, "source": "ann",
                              "show_probability": 1.0} for i in range(2)]})


def test_served_impressions_join_the_data_once_labelled_and_readers_see_them(tmp_path):
    """Absorbed up to the attribution window before the newest, each once (a second absorb adds
    nothing), in the canonical contract; read_table shows them after the data's own rows."""
    from newsfeed.data import event_log
    from newsfeed.data.io import read_table, write_dataset
    from newsfeed.feed.served_data import ATTRIBUTION_SECONDS, absorb
    from newsfeed.schema import conform

    home, data = tmp_path / "home", tmp_path / "home" / "data"
    shown_at = 1_790_000_000.0
    canonical = conform("impressions", pd.DataFrame({
        "impression_id": [0], "request_id": [0], "user_id": [9], "post_id": [10], "ts": pd.to_datetime([1], utc=True),
        "position": [0], "variant": ["logging"], "model_version": ["sim"], **{r: [0] for r in
        ("click", "like", "comment", "share", "friend_request", "hide", "block")}, "dwell_seconds": [1.0],
        "skip": [0], "p_click": [0.1]}))
    write_dataset(data, {"impressions": canonical}, source="test")
    _served(home, shown_at)
    event_log.append(data, pd.DataFrame({"user_id": [0, 0], "post_id": [10, 10], "event_type": ["click", "dwell"],
                                         "value": [1.0, 3.0], "ts": pd.to_datetime([shown_at + 5] * 2, unit="s",
                                                                                   utc=True)}))
    assert 7_200 > ATTRIBUTION_SECONDS
    assert absorb(home, data) == 4  # the third request is the newest: within the window, it waits
    assert absorb(home, data) == 0
    merged = read_table(data, "impressions")
    assert len(merged) == 5 and merged["impression_id"].is_unique
    served = merged.iloc[1:]
    assert served["click"].tolist() == [1, 0, 0, 0] and served["dwell_seconds"].tolist() == [3.0, 0.0, 0.0, 0.0]
    assert served["skip"].tolist() == [0, 1, 1, 1] and served["p_click"].isna().all()
    assert set(served["variant"]) == {"champion"} and set(served["model_version"]) == {"4"}
    _served(home, shown_at + 20_000, requests=1)  # time moves on: the waiting request joins
    assert absorb(home, data) == 2 and len(read_table(data, "impressions")) == 7


def _context(corpus_size: int = 20) -> tuple[FeedContext, object]:
    from types import SimpleNamespace

    corpus = SimpleNamespace(popularity=np.arange(corpus_size, dtype=np.float64)[::-1].copy())
    ctx = FeedContext(FeedRequest(1, 5, 0.0), UserView(user_id=1))
    rows = np.array([3, 17, 0, 9, 12])
    ctx.candidates.extend(rows, rows + 100, "fresh")
    return ctx, corpus


def test_the_baseline_arms_order_by_popularity_or_at_random_without_a_model():
    from newsfeed.feed.arms import Arm
    from newsfeed.feed.build import scorers
    from newsfeed.feed.ranking import PopularityRank, RandomRank

    ctx, corpus = _context()
    PopularityRank(corpus)(ctx)
    assert ctx.candidates.rows.tolist() == [0, 3, 9, 12, 17]  # popularity falls with the row here
    orders = set()
    for seed in range(6):
        ctx, _ = _context()
        RandomRank(seed)(ctx)
        orders.add(tuple(ctx.candidates.rows.tolist()))
    assert len(orders) > 3
    resources = type("R", (), {"corpus": corpus})()
    assert [type(s).__name__ for s in scorers(Arm(name="p", share=0, policy="most_popular"), None, None,
                                              resources, 0)] == ["PopularityRank"]
    assert [type(s).__name__ for s in scorers(Arm(name="r", share=0, policy="random"), None, None,
                                              resources, 0)] == ["RandomRank"]


def _report(diff, users=200, guardrails=()):
    return {"control": "champion", "arms": {
        "champion": {"users": users},
        "challenger": {"users": users, "guardrails": list(guardrails),
                       "diff_engagement_per_impression": {"estimate": sum(diff) / 2, "ci": list(diff)}}}}


@pytest.mark.parametrize("diff, users, guardrails, hours, action", [
    ((0.05, 0.2), 200, (), 24, "promote"),
    ((-0.2, -0.05), 200, (), 24, "rollback"),
    ((-0.05, 0.1), 200, (), 24, "continue"),
    ((-0.05, 0.1), 200, (), 80, "rollback"),
    ((0.05, 0.2), 10, (), 24, "continue"),
    ((0.05, 0.2), 200, ("hide rate up",), 24, "rollback"),
])
def test_the_canary_verdict_follows_its_policy(diff, users, guardrails, hours, action):
    from monitoring.canary import CanaryPolicy, decide

    (verdict,) = decide(_report(diff, users, guardrails), ["challenger"], CanaryPolicy(), hours)
    assert verdict.action == action and verdict.arm == "challenger"


def test_challengers_are_arms_with_traffic_and_other_models_not_baselines():
    from newsfeed.feed.arms import Arm, Experiment
    from newsfeed.feed.experiments import challengers

    experiment = Experiment(arms=[Arm(name="champion", share=40), Arm(name="most_popular", share=30,
                                                                      policy="most_popular"),
                                  Arm(name="challenger", share=30, two_tower="challenger", ranker="challenger"),
                                  Arm(name="old", share=0, ranker="3")])
    assert challengers(experiment) == ["challenger"]


def test_the_retrain_passes_the_policys_pipeline_options(tmp_path):
    from monitoring.trigger import RetrainPolicy, Trigger, TriggerError

    command = Trigger(tmp_path, RetrainPolicy(pipeline_options={"epochs": 4, "seed": 9}))._command(tmp_path / "d")
    assert command[-4:] == ["--epochs", "4", "--seed", "9"] and command[1:3] == ["pipeline", "run"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipeline_options: {'--rm -rf': 1}\n")
    with pytest.raises(TriggerError, match="pipeline_options"):
        RetrainPolicy.load(bad)


def test_team_draft_alternates_fairly_and_never_repeats_a_post():
    from newsfeed.feed.interleaving import team_draft

    rng = np.random.default_rng(0)
    a, b = np.array([1, 2, 3, 4, 5, 6]), np.array([3, 1, 7, 8, 9, 10])
    firsts = []
    for _ in range(200):
        teams, picks = team_draft(a, b, 6, rng)
        shown = [(a, b)[t][i] for t, i in zip(teams, picks)]
        assert len(set(shown)) == 6 and abs(int(teams.sum()) - 3) <= 1  # distinct; picks within one
        # each team's posts keep that team's order, and a pick is its best post not shown yet
        for team, ranking in ((0, a), (1, b)):
            mine = [p for p, t in zip(shown, teams) if t == team]
            assert mine == sorted(mine, key=list(ranking).index)
        firsts.append(int(teams[0]))
    assert 0.35 < np.mean(firsts) < 0.65  # the coin decides who starts
    teams, picks = team_draft(np.array([1, 2]), np.array([1, 2, 3, 4]), 4, rng)
    assert len(teams) == 4 and list(teams[-2:]) == [1, 1]  # one side ran out: the other fills the page


def test_interleaving_credits_the_team_that_picked_each_post():
    from newsfeed.metrics import interleaving_preference

    credit_a = np.array([5.0, 1.0, 0.0, 6.0, 2.0])
    credit_b = np.array([1.0, 1.0, 3.0, 0.0, 0.0])
    result = interleaving_preference(credit_a, credit_b, np.full(5, 10.0))
    assert (result["wins_a"], result["wins_b"], result["ties"]) == (3, 1, 1)
    assert result["preference_a"]["estimate"] == 0.75
    assert result["difference_per_impression"]["estimate"] == pytest.approx(9 / 50)


def test_interleaving_needs_fewer_users_than_ab_for_a_known_better_arm():
    """On a synthetic ledger where arm a's posts draw more engagement than b's for every user,
    with the large between-user variation real users have: interleaving compares within each
    user and needs far fewer of them."""
    from newsfeed.loop.sensitivity import compare

    rng = np.random.default_rng(1)
    rows = []
    for user in range(600):
        taste = rng.lognormal(0.0, 1.0)  # users differ far more than the arms do
        arm = ("a", "b", "a-vs-b")[user % 3]
        for position in range(20):
            team = arm if arm != "a-vs-b" else ("a", "b")[position % 2]
            rate = taste * (1.2 if team == "a" else 1.0)
            rows.append({"user_id": user, "arm": arm, "team": team if arm == "a-vs-b" else None,
                         "engagement": float(rng.poisson(rate)), "day": 0, "expected": rate})
    result = compare(pd.DataFrame(rows), "a", "b", "a-vs-b")
    assert result["ab"]["difference"] > 0 and result["interleaving"]["mean_difference"] > 0
    assert result["ratio_ab_to_interleaving"] > 3
    assert result["interleaving"]["preference_a"]["estimate"] > 0.5


def test_a_job_that_fails_is_recorded_and_the_loop_goes_on(tmp_path):
    from types import SimpleNamespace

    from newsfeed.loop.config import LoopConfig
    from newsfeed.loop.jobs import JobFailed
    from newsfeed.loop.run import Loop

    def failing(*_):
        raise JobFailed("drift exited 1: the feature store cannot be reached (log: x)")

    jobs = SimpleNamespace(data_dir=tmp_path, drift=failing, decide=failing)
    world = SimpleNamespace(save=lambda data_dir: None)
    said = []
    loop = Loop(LoopConfig(), client=None, world=world, jobs=jobs, progress=said.append)
    loop.check_drift(3.0)
    loop.canary_since = 2
    loop.judge(4.0)
    assert loop.ledger.checks[0]["error"].startswith("drift exited 1") and not loop.ledger.checks[0]["retrain"]
    assert loop.ledger.decisions[0]["done"] == [] and loop.canary_since == 2  # the canary runs on
    assert len(said) == 2 and all("failed" in line for line in said)


def test_the_living_world_grows_one_size_keeps_its_ties_and_drifts_on_its_day():
    from newsfeed.data.simulator import DAY_NS, SimConfig, generate
    from newsfeed.loop.world import LiveWorld

    config = SimConfig(seed=3, users=120, posts=600, days=5, new_user_fraction=0.3)
    tables, world = generate(config)
    old_n, old_pairs = world.n_users, world.friend_key.copy()
    start = config.end_ns
    live = LiveWorld(world, tables, start, days=10, seed=1)
    grown = live.world
    users, posts, ties = live.published.users, live.published.posts, live.published.friendships
    assert grown.n_users == old_n + len(users) and len(users) > 0
    assert posts["post_id"].tolist() == list(range(len(world.post_author), len(grown.post_author)))
    assert ((posts["created_ns"] >= start) & (posts["created_ns"] < start + 10 * DAY_NS)).all()
    # every old tie is still found under the new key width, and a new one only from its time on
    a, b = old_pairs // old_n, old_pairs % old_n
    assert grown.friendship(a, b, np.full(len(a), start + 20 * DAY_NS))[0].all()
    if len(ties):
        t = ties.iloc[0]
        u, f = np.array([t.user_id]), np.array([t.friend_id])
        assert not grown.friendship(u, f, np.array([t.formed_ns - 1]))[0][0]
        assert grown.friendship(u, f, np.array([t.formed_ns]))[0][0]
    # sessions only for users signed up by then; reactions drawn for a page
    who, when = live.sessions(start, start + DAY_NS)
    assert len(who) and (live.signup_ns[who] < start).all() and (np.diff(when) >= 0).all()
    drawn = live.react(int(who[0]), posts["post_id"].to_numpy()[:5], start + DAY_NS)
    assert len(drawn["labels"]["click"]) == 5 and len(drawn["dwell"]) == 5
    before = live.world.interest_after.copy()
    topics = live.drift(start + 2 * DAY_NS, 1.0)
    assert len(topics) == 3 and np.allclose(live.world.interest_before, before)
    trending = [live.world.topics.index(t) for t in topics]
    assert live.world.interest_after[:, trending].sum(1).mean() > before[:, trending].sum(1).mean() + 0.3


def test_the_experiment_report_credits_an_interleaving_arms_teams():
    from monitoring.experiment import interleaved

    frame = pd.DataFrame({"user_id": [1, 1, 2, 2, 3, 3], "team": ["a", "b"] * 3,
                          "engagement": [5.0, 0.0, 0.0, 1.0, 6.0, 1.0]})
    result = interleaved(frame)
    assert result["teams"] == ["a", "b"] and (result["wins_a"], result["wins_b"], result["ties"]) == (2, 1, 0)
    assert result["difference_per_impression"]["estimate"] == pytest.approx(9 / 6)


def test_a_retrain_reports_its_gates_paired_comparison_only_when_it_made_one(tmp_path):
    import json
    import time

    from newsfeed.config import Paths
    from newsfeed.loop.jobs import Jobs
    from newsfeed.loop.summary import gate_line

    jobs = Jobs(tmp_path / "home", tmp_path / "data", tmp_path / "loop" / "jobs")
    assert jobs.gate_since(0) is None  # no pipeline ran here yet
    primary = {"metric": "ranker.engagement_vs_oracle", "challenger": 0.378, "champion": 0.165, "primary": True,
               "passed": True, "paired": {"difference": 0.214, "low": 0.165, "high": 0.257}}
    path = Paths(home=tmp_path / "home", data_dir=tmp_path / "data").last_gate_decision
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"passed": True, "checks": [{**primary, "primary": False, "metric": "auc_hide"},
                                                           primary]}))
    assert jobs.gate_since(time.time() - 60) == primary
    assert jobs.gate_since(time.time() + 60) is None  # a decision older than the retrain is not its own
    assert gate_line(primary) == ("ranker.engagement_vs_oracle 0.378 against the champion's 0.165, "
                                  "paired +0.214 [+0.165, +0.257]")


def test_a_reaction_labels_the_showing_it_followed_not_every_showing_of_the_post():
    from newsfeed.feed.served_data import labelled

    t0 = 1_760_000_000.0

    def request(rid, ts, posts):
        return {"request_id": rid, "user_id": 1, "ts": ts, "arm": "champion",
                "items": [{"post_id": p, "position": i} for i, p in enumerate(posts)]}

    # Post 7 is shown three times (a comment revived it); the user clicks it after the second showing only.
    records = [request("a", t0, [7, 8]), request("b", t0 + 3600, [7, 9]), request("c", t0 + 7200, [7])]

    def event(user, post, kind, after_seconds, value=0.0):
        return {"user_id": user, "post_id": post, "event_type": kind, "value": value,
                "ts": pd.Timestamp(t0 + after_seconds, unit="s", tz="UTC")}

    events = pd.DataFrame([event(1, 7, "click", 3605), event(1, 7, "dwell", 3606, 12.0), event(1, 8, "like", 10),
                           event(1, 9, "hide", -10), event(2, 7, "click", 5)])
    frame = labelled(records, events).set_index(["request_id", "post_id"])
    assert frame["click"].to_dict() == {("a", 7): 0, ("a", 8): 0, ("b", 7): 1, ("b", 9): 0, ("c", 7): 0}
    assert frame.loc[("b", 7), "dwell_seconds"] == 12.0 and frame.loc[("a", 7), "dwell_seconds"] == 0.0
    assert frame.loc[("a", 8), "like"] == 1  # a reaction to a post shown once labels that showing
    assert frame["hide"].sum() == 0  # before it was shown: not its reaction
