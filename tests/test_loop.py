"""The closed loop end to end, scaled down: the session's trained home served by two replicas
on the simulated clock, users reading and reacting over HTTP, interests drifting, the drift
check firing a retrain on what was served, a canary and its verdict; the learned ranker
against the most-popular and random baselines on the same users; the page in a browser."""

from __future__ import annotations

import json

import pytest
from browser import dom, needs_chromium, render, screenshot
from typer.testing import CliRunner

from newsfeed.cli import app

pytestmark = pytest.mark.slow

DAYS, DRIFT_DAY = 5, 3
NETWORK = ("--users", "600", "--posts", "2400")
"""Twice the session home's users: three arms side by side need about 200 users each for the
intervals of their realised engagement to part."""


@pytest.fixture(scope="module")
def loop_run(tmp_path_factory):
    runner = CliRunner()
    home = tmp_path_factory.mktemp("loop") / "home"
    for args in (["data", "generate", *NETWORK, "--drift-day", "-1"], ["pipeline", "run", "--epochs", "2"]):
        result = runner.invoke(app, [*args, "--home", str(home)])
        assert result.exit_code == 0, result.output[-3000:]
    canary = home.parent / "canary.yaml"
    canary.write_text("min_users: 20\nmax_hours: 20\n")  # a verdict within the scaled-down run
    result = runner.invoke(app, ["simulate", "--home", str(home), "--days", str(DAYS), "--drift-day", str(DRIFT_DAY),
                                 "--reference-days", "1", "--arms", "champion,most_popular,random",
                                 "--retrain-epochs", "2", "--step-hours", "3", "--canary-policy", str(canary),
                                 "--json"])
    assert result.exit_code == 0, result.output[-3000:]
    return home, json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def test_the_learned_ranker_beats_the_baselines_on_the_same_users(loop_run):
    _, summary, _ = loop_run
    arms = summary["arms"]
    assert {"champion", "most_popular", "random"} <= set(arms)
    for name in ("champion", "most_popular", "random"):
        arm = arms[name]
        assert arm["users"] >= 50 and arm["impressions"] >= 1_000
        low, high = arm["engagement_per_impression"]["ci"]
        assert low < arm["engagement_per_impression"]["estimate"] < high
    learned = arms["champion"]["engagement_per_impression"]["ci"][0]
    for baseline in ("most_popular", "random"):
        assert learned > arms[baseline]["engagement_per_impression"]["ci"][1], (baseline, arms)
    # The loop's realised engagement follows the world's truth: the true expectation orders the arms alike.
    expected = {name: arm["expected_per_impression"]["estimate"] for name, arm in arms.items()}
    assert expected["champion"] > expected["most_popular"] > expected["random"]


def test_drift_fires_a_retrain_on_what_was_served_and_the_canary_is_decided(loop_run):
    home, summary, progress = loop_run
    checks = summary["drift_checks"]
    before = [c for c in checks if c["day"] <= DRIFT_DAY]
    assert before and not any(c["retrain"] for c in before), before  # before the drift: quiet
    (retrain,) = [r for r in summary["retrains"] if r["exit_code"] == 0][:1]
    assert retrain["day"] > DRIFT_DAY and retrain["reasons"] and "canary" in retrain
    decided = [d for d in summary["decisions"] if d["done"]]
    assert decided, summary["decisions"]
    verdict = decided[0]["verdicts"][0]
    assert verdict["arm"] == "challenger" and verdict["action"] in ("promote", "rollback")
    # The challenger trained a day after the drift is ahead of the stale champion on the drifted hours
    # it was held out from (the gate's paired comparison on the same feeds, by the world's true
    # engagement) and passes the gate. Ahead, not beyond noise: reading hourly post counters the stale
    # champion follows part of the drift, and one training's draw moves the lead (README, the loop).
    gate = retrain["gate"]
    assert gate["primary"] and gate["passed"] and gate["paired"]["difference"] > 0, gate
    assert {"challenger", "champion"} <= set(summary["canaries"][0]["arms"])
    # The retrain learned from the served log: absorbed impressions of the loop's arms are in its data.
    from newsfeed.data.io import read_table

    variants = set(read_table(home / "data", "impressions")["variant"])
    assert {"champion", "most_popular", "random"} <= variants
    assert "interests drift" in progress and "retrain on day" in progress


@needs_chromium
def test_the_loop_page_shows_engagement_per_arm_and_the_retrain(loop_run, tmp_path):
    _, summary, _ = loop_run
    page = __import__("pathlib").Path(summary["out"]) / "index.html"
    text = render(page)
    assert "realised engagement per impression" in text and "retrain" in text
    for arm in ("champion", "most_popular", "random"):
        assert arm in text
    assert f"{summary['arms']['champion']['engagement_per_impression']['estimate']:.4f}" in text
    assert dom(page).count("<polyline") >= 4  # three arms' lines (and the challenger's) and the drift statistic
    assert screenshot(page, tmp_path / "loop.png").stat().st_size > 10_000
