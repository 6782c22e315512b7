"""Where local state lives.

All local state sits under one home folder: an explicit ``--home``, else
``NEWSFEED_HOME``, else ``./.newsfeed``. Data commands also take a data dir:
explicit, else ``NEWSFEED_DATA_DIR``, else ``<home>/data``. Deleting the home
folder resets everything.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

DEFAULT_HOME = ".newsfeed"


class Paths(BaseModel):
    """The resolved locations of local state."""

    home: Path
    data_dir: Path

    @classmethod
    def resolve(cls, home: Path | str | None = None, data_dir: Path | str | None = None) -> "Paths":
        home_path = Path(home or os.environ.get("NEWSFEED_HOME") or DEFAULT_HOME)
        data_path = Path(data_dir or os.environ.get("NEWSFEED_DATA_DIR") or home_path / "data")
        return cls(home=home_path, data_dir=data_path)

    @property
    def pipeline_runs(self) -> Path:
        """Where local pipeline runs keep their artifacts, one folder per run."""
        return self.home / "pipeline-runs"

    @property
    def last_gate_decision(self) -> Path:
        """The gate's decision of the latest local pipeline run (a job that ran one reads it)."""
        return self.pipeline_runs / "last-gate-decision.json"
