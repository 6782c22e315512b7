"""The command line as a user drives it: help everywhere, generate -> validate -> summary."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from newsfeed.cli import app
from newsfeed.data.io import read_manifest
from newsfeed.data.world import World

runner = CliRunner()
SMALL = ["--users", "120", "--posts", "400", "--days", "3"]


@pytest.mark.parametrize("command", [[], ["data"], ["data", "generate"], ["data", "import"], ["data", "validate"],
                                     ["data", "summary"], ["features"], ["features", "apply"],
                                     ["features", "materialize"], ["features", "training-set"], ["features", "push"],
                                     ["features", "get"], ["train"], ["train", "two-tower"], ["train", "ranker"],
                                     ["evaluate"], ["models"], ["models", "list"], ["models", "promote"], ["index"],
                                     ["index", "build"], ["package"]])
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_help_does_not_import_heavy_libraries():
    code = ("import sys; from newsfeed.cli import app; "
            "print(sorted(m for m in ('pandas', 'torch', 'pandera', 'feast', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_generate_validate_summary(home):
    generated = runner.invoke(app, ["data", "generate", *SMALL, "--seed", "2"])
    assert generated.exit_code == 0, generated.output
    data = home / "data"
    assert read_manifest(data)["config"]["users"] == 120
    assert World.load(data / "truth" / "world.npz").n_users == 120

    validated = runner.invoke(app, ["data", "validate"])
    assert validated.exit_code == 0, validated.output
    assert "impressions" in validated.output

    summary = runner.invoke(app, ["data", "summary"])
    assert summary.exit_code == 0, summary.output
    assert "true mean p" in summary.output and "friend_request" in summary.output


def test_generate_is_idempotent_and_guards_other_data(home):
    assert runner.invoke(app, ["data", "generate", *SMALL]).exit_code == 0
    again = runner.invoke(app, ["data", "generate", *SMALL])
    assert again.exit_code == 0 and "nothing to do" in again.output
    other = runner.invoke(app, ["data", "generate", *SMALL, "--seed", "99"])
    assert other.exit_code == 1 and "--force" in other.output
    forced = runner.invoke(app, ["data", "generate", *SMALL, "--seed", "99", "--force"])
    assert forced.exit_code == 0 and read_manifest(home / "data")["config"]["seed"] == 99


def test_data_dir_option_and_bad_flags(home, tmp_path):
    custom = tmp_path / "elsewhere"
    assert runner.invoke(app, ["data", "generate", *SMALL, "--data-dir", str(custom)]).exit_code == 0
    assert (custom / "impressions.parquet").exists() and not (home / "data").exists()
    bad = runner.invoke(app, ["data", "generate", "--users", "3"])
    assert bad.exit_code == 1 and "users" in bad.output
    missing = runner.invoke(app, ["data", "summary", str(tmp_path / "nothing")])
    assert missing.exit_code == 1 and "no such data directory" in missing.output


def test_features_apply_materialize_training_set_push_get(home, tmp_path):
    import pandas as pd

    assert runner.invoke(app, ["data", "generate", *SMALL]).exit_code == 0
    early = runner.invoke(app, ["features", "materialize"])
    assert early.exit_code == 1 and "newsfeed features apply" in early.output
    applied = runner.invoke(app, ["features", "apply"])
    assert applied.exit_code == 0, applied.output
    assert "7 feature views" in applied.output and "2 feature services" in applied.output
    materialized = runner.invoke(app, ["features", "materialize"])
    assert materialized.exit_code == 0, materialized.output
    assert "online store (embedded) emptied and loaded" in materialized.output
    assert "user_author_affinity" in materialized.output
    again = runner.invoke(app, ["features", "materialize"])
    assert again.exit_code == 0 and "updated: 0 of" in again.output, again.output

    out = tmp_path / "train.parquet"
    built = runner.invoke(app, ["features", "training-set", "--out", str(out), "--sample", "150"])
    assert built.exit_code == 0, built.output
    frame = pd.read_parquet(out)
    assert len(frame) == 150 and "request_features__post_age_bucket" in frame.columns

    events = tmp_path / "events.jsonl"
    events.write_text('{"user_id": 1, "post_id": 2, "event_type": "like"}\n'
                      '{"user_id": 1, "post_id": 2, "event_type": "wave"}\n')
    pushed = runner.invoke(app, ["features", "push", str(events)])
    assert pushed.exit_code == 0, pushed.output
    assert "accepted 1 events" in pushed.output and "rejected #1: event_type" in pushed.output
    events.write_text('{"user_id": 1, "post_id": 2, "event_type": "wave"}\n')
    assert runner.invoke(app, ["features", "push", str(events)]).exit_code == 1
    # Through the store serving reads: a pushed hide reaches the filters, an id is remembered.
    events.write_text('{"user_id": 1, "post_id": 3, "event_type": "hide", "event_id": "cli-1"}\n')
    assert runner.invoke(app, ["features", "push", str(events)]).exit_code == 0
    again = runner.invoke(app, ["features", "push", str(events), "--json"])
    assert again.exit_code == 0 and '"duplicates": 1' in again.output, again.output
    from newsfeed.feed.user_state import open_user_state

    assert 3 in open_user_state(home).read(1, time.time()).hidden.tolist()

    got = runner.invoke(app, ["features", "get", "--user-id", "1", "--post-id", "2", "--post-id", "3"])
    assert got.exit_code == 0, got.output
    assert "online features, user 1" in got.output


def test_unknown_feature_store_is_a_clear_error(home):
    result = runner.invoke(app, ["features", "apply", "--store", "cloud"])
    assert result.exit_code == 1 and "unknown feature store 'cloud'" in result.output


@pytest.mark.parametrize("args, message", [
    (["train", "ranker", "--architecture", "transformer"], "--architecture"),
    (["train", "two-tower", "--epochs", "0"], "--epochs"),
    (["train", "ranker", "--recency-half-life", "-2"], "--recency-half-life"),
    (["models", "promote", "wide-and-deep"], "unknown model"),
])
def test_bad_training_settings_fail_clearly_before_any_work(home, args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and message in result.output
    assert not (home / "mlflow").exists()  # nothing was created on the way to the error
