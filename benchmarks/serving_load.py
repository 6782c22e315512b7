"""Feed latency and throughput: in process (the floor), then over HTTP on Ray Serve, fused
and chained, sequential and with concurrent clients, with a per-stage breakdown.

The demo home's 8,000 posts are served ``--replicate`` times over under new ids (12.5x:
100,000 posts, ~500 candidates per request after pre-ranking). Clients are asyncio +
httpx, each sending its next request when the last one answers (closed loop), over
distinct users.

    .venv/bin/python benchmarks/serving_load.py [--home .newsfeed] [--replicate 13]
        [--sequential 300] [--concurrent 8] [--concurrent-requests 1200] [--modes fused,chained]

Needs a home with registered champions (`make demo`). Prints one table per mode and
writes benchmarks/results/serving_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

PORT = 8777


def summary(latencies_ms: list[float], seconds: float) -> dict:
    values = np.asarray(latencies_ms)
    return {"requests": len(values), "p50_ms": float(np.percentile(values, 50)),
            "p95_ms": float(np.percentile(values, 95)), "p99_ms": float(np.percentile(values, 99)),
            "rps": len(values) / seconds}


def stage_p50(timings: list[dict]) -> dict[str, float]:
    by_stage = defaultdict(list)
    for t in timings:
        for stage, ms in t.items():
            by_stage[stage].append(ms)
    return {stage: float(np.median(v)) for stage, v in by_stage.items()}


def in_process(home: Path, replicate: int, users: np.ndarray) -> dict:
    import torch

    from newsfeed.feed.service import FeedService

    torch.set_num_threads(1)  # as a replica runs (serving/app.py)

    service = FeedService.open(home, replicate_posts=replicate)
    service.warm_up()
    latencies, timings, candidates = [], [], []
    t0 = time.perf_counter()
    for user in users:
        start = time.perf_counter()
        response = service.feed(int(user), limit=20)
        latencies.append((time.perf_counter() - start) * 1000)
        timings.append(response["timings_ms"])
    seconds = time.perf_counter() - t0
    # How many candidates the ranker scored (the budget is ~500): one more request, inspected.
    stages, _, _ = service.pipeline(service.experiments.current().arms[0])
    from newsfeed.feed.context import FeedContext, FeedRequest
    from newsfeed.feed.stages import Group, in_groups, run_pipeline

    ctx = FeedContext(FeedRequest(int(users[0]) + 1, 20, service.clock.now()), service.user_view(int(users[0]) + 1)[0])
    ranked = run_pipeline([s for s in stages if in_groups(s, (Group.RETRIEVAL,))], ctx)
    candidates.append(len(ranked.candidates))
    return {**summary(latencies, seconds), "stages_p50_ms": stage_p50(timings), "posts": len(service.corpus),
            "candidates_ranked": candidates[0]}


async def _client(url: str, users: list[int], latencies: list, timings: list) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=60) as client:
        for user in users:
            start = time.perf_counter()
            reply = await client.post(f"{url}/v1/feed", json={"user_id": int(user), "limit": 20})
            latencies.append((time.perf_counter() - start) * 1000)
            reply.raise_for_status()
            timings.append(reply.json()["timings_ms"])


def over_http(url: str, users: np.ndarray, clients: int) -> dict:
    latencies, timings = [], []
    parts = [list(users[i::clients]) for i in range(clients)]
    t0 = time.perf_counter()
    asyncio.run(_gather(url, parts, latencies, timings))
    seconds = time.perf_counter() - t0
    return {**summary(latencies, seconds), "stages_p50_ms": stage_p50(timings)}


async def _gather(url, parts, latencies, timings):
    await asyncio.gather(*(_client(url, p, latencies, timings) for p in parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("NEWSFEED_HOME", ".newsfeed")))
    parser.add_argument("--replicate", type=int, default=13, help="serve each post this many times (8,000 x 13)")
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--concurrent", type=int, default=8)
    parser.add_argument("--concurrent-requests", type=int, default=1_200)
    parser.add_argument("--modes", default="fused,chained")
    parser.add_argument("--replicas", type=int, default=2, help="replicas per deployment (2 cores: 2)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serving_load.json"))
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if any(m not in ("fused", "chained") for m in modes) or args.replicate < 1 or args.sequential < 10:
        parser.error("--modes: fused and/or chained; --replicate >= 1; --sequential >= 10")
    if not (args.home / "data" / "posts.parquet").exists():
        parser.error(f"{args.home}: no demo home (run `make demo` first)")

    from newsfeed.data.io import read_table

    console = Console()
    known = read_table(args.home / "data", "users")["user_id"].to_numpy()
    rng = np.random.default_rng(0)
    results = {"config": {k: str(v) for k, v in vars(args).items()}}
    with console.status("in process"):
        results["in_process"] = in_process(args.home.resolve(), args.replicate, rng.choice(known, args.sequential))
    gc.collect()
    from serving.local import LocalServer
    from serving.settings import ServingSettings

    for mode in modes:
        settings = ServingSettings(home=str(args.home.resolve()), mode=mode, replicas=args.replicas,
                                   replica_cpus=0.5 if mode == "fused" else 0.25, replicate_posts=args.replicate)
        with console.status(f"{mode}: starting Ray Serve"), LocalServer(settings, port=PORT) as server:
            over_http(server.url, rng.choice(known, 20), 1)  # warm the HTTP path
            results[f"{mode}_sequential"] = over_http(server.url, rng.choice(known, args.sequential), 1)
            results[f"{mode}_concurrent"] = over_http(server.url, rng.choice(known, args.concurrent_requests),
                                                      args.concurrent)
    table = Table(title=f"/v1/feed at {results['in_process']['posts']:,} posts, "
                        f"{results['in_process']['candidates_ranked']} candidates ranked (limit 20)")
    for c in ("run", "clients", "requests", "p50 ms", "p95 ms", "p99 ms", "req/s"):
        table.add_column(c, justify="left" if c == "run" else "right")
    for name, row in results.items():
        if name == "config":
            continue
        clients = args.concurrent if name.endswith("concurrent") else 1
        table.add_row(name, str(clients), str(row["requests"]), f"{row['p50_ms']:.1f}", f"{row['p95_ms']:.1f}",
                      f"{row['p99_ms']:.1f}", f"{row['rps']:.0f}")
    console.print(table)
    stages = Table(title="median ms per stage (as the replica measured it)")
    stages.add_column("stage")
    runs = [n for n in results if n != "config"]
    for n in runs:
        stages.add_column(n, justify="right")
    names = list(dict.fromkeys(s for n in runs for s in results[n]["stages_p50_ms"]))
    for s in names:
        stages.add_row(s, *(f"{results[n]['stages_p50_ms'].get(s, float('nan')):.2f}" for n in runs))
    console.print(stages)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(args.out)
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
