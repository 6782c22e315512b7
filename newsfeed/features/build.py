"""Run the feature jobs over a dataset and load the results into the store.

``build_offline`` writes one parquet file per feature table under
``<home>/features/offline`` (the Feast sources) plus a manifest saying what data and
time range they cover; ``online_load.load`` brings the online store up to them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from newsfeed import atomic
from newsfeed.data.event_log import read_events
from newsfeed.data.io import fingerprint, read_dataset
from newsfeed.errors import DataError
from newsfeed.features import catalog, jobs
from newsfeed.features.store import features_dir, offline_dir

MANIFEST = "manifest.json"
NEEDED = ("users", "posts", "friendships", "impressions")


def build_offline(data_dir: Path, home: Path, as_of: pd.Timestamp | None = None,
                  progress: Callable[[str], None] = lambda step: None) -> dict:
    """Compute every feature table from the canonical data and the event log; return the manifest."""
    tables = read_dataset(data_dir, NEEDED)
    absent = [t for t in NEEDED if t not in tables]
    if absent:
        raise FileNotFoundError(f"{data_dir}: missing tables {absent} (run `newsfeed data generate` or `import`)")
    events = read_events(data_dir)
    result = jobs.compute(tables, events, as_of, embed_cache=features_dir(home) / "cache" / "text_embeddings.parquet",
                          progress=progress)
    progress("writing parquet")
    t0 = time.perf_counter()
    manifest = {
        "data_dir": str(Path(data_dir).resolve()),
        "data_fingerprint": fingerprint(data_dir),
        "dataset_fingerprint": fingerprint(data_dir, published=False),
        "events": len(events),
        "start": result.start.isoformat(),
        "end": result.end.isoformat(),
        "topics": result.topics,
        "rows": {name: len(frame) for name, frame in result.tables.items()},
        # The online store keeps the latest row per key: this is what materialize writes.
        "keys": {name: int(len(frame.drop_duplicates(list(catalog.TABLES[name].keys))))
                 for name, frame in result.tables.items()},
        "seconds": dict(result.seconds),
    }

    def write(folder: Path) -> None:
        for name, frame in result.tables.items():
            pq.write_table(jobs.to_arrow(name, frame), folder / f"{name}.parquet")
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))

    # The tables and their manifest change together: a new set is swapped in once complete.
    atomic.replace_folder(offline_dir(home), write)
    manifest["seconds"]["write"] = time.perf_counter() - t0
    return manifest


def offline_manifest(home: Path) -> dict:
    path = offline_dir(home) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{offline_dir(home)}: no feature tables yet (run `newsfeed features materialize`)")
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise DataError(f"{path}: unreadable ({err}); run `newsfeed features materialize` again") from None
