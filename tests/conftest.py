"""Shared fixtures: a small simulated dataset, the real datasets beside the repo, temp homes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from homes import SERVED_RUN_ARGS

FIXTURES = Path(__file__).parent / "fixtures"
SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """../shared/datasets; tests that need it skip where it is absent (CI has it)."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATASETS} (../shared beside the repo)")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def sim():
    """A simulated network large enough for effect and calibration tests (about 90k impressions)."""
    from newsfeed.data.simulator import SimConfig, generate

    config = SimConfig(seed=11, users=1_000, posts=4_000, days=14)
    tables, world = generate(config)
    return config, tables, world


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    """An empty NEWSFEED_HOME for commands that write local state."""
    monkeypatch.setenv("NEWSFEED_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("NEWSFEED_DATA_DIR", raising=False)
    return tmp_path / "home"


@pytest.fixture(scope="session")
def served_run(tmp_path_factory):
    """(home, the command's result) of the session's one training run: a small simulated
    network through the real pipeline, both champions registered with their index. Made once
    per session; a test that changes a home copies it (``copy_home``)."""
    from typer.testing import CliRunner

    from newsfeed.cli import app

    home = tmp_path_factory.mktemp("served") / "home"
    result = CliRunner().invoke(app, ["pipeline", "run", "--home", str(home), *SERVED_RUN_ARGS])
    assert result.exit_code == 0, result.output
    return home, result


@pytest.fixture(scope="session")
def served_home(served_run) -> Path:
    """The home the feed's and the serving tests serve (``served_run``'s)."""
    return served_run[0]

