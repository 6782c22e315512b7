"""Canonical tables on disk: one parquet file per table plus a manifest."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from newsfeed.schema import TABLES

MANIFEST = "manifest.json"


def table_path(data_dir: Path, table: str) -> Path:
    return Path(data_dir) / f"{table}.parquet"


def write_dataset(data_dir: Path, tables: dict[str, pd.DataFrame], source: str, **details) -> dict:
    """Write the tables and a manifest saying where they came from; return the manifest."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        if name not in TABLES:
            raise ValueError(f"unknown table {name!r}; canonical tables are {TABLES}")
        df.to_parquet(table_path(data_dir, name), index=False)
    manifest = {
        "source": source,
        "written_at": datetime.now(timezone.utc).isoformat(),
        "rows": {name: len(df) for name, df in tables.items()},
        **details,
    }
    (data_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    return manifest


def read_manifest(data_dir: Path) -> dict:
    path = Path(data_dir) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else {}


def read_table(data_dir: Path, table: str) -> pd.DataFrame:
    path = table_path(data_dir, table)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such table (run `newsfeed data generate` or `newsfeed data import`)")
    return pd.read_parquet(path)


def read_dataset(data_dir: Path, tables: tuple[str, ...] = TABLES) -> dict[str, pd.DataFrame]:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: no such data directory")
    return {t: read_table(data_dir, t) for t in tables if table_path(data_dir, t).exists()}


def fingerprint(data_dir: Path) -> str:
    """A short content hash of the canonical tables: the data snapshot a model was trained on."""
    digest = hashlib.sha256()
    for table in TABLES:
        path = table_path(data_dir, table)
        if path.exists():
            digest.update(table.encode())
            with path.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()[:16]
