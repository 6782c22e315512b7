"""Drift monitoring end to end: two simulated networks through the real pipeline, one whose
users' interests move after the champion was trained and one whose never do; the same
thresholds must fire on the first and stay quiet on the second. The report pages are
rendered in a real browser (headless Chromium)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from browser import needs_chromium, render
from typer.testing import CliRunner

from newsfeed.cli import app

pytestmark = pytest.mark.slow


def _pipeline_home(root: Path, *generate: str) -> Path:
    runner = CliRunner()
    home = root / "home"
    result = runner.invoke(app, ["data", "generate", "--home", str(home), "--users", "300", "--posts", "1200",
                                 *generate])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["pipeline", "run", "--home", str(home), "--epochs", "2"])
    assert result.exit_code == 0, result.output
    return home


@pytest.fixture(scope="module")
def drifted_home(tmp_path_factory) -> Path:
    """Interests move strongly on day 11 of 14: after the champion's training window (days 0-10)."""
    return _pipeline_home(tmp_path_factory.mktemp("drifted"), "--seed", "7", "--drift-day", "11",
                          "--drift-strength", "0.9")


@pytest.fixture(scope="module")
def steady_home(tmp_path_factory) -> Path:
    """Another seed, interests that never move."""
    return _pipeline_home(tmp_path_factory.mktemp("steady"), "--seed", "11", "--drift-day", "-1")


def drift_check(home: Path, *extra: str) -> dict:
    result = CliRunner().invoke(app, ["drift", "check", "--home", str(home), "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_drift_fires_the_trigger_on_moving_interests_and_the_cooldown_holds(drifted_home):
    policy = drifted_home.parent / "policy.yaml"
    policy.write_text("action: none\n")  # the decision and its audit, without a real retrain
    first = drift_check(drifted_home, "--policy", str(policy))
    assert first["drifted"] and first["retrain"]
    assert any("clicked_post_topic" in reason for reason in first["reasons"])
    assert first["target"]["clicked_post_topic"]["score"] < 1e-4
    assert first["drifted_features"] and set(first["drifted_features"]) <= set(first["features"])
    # the windows are the champion's last training days and the last day of traffic
    assert first["reference"]["end"] < "2026-10-11T00:00:01" < first["current"]["start"]
    assert first["immature_features"] and all("_30d" in f or "topic_" in f for f in first["immature_features"])

    second = drift_check(drifted_home, "--policy", str(policy))
    assert second["drifted"] and not second["retrain"] and "cooldown" in second["suppressed"]
    audit = [json.loads(line) for line in (drifted_home / "monitoring" / "audit.log").read_text().splitlines()]
    assert [line["retrain"] for line in audit] == [True, False]


def test_drift_stays_quiet_on_steady_interests_with_the_same_thresholds(steady_home):
    policy = steady_home.parent / "policy.yaml"
    policy.write_text("action: none\n")
    result = drift_check(steady_home, "--policy", str(policy))
    assert not result["drifted"] and not result["retrain"] and result["reasons"] == []
    assert result["target"]["clicked_post_topic"]["score"] > 0.01
    assert not (steady_home / "monitoring" / "trigger.json").exists()


def test_drift_compares_two_data_folders_when_given(steady_home):
    data = str(steady_home / "data")
    policy = steady_home.parent / "policy.yaml"
    policy.write_text("action: none\n")
    result = drift_check(steady_home, "--reference", data, "--current", data, "--policy", str(policy))
    assert result["drifted_features"] == [] and not result["retrain"]  # a window against itself
    missing = CliRunner().invoke(app, ["drift", "check", "--home", str(steady_home), "--reference", "/nonexistent"])
    assert missing.exit_code == 1 and "/nonexistent" in missing.output


@needs_chromium
def test_drift_report_pages_render_in_a_browser_with_the_verdict_and_figures(drifted_home, steady_home):
    runner = CliRunner()
    for home in (steady_home, drifted_home):
        (home.parent / "policy.yaml").write_text("action: none\ncooldown_hours: 0\n")
        result = runner.invoke(app, ["drift", "report", "--home", str(home), "--policy", str(home.parent / "policy.yaml")])
        assert result.exit_code == 0, result.output
    folder = sorted((drifted_home / "monitoring" / "drift").glob("2*"))[-1]
    summary = json.loads((folder / "summary.json").read_text())
    text = render(folder / "report.html")
    assert "Verdict: DRIFT; retrain fired." in text
    assert f"{len(summary['drifted_features'])} of {len(summary['features'])} features drifted" in text
    assert "clicked_post_topic" in text and "engagement_score" in text
    assert f"{summary['prediction']['engagement_score']['score']:.4f}" in text

    evidently = render(folder / "evidently.html")  # Evidently's React page, drawn by its scripts
    assert "Dataset Drift" in evidently and "Drifted Columns" in evidently

    runner.invoke(app, ["drift", "report", "--home", str(drifted_home), "--policy",
                        str(drifted_home.parent / "policy.yaml")])
    index = render(drifted_home / "monitoring" / "drift" / "index.html")
    reports = sorted((drifted_home / "monitoring" / "drift").glob("2*"), reverse=True)
    assert f"{len(reports)} reports, newest first" in index
    assert index.index(json.loads((reports[0] / "summary.json").read_text())["time"]) < \
        index.index(json.loads((reports[-1] / "summary.json").read_text())["time"])
    assert "DRIFT" in index and "fired" in index
    steady = render(sorted((steady_home / "monitoring" / "drift").glob("2*"))[-1] / "report.html")
    assert "Verdict: no drift; no retrain." in steady


@needs_chromium
def test_experiment_report_page_renders_with_lifts_and_srm(steady_home, tmp_path):
    runner = CliRunner()
    home = str(tmp_path / "exp")
    assert runner.invoke(app, ["experiment", "set", "--arm", "champion=50", "--arm", "challenger=50",
                               "--home", home]).exit_code == 0
    result = runner.invoke(app, ["experiment", "simulate", "--out", str(tmp_path / "ab"), "--quality", "champion=0.3",
                                 "--quality", "challenger=1", "--days", "14", "--home", home,
                                 "--data-dir", str(steady_home / "data")])
    assert result.exit_code == 0, result.output
    page = tmp_path / "report.html"
    result = runner.invoke(app, ["experiment", "report", "--data-dir", str(tmp_path / "ab"), "--home", home,
                                 "--html", str(page), "--json"])
    report = json.loads(result.output)
    text = render(page)
    assert f"SRM p = {report['srm']['p_value']:.4g}: split as configured" in text
    lift = report["arms"]["challenger"]["lift_ctr"]
    assert lift["ci"][0] > 0
    assert f"{lift['estimate']:+.1%} [{lift['ci'][0]:+.1%}, {lift['ci'][1]:+.1%}]" in text
    assert f"{report['arms']['champion']['users']:,}" in text


def test_promote_moves_the_champion_alias_and_the_traffic(steady_home):
    from newsfeed.feed.experiments import ExperimentStore
    from newsfeed.registry import RANKER, TWO_TOWER, Registry

    runner = CliRunner()
    home = str(steady_home)
    result = runner.invoke(app, ["experiment", "set", "--arm", "champion=90", "--arm", "canary=10",
                                 "--model", "canary=1", "--home", home])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["experiment", "promote", "canary", "--home", home])
    assert result.exit_code == 0, result.output
    registry = Registry.open(steady_home)
    assert registry.aliases(TWO_TOWER)["champion"] == "1" and registry.aliases(RANKER)["champion"] == "1"
    shares = {a.name: a.share for a in ExperimentStore.open(steady_home).read().arms}
    assert shares == {"champion": 100.0, "canary": 0.0}
    unknown = runner.invoke(app, ["experiment", "promote", "nobody", "--home", home])
    assert unknown.exit_code == 1 and "nobody" in unknown.output
