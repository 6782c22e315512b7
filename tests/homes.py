"""Trained homes for tests: the session's one training run is made once (conftest's
``served_run``); a test that changes a home works on a copy."""

from __future__ import annotations

import shutil
from pathlib import Path

SERVED_RUN_ARGS = ("--scale", "0.15", "--epochs", "2")  # 300 users, 1,200 posts, 14 days: ~30k impressions


def copy_home(home: Path, to: Path) -> Path:
    """A copy of a trained home to change: registry, features, data and runs (artifacts stay
    where they were logged; the copy only reads them). What one server left behind (its user
    state, served log and cursor key) stays behind."""
    shutil.copytree(home, to, ignore=shutil.ignore_patterns("user_state.sqlite*", "impressions", "cursor.key"))
    return to
