"""The offline side's two slow paths, old and new measured in one run.

1. Point-in-time training set (the ranker service, every impression): Feast's file
   offline store (dask, the baseline) against DuckDB, the embedded default, and the
   production store's DuckDB joins fanned out over a local Ray (one task per 50,000 rows);
   the results are compared with DuckDB's value for value.
2. Loading the online store from scratch: Feast's own ``materialize`` into sqlite (the
   baseline) against the project's load (``online_load``: the newest row per key, hashed to
   know what changed) into sqlite and into Redis; then an incremental load after one batch
   of events, in each. (The feature tables are today's: user-author affinity for related
   pairs only, 62k online keys where there were 195k.)

    .venv/bin/python benchmarks/offline_side.py [--users 2000 --posts 8000 --days 14] [--sample N]
                                                [--engines file,duckdb,ray]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from newsfeed.data.io import write_dataset
from newsfeed.data.simulator import SimConfig, generate
from newsfeed.features import build, online_load, store as fstore, training_set
from newsfeed.features.ingest import ingest_events

STOCK_SQLITE = {"type": "sqlite", "path": "online-stock.db"}  # its own file: the loads below use online.db
ENGINES = {"file": {"type": "file"}, "duckdb": {"type": "duckdb"},
           "ray": {"type": "newsfeed.features.ray_offline_store.RayDuckDBOfflineStore", "rows_per_partition": 50_000}}
LABELS = {"file": "Feast file store (dask), baseline", "duckdb": "DuckDB (embedded default)",
          "ray": "DuckDB partitions on a local Ray (production)"}


def timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def same_values(a: pd.DataFrame, b: pd.DataFrame) -> int:
    """Cells that differ between two training sets (lists compared element by element)."""
    differing = 0
    for column in a.columns:
        x, y = a[column], b[column]
        if x.dtype == object:
            differing += sum(not np.array_equal(np.asarray(u if u is not None else []), np.asarray(v if v is not None
                                                                                                   else []))
                             for u, v in zip(x, y))
        else:
            equal = (x == y) | (x.isna() & y.isna())
            differing += int((~equal).sum())
    return differing


def training_sets(home: Path, tables: dict, sample: int | None, engines: list[str]) -> dict:
    impressions = tables["impressions"]
    if sample:
        impressions = impressions.sample(sample, random_state=0)
    entities = training_set.entity_frame(impressions, tables["posts"])
    stores = {name: fstore.open_store(home, "embedded", project=f"nfbench_{name}",
                                      overrides={"offline_store": ENGINES[name]}) for name in engines}
    out, frames = {"entity_rows": len(entities)}, {}
    for name, feast_store in stores.items():
        fstore.apply(feast_store)
        service = feast_store.get_feature_service("ranker")
        # Feast directly, not training_set.build: that refuses the file store's shorter result.
        job = lambda: feast_store.get_historical_features(entity_df=entities, features=service,  # noqa: E731
                                                          full_feature_names=True).to_df()
        frame, seconds = timed(job)
        frame["event_timestamp"] = frame["event_timestamp"].astype("datetime64[ns, UTC]")
        frames[name] = frame.sort_values("impression_id").reset_index(drop=True)
        out[name] = {"seconds": seconds, "rows": len(frame)}
    # Value for value with DuckDB on the impressions both kept (the file store drops those
    # with no earlier row).
    for name, frame in frames.items():
        if name != "duckdb" and "duckdb" in frames:
            duck = frames["duckdb"][frames["duckdb"]["impression_id"].isin(frame["impression_id"])]
            out[name]["differing_cells"] = same_values(frame, duck.reset_index(drop=True)[frame.columns])
    return out


def online_loads(home: Path, manifest: dict, tables: dict) -> dict:
    out = {}
    stock = fstore.open_store(home, "embedded", project="nfbench_stock", overrides={"online_store": STOCK_SQLITE})
    fstore.apply(stock)
    start = pd.Timestamp(manifest["start"]).floor("s").to_pydatetime()
    end = (pd.Timestamp(manifest["end"]).floor("s") + pd.Timedelta(seconds=1)).to_pydatetime()
    _, seconds = timed(lambda: stock.materialize(start_date=start, end_date=end))
    out["feast_sqlite_materialize"] = {"seconds": seconds, "keys": sum(manifest["keys"].values())}

    stores = {kind: fstore.open_store(home, kind, project=f"nfbench_{uuid.uuid4().hex[:8]}")
              for kind in ("embedded", "production")}
    try:
        for kind, feast_store in stores.items():
            fstore.apply(feast_store)
            full = online_load.load(feast_store, home, manifest, full=True)
            out[f"{kind}_full"] = {"seconds": full.seconds, "keys": sum(full.keys.values())}
        # One batch of events at the end of the data, then the features rebuilt and loaded again.
        last = tables["impressions"].tail(200)
        batch = [{"user_id": int(u), "post_id": int(p), "event_type": "like", "ts": str(t)}
                 for u, p, t in zip(last["user_id"], last["post_id"], last["ts"])]
        ingest_events(batch, home / "data")
        manifest = build.build_offline(home / "data", home)
        for kind, feast_store in stores.items():
            step = online_load.load(feast_store, home, manifest)
            out[f"{kind}_incremental"] = {"seconds": step.seconds, "keys": sum(step.written.values())}
    finally:
        for feast_store in stores.values():
            feast_store._get_provider().teardown_infra(feast_store.project, feast_store.list_feature_views(),
                                                       feast_store.list_entities())
            feast_store.delete_project(feast_store.project)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--posts", type=int, default=8_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--sample", type=int, default=None, help="join this many impressions (default: all)")
    parser.add_argument("--engines", default=",".join(ENGINES), help="training-set engines to compare")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/offline_side.json"))
    args = parser.parse_args()
    engines = args.engines.split(",")
    if unknown := set(engines) - set(ENGINES):
        parser.error(f"--engines: unknown {', '.join(sorted(unknown))} (choose from {', '.join(ENGINES)})")
    console = Console()

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        tables, _ = generate(SimConfig(users=args.users, posts=args.posts, days=args.days))
        write_dataset(home / "data", tables, source="simulator")
        manifest, build_s = timed(lambda: build.build_offline(home / "data", home))
        joins = training_sets(home, tables, args.sample, engines)
        loads = online_loads(home, manifest, tables)

    table = Table(title=f"offline side at {args.users:,} users, {args.posts:,} posts, {args.days} days "
                        f"(feature tables built in {build_s:.1f} s)")
    for col in ("step", "engine", "rows / keys", "seconds", "x baseline"):
        table.add_column(col, justify="left" if col in ("step", "engine") else "right")
    base = joins[engines[0]]["seconds"]
    for name in engines:
        r = joins[name]
        table.add_row("training set, ranker", LABELS[name], f"{r['rows']:,} of {joins['entity_rows']:,}",
                      f"{r['seconds']:.1f}", f"{base / r['seconds']:.1f}x faster" if name != engines[0] else "1.0")
    base = loads["feast_sqlite_materialize"]["seconds"]
    for name, label in (("feast_sqlite_materialize", "Feast sqlite materialize, baseline"),
                        ("embedded_full", "sqlite, full load"), ("production_full", "Redis, full load"),
                        ("embedded_incremental", "sqlite, after 200 events"),
                        ("production_incremental", "Redis, after 200 events")):
        r = loads[name]
        table.add_row("online store", label, f"{r['keys']:,}", f"{r['seconds']:.1f}",
                      "1.0" if name == "feast_sqlite_materialize" else f"{base / r['seconds']:.1f}x faster")
    console.print(table)
    for name in engines:
        if "differing_cells" in joins[name]:
            console.print(f"{LABELS[name]} against DuckDB, on the {joins[name]['rows']:,} rows it kept: "
                          f"{joins[name]['differing_cells']:,} differing cells")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": vars(args) | {"out": str(args.out)}, "build_s": build_s,
                                    "training_sets": joins, "online": loads}, indent=2, default=str))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
