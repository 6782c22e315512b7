"""Load the online store from the offline feature tables: only what changed since the last load.

Serving reads one row per key: its latest. Each online view's latest rows are hashed
and compared with the hashes recorded at the previous load into the same store, so a
rebuild after new events, posts or served impressions writes only the keys they touched
(in place, under a running service), and a rebuild of unchanged data writes nothing. When
the dataset itself is another one (replaced with ``--force``, another data dir) or keys
disappeared, the views are emptied and loaded whole, so no key of an old dataset survives. The record of a load is written after the
load succeeded (to a temporary name, then renamed): a crash mid-load leaves the old
record or none, and the next load redoes the work.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from newsfeed import atomic
from newsfeed.features import catalog
from newsfeed.features.store import features_dir, offline_dir


@dataclass
class OnlineLoad:
    mode: str  # "full": emptied and loaded whole; "incremental": changed keys only
    written: dict[str, int] = field(default_factory=dict)  # view -> keys written
    keys: dict[str, int] = field(default_factory=dict)  # view -> keys the view now holds
    seconds: float = 0.0

    def describe(self, kind: str) -> str:
        written, keys = sum(self.written.values()), sum(self.keys.values())
        if self.mode == "full":
            return f"online store ({kind}) emptied and loaded: {keys:,} keys in {self.seconds:.1f} s"
        return (f"online store ({kind}) updated: {written:,} of {keys:,} keys had changed since the last load "
                f"({self.seconds:.1f} s)")


def online_views(store) -> list:
    views = [*store.list_feature_views(), *store.list_stream_feature_views()]
    return [v for v in views if v.online and v.name in catalog.TABLES]


def latest_rows(home: Path, name: str) -> pd.DataFrame:
    """The newest row per key of an offline feature table: what the online store serves."""
    frame = pd.read_parquet(offline_dir(home) / f"{name}.parquet")
    keys = list(catalog.TABLES[name].keys)
    latest = frame.sort_values(catalog.TIMESTAMP, kind="stable").drop_duplicates(keys, keep="last")
    return latest.sort_values(keys).reset_index(drop=True)


def row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """A 64-bit hash of each row, list columns included (hashed by their bytes)."""
    hashable = frame.copy()
    for name in hashable.columns:
        if hashable[name].dtype == object:
            hashable[name] = hashable[name].map(lambda v: np.asarray(v).tobytes() if v is not None else b"")
    return pd.util.hash_pandas_object(hashable, index=False).to_numpy(np.uint64)


def state_dir(home: Path, store) -> Path:
    """Where the record of loads into this store lives (one per configuration and project)."""
    kind = type(store.config.online_store).__name__.removesuffix("OnlineStoreConfig").lower()
    return features_dir(home) / "online-state" / f"{kind}-{store.project}"


def _identity(manifest: dict) -> dict:
    """The dataset the store was loaded from: its canonical tables, not what was published into
    them since (a retrain while the service runs updates the store in place, never empties it)."""
    return {"data_dir": manifest["data_dir"],
            "dataset": manifest.get("dataset_fingerprint", manifest["data_fingerprint"])}


def _read_state(directory: Path, manifest: dict) -> dict[str, pd.DataFrame] | None:
    """view -> (keys, hash) of the last load, or None when it was another dataset or none."""
    try:
        identity = json.loads((directory / "identity.json").read_text())
    except (OSError, ValueError):
        return None
    if identity != _identity(manifest):
        return None
    return {p.stem: pd.read_parquet(p) for p in directory.glob("*.parquet")}


def _write_state(directory: Path, manifest: dict, hashes: dict[str, pd.DataFrame]) -> None:
    def write(folder: Path) -> None:
        for name, frame in hashes.items():
            frame.to_parquet(folder / f"{name}.parquet", index=False)
        (folder / "identity.json").write_text(json.dumps(_identity(manifest)))

    atomic.replace_folder(directory, write)


def _empty(store, views: list) -> None:
    """Empty the views' online tables (sqlite: their rows deleted in the file a running service
    has open; Feast's teardown would unlink it under the service) or keys (Redis: dropped and
    recreated)."""
    if store.config.online_store.type == "sqlite":
        _empty_sqlite(store, views)
        return
    provider = store._get_provider()
    entities = store.list_entities()
    provider.teardown_infra(store.project, views, entities)
    provider.update_infra(project=store.project, tables_to_delete=[], tables_to_keep=views,
                          entities_to_delete=[], entities_to_keep=entities, partial=False)


def _empty_sqlite(store, views: list) -> None:
    import sqlite3

    from feast.infra.online_stores.sqlite import SqliteOnlineStore, _table_id

    path = Path(SqliteOnlineStore._get_db_path(store.config))
    if not path.exists():
        return
    with sqlite3.connect(path, timeout=30) as db:
        present = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for view in views:
            table = _table_id(store.project, view)
            if table in present:
                db.execute(f'DELETE FROM "{table}"')


def load(store, home: Path, manifest: dict, full: bool = False) -> OnlineLoad:
    """Bring the online store up to the offline tables of ``manifest``; ``full`` reloads all."""
    t0 = time.perf_counter()
    directory = state_dir(home, store)
    previous = None if full else _read_state(directory, manifest)
    views = online_views(store)
    latest = {v.name: latest_rows(home, v.name) for v in views}
    hashes = {}
    for name, rows in latest.items():
        keys = list(catalog.TABLES[name].keys)
        hashes[name] = rows[keys].assign(row_hash=row_hashes(rows))
    compared = {n: _compare(previous.get(n) if previous else None, hashes[n]) for n in hashes}
    if previous is not None and any(lost for _, lost in compared.values()):
        previous = None  # keys disappeared: only an empty start leaves none behind
    result = OnlineLoad("full" if previous is None else "incremental")
    if previous is None:
        shutil.rmtree(directory, ignore_errors=True)  # no record while the store is in between
        _empty(store, views)
    for name, rows in latest.items():
        changed = np.ones(len(rows), bool) if previous is None else compared[name][0]
        if changed.any():
            store.write_to_online_store(name, rows[changed].reset_index(drop=True))
        result.written[name] = int(changed.sum())
        result.keys[name] = len(rows)
    _write_state(directory, manifest, hashes)
    result.seconds = time.perf_counter() - t0
    return result


def _compare(before: pd.DataFrame | None, now: pd.DataFrame) -> tuple[np.ndarray, bool]:
    """(per row of ``now``: a new key or another hash than loaded before; whether keys loaded
    before are gone)."""
    if before is None:
        return np.ones(len(now), bool), False
    keys = [c for c in now.columns if c != "row_hash"]
    # Joined on the hash too: a merge that introduced missing hashes would turn them into floats.
    same = now.merge(before, on=[*keys, "row_hash"], how="left", indicator=True)["_merge"].eq("both")
    gone = before[keys].merge(now[keys], on=keys, how="left", indicator=True)["_merge"].eq("left_only")
    return ~same.to_numpy(), bool(gone.any())
