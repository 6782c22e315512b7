"""Real-data adapters: each turns one public dataset's files into the canonical tables."""

from __future__ import annotations

import importlib
from pathlib import Path

import pandas as pd

from newsfeed.data.adapters.base import AdapterError

FORMATS: dict[str, str] = {
    "movielens": "newsfeed.data.adapters.movielens",
    "open-bandit": "newsfeed.data.adapters.open_bandit",
    "mind": "newsfeed.data.adapters.mind",
    "ebnerd": "newsfeed.data.adapters.ebnerd",
}


def import_dataset(fmt: str, path: Path) -> dict[str, pd.DataFrame]:
    """Read a dataset of the given format at path into canonical tables."""
    if fmt not in FORMATS:
        raise AdapterError(f"unknown format {fmt!r}; known formats: {', '.join(FORMATS)}")
    path = Path(path)
    if not path.exists():
        raise AdapterError(f"{path}: no such file or directory")
    return importlib.import_module(FORMATS[fmt]).load(path)


__all__ = ["FORMATS", "AdapterError", "import_dataset"]
