"""Bad input and faults, tried as a new user would: each ends in one clear line and exit code 1,
before any work, with nothing written, registered or left stale."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from newsfeed.cli import app
from newsfeed.data.world import WORLD_FILE

runner = CliRunner()
TINY = ["--users", "30", "--posts", "60", "--days", "3"]


def one_error_line(result, *fragments: str) -> str:
    """The command failed with exit code 1 and one line, ``error: ...``, holding ``fragments``."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("args, fragments", [
    (["--scale", "0"], ["--scale", "greater than 0"]),
    (["--scale", "-2"], ["--scale"]),
    (["--scale", "nan"], ["--scale", "finite"]),
    (["--epochs", "0"], ["--epochs", "greater than or equal to 1"]),
    (["--trainer", "gpu"], ["--trainer", "local, ray", "'gpu'"]),
    (["--ranker-architecture", "transformer"], ["--ranker-architecture", "mmoe"]),
    (["--ranker-from", "latest"], ["--ranker-from", "challenger, champion or a version number"]),
    (["--ranker-from", "0"], ["--ranker-from", "a version number"]),
    (["--gate-tolerance", "inf"], ["--gate-tolerance"]),
    (["--store", "cloud"], ["--store", "embedded, production"]),
])
def test_pipeline_options_are_checked_before_any_work(tmp_path, args, fragments):
    home = tmp_path / "home"
    one_error_line(runner.invoke(app, ["pipeline", "run", "--home", str(home), *args]), *fragments)
    assert not home.exists()  # nothing simulated, no run folder


@pytest.mark.parametrize("args, fragments", [
    (["--from", "champion", "--architecture", "mmoe"], ["--architecture", "keeps its base's architecture"]),
    (["--from", "champion", "--ray-workers", "2"], ["--ray-workers", "in this process"]),
    (["--from", "champion", "--refit"], ["--refit", "no early stopping"]),
    (["--from", "champion", "--teachers", "2"], ["--teachers", "not from teachers"]),
    (["--from", "champion", "--epochs", "0"], ["epochs", "greater than or equal to 1"]),
])
def test_fine_tune_options_are_checked_before_any_work(home, args, fragments):
    one_error_line(runner.invoke(app, ["train", "ranker", *args]), *fragments)
    assert not home.exists()


@pytest.mark.parametrize("message, line", [("", "ValueError"), ("\n  \n", "ValueError"),
                                           ("\n  first\nsecond", "first")])
def test_an_error_is_told_in_one_line_even_without_a_message(message, line):
    from newsfeed.errors import first_line

    assert first_line(ValueError(message)) == line


def test_simulation_settings_are_checked_and_nothing_is_written(home):
    one_error_line(runner.invoke(app, ["data", "generate", *TINY, "--sessions-per-day", "inf"]),
                   "--sessions-per-day", "finite")
    assert not home.exists()


def test_an_empty_ratings_file_is_named_and_nothing_is_written(tmp_path):
    source = tmp_path / "ml"
    source.mkdir()
    fixtures = Path(__file__).parent / "fixtures" / "movielens"
    for name in ("u.item", "u.user"):
        (source / name).write_bytes((fixtures / name).read_bytes())
    (source / "u.data").write_text("")
    out = tmp_path / "out"
    one_error_line(runner.invoke(app, ["data", "import", "movielens", str(source), "--out", str(out)]),
                   "u.data", "empty file")
    assert not out.exists()


def test_a_truncated_table_is_named_and_validation_writes_nothing(home):
    assert runner.invoke(app, ["data", "generate", *TINY]).exit_code == 0
    table = home / "data" / "impressions.parquet"
    table.write_bytes(table.read_bytes()[:300])
    one_error_line(runner.invoke(app, ["data", "summary"]), "impressions.parquet", "cannot be read as parquet")
    one_error_line(runner.invoke(app, ["data", "validate"]), "impressions.parquet", "truncated")
    assert not (home / "data" / "quarantine").exists()


def test_a_corrupt_manifest_is_named_and_force_gets_past_it(home):
    assert runner.invoke(app, ["data", "generate", *TINY]).exit_code == 0
    (home / "data" / "manifest.json").write_text("{not json")
    one_error_line(runner.invoke(app, ["data", "generate", *TINY]), "manifest.json", "--force")
    forced = runner.invoke(app, ["data", "generate", *TINY, "--force"])
    assert forced.exit_code == 0, forced.output
    assert json.loads((home / "data" / "manifest.json").read_text())["source"] == "simulator"


def test_force_replaces_the_dataset_whole(home, tmp_path):
    from newsfeed.data.event_log import parts
    from newsfeed.data.world import World

    assert runner.invoke(app, ["data", "generate", *TINY, "--seed", "1"]).exit_code == 0
    data = home / "data"
    events = tmp_path / "events.jsonl"
    events.write_text('{"user_id": 1, "post_id": 2, "event_type": "like"}\n')
    assert runner.invoke(app, ["features", "push", str(events)]).exit_code == 0
    assert parts(data) and (data / WORLD_FILE).exists()
    validated = runner.invoke(app, ["data", "validate"])
    assert validated.exit_code == 0 and (data / "quarantine").exists()
    old_world = World.load(data / WORLD_FILE)

    smaller = ["--users", "20", "--posts", "40", "--days", "2", "--seed", "2"]
    assert runner.invoke(app, ["data", "generate", *smaller, "--force"]).exit_code == 0
    assert not parts(data), "the old event log leaked into the new dataset"
    assert not (data / "quarantine").exists()
    new_world = World.load(data / WORLD_FILE)
    assert new_world.interest_before.shape[0] == 20 != old_world.interest_before.shape[0]
    assert len(pd.read_parquet(data / "posts.parquet")) == 40
    assert not [p for p in data.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_force_refuses_a_folder_that_holds_more_than_a_dataset(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    result = runner.invoke(app, ["data", "generate", *TINY, "--data-dir", str(folder), "--force"])
    one_error_line(result, "notes.txt", "not part of a dataset")
    assert (folder / "notes.txt").read_text() == "keep me"


def test_an_interrupted_table_write_leaves_the_old_table_intact(tmp_path, monkeypatch):
    from newsfeed.data.io import read_table, write_dataset
    from newsfeed.data.simulator import SimConfig, generate

    tables, _ = generate(SimConfig(users=20, posts=40, days=2))
    write_dataset(tmp_path, tables, source="simulator")
    before = pd.read_parquet(tmp_path / "posts.parquet")

    real = pd.DataFrame.to_parquet

    def dies_midway(frame, path, *args, **kwargs):
        real(frame, path, *args, **kwargs)
        Path(path).write_bytes(Path(path).read_bytes()[:100])  # half a file on disk, then the crash
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_parquet", dies_midway)
    changed = tables["posts"].assign(text="rewritten")
    with pytest.raises(KeyboardInterrupt):
        write_dataset(tmp_path, {**tables, "posts": changed}, source="simulator")
    monkeypatch.undo()
    pd.testing.assert_frame_equal(read_table(tmp_path, "posts"), before)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


CHILD = """
import sys
import numpy as np, pandas as pd
from pathlib import Path
from newsfeed import atomic
path = Path(sys.argv[1])
for version in range(1, 10_000):
    atomic.write_parquet(pd.DataFrame({"version": np.full(2_000_000, version)}), path)
    print(version, flush=True)
"""


def test_a_process_killed_while_writing_never_leaves_a_torn_table(tmp_path):
    """SIGKILL a writer mid-stream, several times: the table is always one whole version."""
    path = tmp_path / "table.parquet"
    for attempt in range(3):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip()  # one version is in place
        time.sleep(0.05 + 0.07 * attempt)  # then kill it somewhere inside a later write
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        versions = pd.read_parquet(path)["version"].to_numpy()
        assert len(versions) == 2_000_000 and (versions == versions[0]).all()


def test_unreachable_services_are_named_within_seconds(home, monkeypatch):
    monkeypatch.setenv("NEWSFEED_REDIS", "127.0.0.1:1")
    one_error_line(runner.invoke(app, ["features", "apply", "--store", "production"]),
                   "cannot reach the Feast online store (Redis) at 127.0.0.1:1")
    monkeypatch.setenv("NEWSFEED_MLFLOW_URI", "postgresql://postgres@127.0.0.1:1/test")
    one_error_line(runner.invoke(app, ["models", "list", "--registry", "production"]),
                   "cannot reach the MLflow backend (PostgreSQL) at 127.0.0.1:1/test")
    monkeypatch.delenv("NEWSFEED_REDIS")
    started = time.perf_counter()
    result = runner.invoke(app, ["pipeline", "run", "--registry", "production"])
    one_error_line(result, "cannot reach the MLflow backend (PostgreSQL) at 127.0.0.1:1/test")
    assert not (home / "pipeline-runs").exists() and not (home / "data").exists()
    print(f"pipeline run with an unreachable registry failed after {time.perf_counter() - started:.1f} s")


def test_the_experiment_commands_name_an_unreachable_state_store_and_refuse_a_stale_change(home, monkeypatch):
    monkeypatch.setenv("NEWSFEED_REDIS", "127.0.0.1:1")
    started = time.perf_counter()
    one_error_line(runner.invoke(app, ["experiment", "show", "--state", "production"]),
                   "the experiment store (Redis at 127.0.0.1:1) cannot be reached")
    assert time.perf_counter() - started < 5
    one_error_line(runner.invoke(app, ["experiment", "show", "--state", "cloud"]),
                   "--state 'cloud': expected one of embedded, production")
    # Two owners: the second change was based on a version the first already replaced.
    from newsfeed.feed.arms import Arm, Experiment
    from newsfeed.feed.experiments import ExperimentStore, VersionConflict

    store = ExperimentStore.open(home)
    read_by_both = store.read()
    assert runner.invoke(app, ["experiment", "set", "--arm", "champion=90", "--arm", "canary=10"]).exit_code == 0
    with pytest.raises(VersionConflict, match="based on version 0, the current version is 1"):
        store.save(Experiment(arms=[Arm(name="champion", share=100)]), read_by_both.version)
    assert store.read().arm("canary").share == 10


def test_a_broken_registry_is_an_error_not_an_empty_one(tmp_path):
    from newsfeed.registry import TWO_TOWER, Registry, RegistryError

    registry = Registry.open(tmp_path)
    assert registry.versions(TWO_TOWER) == [] and registry.aliases(TWO_TOWER) == {}  # truly empty
    (tmp_path / "mlflow" / "mlflow.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(RegistryError, match="cannot read newsfeed-two-tower from the embedded registry"):
        Registry.open(tmp_path).versions(TWO_TOWER)


def test_features_get_before_materialize_warns(home):
    assert runner.invoke(app, ["data", "generate", *TINY]).exit_code == 0
    assert runner.invoke(app, ["features", "apply"]).exit_code == 0
    result = runner.invoke(app, ["features", "get", "--user-id", "1", "--post-id", "2"])
    assert result.exit_code == 0 and "warning: the embedded online store has no values" in result.output
    assert runner.invoke(app, ["features", "materialize"]).exit_code == 0
    result = runner.invoke(app, ["features", "get", "--user-id", "1", "--post-id", "2"])
    assert result.exit_code == 0 and "warning" not in result.output


def test_unexpected_errors_keep_their_traceback(home, monkeypatch):
    """Only the project's own errors become one line; a bug still shows where it happened."""
    import newsfeed.data.simulator as simulator

    monkeypatch.setattr(simulator, "generate", lambda *a, **k: np.array([])[5])
    result = runner.invoke(app, ["data", "generate", *TINY])
    assert result.exit_code == 1 and isinstance(result.exception, IndexError)
