"""The shared user-state store, measured in one run.

1. What an event batch costs as the event log grows: a batch of 100 events (each with its
   ``event_id``) ingested into a data folder whose log holds 1x, 10x and 100x the demo's
   events (53,173: `newsfeed data generate`'s defaults), in parts of 1,000, with every
   logged id already remembered by the store (as it would be). Against the baseline of the
   design before it: reading every part's ids back to find duplicates.
2. Feed latency in process with each user-state store (the embedded sqlite file and Redis),
   same home, same users, same run, and the store's own read per request.

    .venv/bin/python benchmarks/shared_state.py [--home .newsfeed] [--sizes 1,10,100]
        [--batches 20] [--requests 400]

``--home``: a home with registered champions (after `make bench-home`; its data is copied for the
log's part, never changed). Prints two tables and writes benchmarks/results/shared_state.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from newsfeed import atomic
from newsfeed.data import event_log
from newsfeed.data.io import read_table
from newsfeed.features.ingest import ingest_events
from newsfeed.feed.user_state import RedisUserState, SqliteUserState

REDIS = "127.0.0.1:6379"
PART_EVENTS = 1_000


def fill_log(data_dir: Path, events: pd.DataFrame, total: int) -> list[str]:
    """Parts of ``PART_EVENTS`` resampled events with ids, ``total`` in all; returns the ids."""
    rng = np.random.default_rng(0)
    ids = []
    for start in range(0, total, PART_EVENTS):
        n = min(PART_EVENTS, total - start)
        part = events.iloc[rng.integers(0, len(events), n)].reset_index(drop=True)
        part["event_id"] = [f"bench-{start + i}" for i in range(n)]
        event_log.append(data_dir, part)
        ids += part["event_id"].tolist()
    return ids


def reread_ids(data_dir: Path) -> int:
    """The baseline: every part's ids read back (what each batch did before the store)."""
    seen = set()
    for part in event_log.parts(data_dir):
        seen.update(i for i in pq.read_table(part, columns=["event_id"]).column("event_id").to_pylist() if i)
    return len(seen)


def remember(state, ids: list[str]) -> None:
    for start in range(0, len(ids), 50_000):
        state.claim_events(ids[start:start + 50_000])


def event_batches(data_dir: Path, events: pd.DataFrame, state, batches: int) -> list[float]:
    stamp = pd.Timestamp(events["ts"].max()).isoformat()
    users, posts = events["user_id"].to_numpy(), events["post_id"].to_numpy()
    seconds = []
    for b in range(batches):
        batch = [{"user_id": int(users[i]), "post_id": int(posts[i]), "event_type": "like", "ts": stamp,
                  "event_id": f"new-{uuid.uuid4().hex}"} for i in range(b * 100, b * 100 + 100)]
        t0 = time.perf_counter()
        result = ingest_events(batch, data_dir, None, state)
        seconds.append(time.perf_counter() - t0)
        assert result.accepted == 100 and not result.rejected and result.state_error is None, result
    return seconds


def log_growth(home: Path, sizes: list[int], batches: int, console: Console) -> list[dict]:
    base = read_table(home / "data", "events")
    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            data_dir = Path(tmp) / "data"
            shutil.copytree(home / "data", data_dir, ignore=shutil.ignore_patterns("event_log"))
            t0 = time.perf_counter()
            ids = fill_log(data_dir, base, size * len(base))
            console.print(f"log at {size}x: {len(ids):,} events in {len(event_log.parts(data_dir)):,} parts "
                          f"({time.perf_counter() - t0:.0f} s to write)")
            t0 = time.perf_counter()
            reread_ids(data_dir)
            baseline = time.perf_counter() - t0
            for kind in ("sqlite", "redis"):
                state = (SqliteUserState(Path(tmp) / "state.sqlite") if kind == "sqlite"
                         else RedisUserState(REDIS, f"bench-{uuid.uuid4().hex[:8]}"))
                remember(state, ids)
                seconds = event_batches(data_dir, base, state, batches)
                if kind == "redis":
                    _drop(state)
                rows.append({"log_multiple": size, "log_events": len(ids), "store": kind,
                             "batch_p50_ms": float(np.median(seconds) * 1e3),
                             "batch_p95_ms": float(np.percentile(seconds, 95) * 1e3),
                             "baseline_reread_ms": baseline * 1e3})
    return rows


def _drop(state: RedisUserState) -> None:
    keys = list(state.client.scan_iter(match=f"{state.prefix}:*", count=10_000))
    for start in range(0, len(keys), 10_000):
        state.client.delete(*keys[start:start + 10_000])


def feed_latency(home: Path, requests: int) -> list[dict]:
    import torch

    from newsfeed.feed.service import FeedService

    torch.set_num_threads(1)  # as a replica runs
    rows = []
    service = FeedService.open(home)  # embedded state
    users = np.array(sorted(service.directory.known_users))
    users = users[np.random.default_rng(1).integers(0, len(users), requests)]
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    services = {kind: FeedService(home, home / "data", service.store, service.registry, corpus=service.corpus,
                                  state=state, experiments=service.experiments)
                for kind, state in (("sqlite", service.state), ("redis", RedisUserState(REDIS, prefix)))}
    measured = {kind: ([], []) for kind in services}
    for s in services.values():
        s.warm_up()
    for quarter in np.array_split(users, 4):  # the stores take turns: neither gets the warmer machine
        for kind, s in services.items():
            latencies, reads = measured[kind]
            for user in quarter:
                t0 = time.perf_counter()
                response = s.feed(int(user), limit=20)
                latencies.append((time.perf_counter() - t0) * 1e3)
                reads.append(response["timings_ms"]["user_state"])
    for kind, (latencies, reads) in measured.items():
        state = services[kind].state
        rows.append({"store": kind, "where": state.where, "requests": len(latencies),
                     "p50_ms": float(np.median(latencies)), "p99_ms": float(np.percentile(latencies, 99)),
                     "state_read_p50_ms": float(np.median(reads)), "state_read_p99_ms": float(np.percentile(reads, 99))})
    _drop(RedisUserState(REDIS, prefix))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=Path(".newsfeed"))
    parser.add_argument("--sizes", default="1,10,100")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    console = Console()
    growth = log_growth(args.home, [int(s) for s in args.sizes.split(",") if s], args.batches, console)
    table = Table(title="one event batch (100 events) as the event log grows")
    for column in ("log", "events in the log", "store", "batch p50 ms", "batch p95 ms", "baseline: re-read ids ms"):
        table.add_column(column, justify="right")
    for r in growth:
        table.add_row(f"{r['log_multiple']}x", f"{r['log_events']:,}", r["store"], f"{r['batch_p50_ms']:.1f}",
                      f"{r['batch_p95_ms']:.1f}", f"{r['baseline_reread_ms']:,.0f}")
    console.print(table)
    latency = feed_latency(args.home, args.requests)
    table = Table(title=f"feed latency in process by user-state store ({args.home})")
    for column in ("store", "requests", "p50 ms", "p99 ms", "state read p50 ms", "state read p99 ms"):
        table.add_column(column, justify="right")
    for r in latency:
        table.add_row(r["store"], str(r["requests"]), f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
                      f"{r['state_read_p50_ms']:.2f}", f"{r['state_read_p99_ms']:.2f}")
    console.print(table)
    out = Path(__file__).parent / "results" / "shared_state.json"
    atomic.write_text(out, json.dumps({"event_batches": growth, "feed_latency": latency}, indent=2))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
