"""The serving commands that need no running server: experiments, the Serve config, and
the errors a user meets before anything starts."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from newsfeed.cli import app

runner = CliRunner()


def test_experiment_set_and_show_keep_versions_and_refuse_bad_shares(home):
    result = runner.invoke(app, ["experiment", "set", "--arm", "champion=90", "--arm", "canary=10"])
    assert result.exit_code == 0, result.output
    assert "canary" in result.output and "challenger" in result.output  # a new arm serves the challenger
    saved = yaml.safe_load((home / "serving" / "experiment.yaml").read_text())
    assert [(a["name"], a["share"], a["ranker"]) for a in saved["arms"]] == [("champion", 90, "champion"),
                                                                            ("canary", 10, "challenger")]
    assert saved["version"] == 1 and (home / "serving" / "experiments" / "v1.yaml").exists()
    bad = runner.invoke(app, ["experiment", "set", "--arm", "champion=90", "--arm", "canary=20"])
    assert bad.exit_code == 1 and "sum to 100" in bad.output
    assert yaml.safe_load((home / "serving" / "experiment.yaml").read_text())["version"] == 1  # nothing lost
    malformed = runner.invoke(app, ["experiment", "set", "--arm", "champion"])
    assert malformed.exit_code == 1 and "NAME=VALUE" in malformed.output
    again = runner.invoke(app, ["experiment", "set", "--arm", "champion=100", "--model", "champion=3"])
    assert again.exit_code == 0, again.output
    shown = runner.invoke(app, ["experiment", "show"])
    assert "version 2" in shown.output and "canary" not in shown.output and " 3 " in shown.output


def test_serve_build_writes_a_config_rays_schema_accepts(home, tmp_path):
    from ray.serve.schema import ServeDeploySchema

    out = tmp_path / "serve.yaml"
    result = runner.invoke(app, ["serve", "--mode", "chained", "--replicas", "2", "build", "--output", str(out)])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load(out.read_text())
    ServeDeploySchema.model_validate(config)
    application = config["applications"][0]
    assert application["import_path"] == "serving.app:app_builder"
    assert application["args"]["mode"] == "chained"
    assert {d["name"] for d in application["deployments"]} == {"feed-ingress", "feed-retrieval", "feed-ranking",
                                                               "feed-reranking"}
    assert "TOKEN" not in out.read_text().upper()  # the admin token comes from the environment, never the file


def test_serve_refuses_a_home_without_models_before_starting_ray(home):
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 1 and "no data to serve" in result.output
    bad_mode = runner.invoke(app, ["serve", "--mode", "sideways"])
    assert bad_mode.exit_code == 1 and "mode" in bad_mode.output
    bad_ingress = runner.invoke(app, ["serve", "--ingress", "nginx"])  # checked before the home is
    assert bad_ingress.exit_code == 1 and "--ingress 'nginx': expected one of haproxy, proxy" in bad_ingress.output


def test_feed_names_the_address_it_cannot_reach():
    result = runner.invoke(app, ["feed", "7", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "cannot reach the feed service at http://127.0.0.1:9" in result.output
