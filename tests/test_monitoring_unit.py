"""Experiment statistics, off-policy estimators and the retrain trigger, on simulated traffic
and synthetic logs with known answers (no pipeline needed)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from monitoring import experiment as analysis
from monitoring import ope
from monitoring.trigger import RetrainPolicy, Trigger, TriggerError
from newsfeed.cli import app
from newsfeed.data import ab_simulation
from newsfeed.data.io import write_dataset
from newsfeed.data.simulator import SimConfig, generate
from newsfeed.feed.arms import Arm, Experiment
from newsfeed.schema import REACTIONS

@pytest.fixture(scope="module")
def world_data():
    """1,500 simulated users over 3 days: enough users per arm to see a real difference."""
    tables, world = generate(SimConfig(seed=3, users=1500, posts=1500, days=3))
    return tables, world


def split(shares: dict[str, float], salt: str = "test") -> Experiment:
    return Experiment(salt=salt, arms=[Arm(name=n, share=s) for n, s in shares.items()])


def traffic(world_data, experiment: Experiment, quality: dict[str, float], seed: int, **kwargs) -> pd.DataFrame:
    tables, world = world_data
    return ab_simulation.simulate(tables["impressions"], world, lambda u: experiment.assign(u).name, quality,
                                  days=3, seed=seed, **kwargs)


# -- experiment analysis --------------------------------------------------------------------

def test_the_better_arm_shows_a_lift_whose_interval_excludes_zero(world_data):
    fifty = split({"control": 50, "treatment": 50})
    log = traffic(world_data, fifty, {"control": 0.3, "treatment": 1.0}, seed=1)
    report = analysis.analyse(log, "control", {"control": 50, "treatment": 50}, world_data[0]["posts"])
    lift = report["arms"]["treatment"]["lift_ctr"]
    assert lift["ci"][0] > 0, lift
    assert report["arms"]["treatment"]["diff_engagement_per_user"]["ci"][0] > 0
    assert not report["srm"]["mismatch"]
    # beyond accuracy measures are there and sensible
    arm = report["arms"]["control"]
    assert 1 <= arm["topics_per_feed"] <= 10 and 1 <= arm["authors_per_feed"] <= 10
    assert 0 < arm["coverage"] <= 1 and arm["novelty"] > 0


def test_an_aa_split_shows_intervals_that_include_zero_at_their_level(world_data):
    """The same policy in both arms: each interval should include zero 95% of the time. Twenty
    A/A experiments (new salt, new traffic): fewer than 16 would be a broken interval (binomial
    P < 0.003 at 95%)."""
    keys = ("lift_ctr", "lift_hide_rate", "diff_engagement_per_impression", "diff_engagement_per_user")
    including = {key: 0 for key in keys}
    for replicate in range(20):
        log = traffic(world_data, split({"a": 50, "b": 50}, salt=f"aa-{replicate}"), {"a": 0.5, "b": 0.5},
                      seed=200 + replicate)
        report = analysis.analyse(log, "a", {"a": 50, "b": 50})
        for key in keys:
            low, high = report["arms"]["b"][key]["ci"]
            including[key] += low < 0 < high
        assert not report["srm"]["mismatch"]
    assert all(count >= 16 for count in including.values()), including


def test_a_60_40_split_configured_as_50_50_is_flagged_by_the_srm_test(world_data):
    broken = split({"control": 60, "treatment": 40})
    log = traffic(world_data, broken, {"control": 0.5, "treatment": 0.5}, seed=3)
    report = analysis.analyse(log, "control", {"control": 50, "treatment": 50})
    assert report["srm"]["mismatch"] and report["srm"]["p_value"] < analysis.SRM_ALPHA
    honest = analysis.analyse(log, "control", {"control": 60, "treatment": 40})
    assert not honest["srm"]["mismatch"]


def test_user_level_intervals_are_wider_than_impression_level_ones(world_data):
    """One user's impressions are correlated: the delta method over users must not claim the
    precision of independent impressions."""
    log = traffic(world_data, split({"a": 100}), {"a": 0.5}, seed=4)
    sums = log.assign(n=1).groupby("user_id")[["click", "n"]].sum()
    _, variance = analysis.ratio_interval(sums["click"].to_numpy(float), sums["n"].to_numpy(float))
    p = log["click"].mean()
    assert variance > p * (1 - p) / len(log)


def test_guardrails_name_what_was_breached():
    arm = {"lift_hide_rate": {"estimate": 0.5, "ci": [0.3, 0.7]}, "lift_block_rate": {"estimate": 0.05, "ci": [-0.1, 0.2]},
           "latency_p95_ms": 250.0, "degraded_rate": 0.0}
    breaches = analysis.breaches(arm, analysis.Guardrails())
    assert len(breaches) == 2 and "hide rate" in breaches[0] and "latency" in breaches[1]


def test_a_breached_guardrail_rolls_the_challenger_back_in_the_config_serving_reads(world_data, tmp_path):
    home, data = tmp_path / "home", tmp_path / "ab"
    runner = CliRunner()
    result = runner.invoke(app, ["experiment", "set", "--arm", "champion=50", "--arm", "challenger=50",
                                 "--home", str(home)])
    assert result.exit_code == 0, result.output
    experiment = Experiment.model_validate(yaml.safe_load((home / "serving" / "experiment.yaml").read_text()))
    log = traffic(world_data, experiment, {"champion": 0.5, "challenger": -2.0}, seed=5)
    write_dataset(data, {"impressions": log, "posts": world_data[0]["posts"]}, source="test")

    result = runner.invoke(app, ["experiment", "report", "--data-dir", str(data), "--home", str(home), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["control"] == "champion"
    assert set(report["arms"]) == {"champion", "challenger"}
    challenger = report["arms"]["challenger"]
    assert challenger["users"] > 0 and challenger["impressions"] > 0 and challenger["ctr"] > 0
    assert challenger["lift_ctr"]["ci"][1] < 0
    assert any("hide rate" in b for b in challenger["guardrails"])
    assert report["rolled_back"] == ["challenger"]
    saved = yaml.safe_load((home / "serving" / "experiment.yaml").read_text())
    assert {a["name"]: a["share"] for a in saved["arms"]} == {"champion": 100.0, "challenger": 0.0}
    assert (home / "serving" / "experiments" / f"v{saved['version']}.yaml").exists()


def test_experiment_report_takes_control_and_expected_shares_as_options(world_data, tmp_path):
    log = traffic(world_data, split({"x": 60, "y": 40}), {"x": 0.5, "y": 0.5}, seed=6)
    write_dataset(tmp_path / "d", {"impressions": log}, source="test")
    runner = CliRunner()
    args = ["experiment", "report", "--data-dir", str(tmp_path / "d"), "--home", str(tmp_path / "h"), "--json",
            "--control", "x", "--expected", "x=50", "--expected", "y=50"]
    report = json.loads(runner.invoke(app, args).output)
    assert report["control"] == "x" and report["srm"]["mismatch"] is True
    assert "lift_ctr" in report["arms"]["y"] and "lift_ctr" not in report["arms"]["x"]
    bad = runner.invoke(app, [*args[:-4], "--expected", "x=fifty"])
    assert bad.exit_code == 1 and "--expected" in bad.output
    missing = runner.invoke(app, ["experiment", "report", "--data-dir", str(tmp_path / "d"), "--home",
                                  str(tmp_path / "h"), "--control", "nobody"])
    assert missing.exit_code == 1 and "nobody" in missing.output


def test_rollback_sends_the_traffic_to_the_control(tmp_path):
    runner = CliRunner()
    home = str(tmp_path / "home")
    runner.invoke(app, ["experiment", "set", "--arm", "champion=80", "--arm", "challenger=20", "--home", home])
    result = runner.invoke(app, ["experiment", "rollback", "--home", home])
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((tmp_path / "home" / "serving" / "experiment.yaml").read_text())
    assert {a["name"]: a["share"] for a in saved["arms"]} == {"champion": 100.0, "challenger": 0.0}
    again = runner.invoke(app, ["experiment", "rollback", "--home", home])
    assert again.exit_code == 1 and "nothing to roll back" in again.output


# -- off-policy evaluation ------------------------------------------------------------------

def synthetic_log(rows: int, seed: int) -> tuple[ope.LoggedBandit, float]:
    """A skewed behaviour policy over 10 actions with known click rates; the uniform policy's truth."""
    rng = np.random.default_rng(seed)
    rates = np.linspace(0.01, 0.10, 10)
    behaviour = np.linspace(1, 4, 10)[::-1]
    behaviour /= behaviour.sum()  # favours the worst actions, so the naive mean is biased low
    actions = rng.choice(10, size=rows, p=behaviour)
    rewards = (rng.random(rows) < rates[actions]).astype(float)
    log = ope.LoggedBandit(actions, np.zeros(rows, np.int64), rewards, behaviour[actions], 10)
    return log, float(rates.mean())


def test_ope_estimators_recover_the_uniform_policys_click_rate():
    log, truth = synthetic_log(40_000, seed=0)
    naive = log.rewards.mean()
    assert naive < truth - 0.005  # what the log says without correction is biased
    estimates = ope.estimate(log, ope.UniformPolicy(), seed=0, resamples=300)
    for name, value in estimates.items():
        assert value["ci"][0] <= truth <= value["ci"][1], (name, value, truth)
        assert abs(value["estimate"] - truth) < 0.004, (name, value)


def test_ope_intervals_cover_the_truth_at_about_their_level():
    covered = {name: 0 for name in ("ips", "snips", "dr")}
    trials = 40
    for seed in range(trials):
        log, truth = synthetic_log(3_000, seed=100 + seed)
        for name, value in ope.estimate(log, ope.UniformPolicy(), seed=seed, resamples=200).items():
            covered[name] += value["ci"][0] <= truth <= value["ci"][1]
    for name, count in covered.items():
        assert count >= 0.8 * trials, (name, count)  # 95% nominal; 40 trials: >= 32 is well within noise


def test_ope_refuses_logs_without_propensities():
    frame = pd.DataFrame({"post_id": [1, 2], "position": [0, 0], "click": [0, 1], "variant": ["a", "a"]})
    with pytest.raises(ope.OPEError, match="propensity"):
        ope.evaluate_impressions(frame)


@pytest.mark.shared_data
def test_ope_on_the_open_bandit_men_campaign_has_the_promised_json_shape(shared_datasets):
    open_bandit = shared_datasets / "open-bandit"
    result = CliRunner().invoke(app, ["ope", "estimate", "--open-bandit", str(open_bandit), "--campaign", "men",
                                      "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert set(out["estimators"]) == {"ips", "snips", "dr"}
    truth = out["on_policy"]
    assert out["rows"] == 10_000 and truth["rows"] == 10_000 and 20 < out["clicks"] < 200
    for value in (*out["estimators"].values(), truth):
        low, high = value["ci"]
        assert 0 <= low <= value["estimate"] <= high < 0.02
    # the random policy's own click rate lies within an order of magnitude of every estimate
    for value in out["estimators"].values():
        assert truth["estimate"] / 3 < value["estimate"] < truth["estimate"] * 3
    assert set(out["coverage"]) == {"ips", "snips", "dr"}
    women = CliRunner().invoke(app, ["ope", "estimate", "--open-bandit", str(open_bandit), "--campaign", "women"])
    assert women.exit_code == 1 and "women" in women.output


# -- the retrain trigger --------------------------------------------------------------------

def summary(drifted_topic: bool, share: float = 0.1, score: float = 0.05, click_change: float = 0.0,
            engagement_z: float = 0.0) -> dict:
    feature = {"score": 0.2, "method": "Jensen-Shannon distance", "threshold": 0.1, "drifted": False}
    return {"drifted_share": share, "features": {"post_content__topic": feature},
            "engagement": {"reference": 0.2, "current": 0.2 + engagement_z * 0.1, "z": engagement_z},
            "prediction": {"engagement_score": {"score": score}},
            "target": {"click": {"relative_change": click_change}, "like": {"relative_change": 0.0},
                       "clicked_post_topic": {"score": 1e-6 if drifted_topic else 0.5, "method": "chi2_homogeneity",
                                              "threshold": 0.001, "drifted": drifted_topic}}}


def test_the_policy_names_every_threshold_crossed():
    policy = RetrainPolicy()
    assert Trigger(Path("/nonexistent"), policy).decide(summary(False)).retrain is False
    found = Trigger(Path("/nonexistent"), policy).decide(summary(True, share=0.9, score=0.9, click_change=-0.5))
    assert found.retrain and len(found.reasons) == 4
    assert any("clicked_post_topic" in r for r in found.reasons) and any("click rate fell" in r for r in found.reasons)


def test_a_drop_in_realised_engagement_fires_only_beyond_its_noise_and_only_where_the_policy_asks():
    from monitoring.drift import engagement_change
    from newsfeed.scoring import load_weights

    rng = np.random.default_rng(5)

    def window(hide_rate: float) -> pd.DataFrame:  # 5,000 impressions, reactions drawn independently
        rates = {"click": 0.1, "like": 0.04, "comment": 0.01, "share": 0.01, "friend_request": 0.007,
                 "hide": hide_rate, "block": 0.005}
        return pd.DataFrame({r: (rng.random(5_000) < p).astype(np.int64) for r, p in rates.items()})

    weights = load_weights()
    same = engagement_change(window(0.025), window(0.025), weights)
    worse = engagement_change(window(0.025), window(0.06), weights)  # 3.5 points more hides: -0.7 per impression
    assert abs(same["z"]) < 3.5 and worse["z"] < -3.5, (same, worse)
    assert worse["change"] == pytest.approx(worse["current"] - worse["reference"])
    assert -1.0 < worse["change"] < -0.4 and worse["standard_error"] > 0
    strict = RetrainPolicy(max_engagement_drop_z=3)
    fired = Trigger(Path("/nonexistent"), strict).decide(summary(False, engagement_z=-4.2))
    assert fired.retrain and fired.reasons == ["engagement per impression fell 0.200 -> -0.220 (z -4.2, limit -3)"]
    assert not Trigger(Path("/nonexistent"), strict).decide(summary(False, engagement_z=-2.0)).retrain
    assert not Trigger(Path("/nonexistent"), RetrainPolicy()).decide(summary(False, engagement_z=-9.0)).retrain


def test_the_cooldown_holds_and_every_check_is_audited(tmp_path):
    trigger = Trigger(tmp_path, RetrainPolicy(action="none", cooldown_hours=24))
    first = trigger.decide(summary(True), now=1_000_000)
    trigger.act(first, tmp_path / "data", now=1_000_000)
    second = trigger.decide(summary(True), now=1_000_000 + 3600)
    assert first.retrain and not second.retrain and "cooldown" in second.suppressed
    trigger.act(second, tmp_path / "data", now=1_000_000 + 3600)
    later = trigger.decide(summary(True), now=1_000_000 + 25 * 3600)
    assert later.retrain
    lines = [json.loads(line) for line in (tmp_path / "monitoring" / "audit.log").read_text().splitlines()]
    assert [line["retrain"] for line in lines] == [True, False]
    assert lines[0]["reasons"] and lines[1]["suppressed"]


def test_a_local_retrain_starts_the_pipeline_in_the_background(tmp_path):
    trigger = Trigger(tmp_path, RetrainPolicy(action="local"))
    line = trigger.act(trigger.decide(summary(True)), tmp_path / "data")
    try:
        assert line["action"] == "local" and line["command"][1:4] == ["pipeline", "run", "--home"]
        os.kill(line["pid"], 0)  # running
        assert Path(line["log"]).exists()
    finally:
        try:
            os.killpg(line["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass  # it ended on its own
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.waitpid(line["pid"], os.WNOHANG)
        except ChildProcessError:
            break
        time.sleep(0.1)


def test_a_bad_policy_file_is_one_clear_line(tmp_path):
    bad = tmp_path / "policy.yaml"
    bad.write_text("max_drifted_share: 2\n")
    with pytest.raises(TriggerError, match="max_drifted_share"):
        RetrainPolicy.load(bad)
    bad.write_text("cooldown: 3\n")
    result = CliRunner().invoke(app, ["drift", "check", "--policy", str(bad), "--home", str(tmp_path)])
    assert result.exit_code == 1 and "cooldown" in result.output
    with pytest.raises(TriggerError, match="kubeflow_host"):
        RetrainPolicy(action="kubeflow").check()


def test_a_homes_served_log_is_labelled_by_the_reactions_that_came_back(tmp_path):
    """What servers logged (shadow records left out) joined to the event log: a reaction counts
    for the impression it followed, not one it preceded."""
    from monitoring.impression_log import from_served_log
    from newsfeed.data import event_log
    from newsfeed.feed.served_log import ServedLog

    home, data = tmp_path / "home", tmp_path / "home" / "data"
    log = ServedLog(home)
    shown_at = 1_790_000_000.0
    for request, (user, arm) in enumerate([(1, "champion"), (2, "canary"), (3, "champion")]):
        log.write({"request_id": f"r{request}", "ts": shown_at, "user_id": user, "arm": arm, "degraded": [],
                   "latency_ms": 12.5, "model_versions": {"ranker": "3"},
                   "items": [{"post_id": 10 + i, "position": i, "score": 1.0, "source": "ann",
                              "show_probability": 0.9} for i in range(3)]})
    log.write({"request_id": "r0", "ts": shown_at, "user_id": 1, "arm": "shadow", "shadow": True,
               "items": [{"post_id": 99, "position": 0, "score": 1.0}]})
    ts = pd.to_datetime([shown_at + 5, shown_at + 6, shown_at - 60, shown_at + 7], unit="s", utc=True)
    event_log.append(data, pd.DataFrame({"user_id": [1, 1, 2, 3], "post_id": [10, 10, 11, 12],
                                         "event_type": ["click", "dwell", "click", "hide"],
                                         "value": [1.0, 4.5, 1.0, 1.0], "ts": ts}))
    frame = from_served_log(home, data)
    assert len(frame) == 9 and set(frame["variant"]) == {"champion", "canary"}
    labelled = frame.set_index(["user_id", "post_id"])
    assert labelled.loc[(1, 10), "click"] == 1 and labelled.loc[(1, 10), "dwell_seconds"] == 4.5
    assert labelled.loc[(2, 11), "click"] == 0  # the click came before the post was shown
    assert labelled.loc[(3, 12), "hide"] == 1 and frame["click"].sum() == 1
    assert (frame["propensity"] == 0.9).all() and (frame["latency_ms"] == 12.5).all()
    report = analysis.analyse(frame, "champion", {"champion": 50, "canary": 50})
    assert report["arms"]["champion"]["users"] == 2 and report["arms"]["canary"]["impressions"] == 3

    quiet = tmp_path / "quiet"  # served, nothing came back: no event log at all
    ServedLog(quiet).write({"request_id": "q", "ts": shown_at, "user_id": 4, "arm": "champion", "degraded": [],
                            "items": [{"post_id": 5, "position": 0}]})
    unlabelled = from_served_log(quiet, quiet / "data")
    assert unlabelled[list(REACTIONS)].to_numpy().sum() == 0 and unlabelled["dwell_seconds"].tolist() == [0.0]


def test_a_kubeflow_retrain_that_cannot_reach_its_host_is_audited_not_raised(tmp_path):
    policy = RetrainPolicy(action="kubeflow", kubeflow_host="http://127.0.0.1:9")
    trigger = Trigger(tmp_path, policy)
    line = trigger.act(trigger.decide(summary(True)), tmp_path / "data")
    assert line["action"] == "kubeflow" and line["exit_code"] == 1
    assert "127.0.0.1:9" in line["output"]
