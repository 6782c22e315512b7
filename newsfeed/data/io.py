"""Canonical tables on disk: one parquet file per table plus a manifest.

Every file is written whole or not at all (``newsfeed.atomic``), and a dataset is
replaced whole: ``replace_dataset`` builds the new one beside the old and swaps them,
so no table, truth or event log of the old dataset survives into the new one, and a
failure on the way leaves the old one as it was.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from newsfeed import atomic
from newsfeed.data import table_log
from newsfeed.errors import DataError, first_line
from newsfeed.schema import TABLES

MANIFEST = "manifest.json"
DATASET_ENTRIES = {f"{t}.parquet" for t in TABLES} | {MANIFEST, "truth", "quarantine", *table_log.LOG_DIRS.values()}
"""What a data folder holds: the tables, the manifest, the simulator's truth, the logs, quarantine."""


def table_path(data_dir: Path, table: str) -> Path:
    return Path(data_dir) / f"{table}.parquet"


def write_dataset(data_dir: Path, tables: dict[str, pd.DataFrame], source: str, **details) -> dict:
    """Write the tables and a manifest saying where they came from; return the manifest."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        if name not in TABLES:
            raise ValueError(f"unknown table {name!r}; canonical tables are {TABLES}")
        atomic.write_parquet(df, table_path(data_dir, name))
    manifest = {
        "source": source,
        "written_at": datetime.now(timezone.utc).isoformat(),
        "rows": {name: len(df) for name, df in tables.items()},
        **details,
    }
    atomic.write_text(data_dir / MANIFEST, json.dumps(manifest, indent=2, default=str))
    return manifest


def replace_dataset(data_dir: Path, write: Callable[[Path], dict]) -> dict:
    """Write a whole new dataset at ``data_dir`` with ``write(folder) -> manifest``: into a
    staging folder beside it first, then swapped in; the old dataset goes only once the new
    one is complete. Refuses a folder holding files that are not a dataset's."""
    data_dir = Path(data_dir).resolve()
    if data_dir.is_dir():
        foreign = sorted(p.name for p in data_dir.iterdir() if p.name not in DATASET_ENTRIES)
        if foreign:
            raise DataError(f"{data_dir} holds files that are not part of a dataset ({', '.join(foreign[:3])}"
                            f"{', ...' if len(foreign) > 3 else ''}); choose an empty or dataset folder")
    return atomic.replace_folder(data_dir, write)


def has_dataset(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds a dataset (a manifest or any canonical table)."""
    data_dir = Path(data_dir)
    return (data_dir / MANIFEST).exists() or any(table_path(data_dir, t).exists() for t in TABLES)


def read_manifest(data_dir: Path) -> dict:
    """The dataset's manifest; empty when there is none. Raises DataError when it is unreadable."""
    path = Path(data_dir) / MANIFEST
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DataError(f"{path}: unreadable ({err}); `--force` replaces the dataset") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: not a dataset manifest (a JSON object); `--force` replaces the dataset")
    return manifest


def read_table(data_dir: Path, table: str) -> pd.DataFrame:
    """A canonical table; posts, users and friendships with what was published since
    (``table_log``): what training and serving read."""
    path = table_path(data_dir, table)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such table (run `newsfeed data generate` or `newsfeed data import`)")
    frame = read_parquet(path)
    if table in table_log.LIVE_TABLES:
        frame = table_log.merge(table, frame, table_log.read_parts(table_log.parts(data_dir, table)))
    return frame


def read_parquet(path: Path) -> pd.DataFrame:
    """A parquet file, or DataError saying which file cannot be read (truncated, not parquet)."""
    import pyarrow as pa

    try:
        return pd.read_parquet(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: cannot be read as parquet ({first_line(err)}); "
                        "is it truncated? regenerate or re-import the dataset") from None


def read_dataset(data_dir: Path, tables: tuple[str, ...] = TABLES) -> dict[str, pd.DataFrame]:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: no such data directory")
    return {t: read_table(data_dir, t) for t in tables if table_path(data_dir, t).exists()}


def fingerprint(data_dir: Path, published: bool = True) -> str:
    """A short content hash of the canonical tables and what was published into them since: the
    data snapshot a model was trained on. ``published=False``: of the canonical tables only,
    the dataset's identity, which what the service appends does not change."""
    digest = hashlib.sha256()
    published = [p for t in table_log.LIVE_TABLES for p in table_log.parts(data_dir, t)] if published else []
    for table, path in [*((t, table_path(data_dir, t)) for t in TABLES), *((p.parent.name, p) for p in published)]:
        if path.exists():
            digest.update(table.encode())
            with path.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()[:16]
