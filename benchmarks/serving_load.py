"""Feed latency and throughput on this machine, in one run: in process (the floor), then
over HTTP on Ray Serve beside a trivial app on the same serving path (the framework's
ceiling), for each ingress (HAProxy, throughput-optimised, and Ray's Python proxy), fused
and chained, at 1, 4, 8 and 16 concurrent clients; then with the Redis state store and
posts streaming in; then the served feed's quality (engagement vs the simulator's oracle).

The benchmark home's 8,000 posts are served ``--replicate`` times over under new ids (12.5x:
104,000 posts; the ranker scores up to the arm's budget per request, 100 by default). Clients
are asyncio + httpx, each sending its next request when the last one answers (closed loop),
over distinct users.

    .venv/bin/python benchmarks/serving_load.py [--home .newsfeed] [--replicate 13]
        [--sequential 300] [--per-client 60] [--modes fused,chained] [--ingresses haproxy,proxy]
        [--ranker-budget N]

Needs a home with registered champions (`make bench-home`); every run works on a copy of it.
Prints the tables and writes benchmarks/results/serving_load.json: ``in_process``,
``<mode>_sequential`` and ``<mode>_concurrent`` (8 clients) and ``ceiling_sequential`` /
``ceiling_concurrent`` for the default ingress (each ``p50_ms``, ``p95_ms``, ``p99_ms``,
``rps``), ``ratio_to_ceiling``, ``by_ingress`` (every run at every client count),
``streaming``, ``batching`` and ``feed_quality``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from homes import copy_home  # noqa: E402

PORT = 8777
CLIENTS = (1, 4, 8, 16)
CONCURRENT = 8  # the client count the `<mode>_concurrent` keys and the goals use


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


def in_process(home: Path, replicate: int, users: np.ndarray) -> tuple[dict, dict]:
    """The feed's own cost (p50 per stage), and what batching requests would save: the
    ranker's forward pass over four requests' candidates at once against one by one."""
    import torch

    from newsfeed.feed.ranker_inputs import pair_values
    from newsfeed.feed.service import FeedService
    from newsfeed.registry import RANKER

    torch.set_num_threads(1)  # as a replica runs (serving/app.py)

    service = FeedService.open(home, replicate_posts=replicate)
    service.warm_up()
    latencies, timings = [], []
    t0 = time.perf_counter()
    for user in users:
        start = time.perf_counter()
        response = service.feed(int(user), limit=20)
        latencies.append((time.perf_counter() - start) * 1000)
        timings.append(response["timings_ms"])
    seconds = time.perf_counter() - t0
    arm = service.experiments.current().arms[0]
    result = {**summary(latencies, seconds), "stages_p50_ms": stage_p50(timings), "posts": len(service.corpus),
              "ranker_budget": arm.sources.ranker_budget}

    fast = service.models.get(RANKER, "champion").prepared.fast
    corpus, now, user = service.corpus, service.clock.now(), int(users[0])
    features = service.read_user(user) or {}
    budget = arm.sources.ranker_budget

    def forward_ms(n: int, repeat: int = 30) -> float:
        rows = np.random.default_rng(1).choice(len(corpus), n, replace=False)
        pair = pair_values(now, user, features, service.affinity.get(user), corpus.author_ids[rows],
                           corpus.created_unix[rows], corpus.topic_ids[rows], np.zeros(n, bool))
        fast.probabilities(rows, features, pair)
        t = time.perf_counter()
        for _ in range(repeat):
            fast.probabilities(rows, features, pair)
        return (time.perf_counter() - t) / repeat * 1000

    one, four = forward_ms(budget), forward_ms(4 * budget)
    batching = {"forward_ms_one_request": one, "forward_ms_four_requests_at_once": four,
                "saved_per_request_ms": one - four / 4}
    return result, batching


async def _client(url: str, users: list[int], latencies: list, timings: list) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=60) as client:
        for user in users:
            start = time.perf_counter()
            reply = await client.post(f"{url}/v1/feed", json={"user_id": int(user), "limit": 20})
            latencies.append((time.perf_counter() - start) * 1000)
            reply.raise_for_status()
            timings.append(reply.json().get("timings_ms", {}))


def over_http(url: str, users: np.ndarray, clients: int) -> dict:
    latencies, timings = [], []
    parts = [list(users[i::clients]) for i in range(clients)]
    t0 = time.perf_counter()
    asyncio.run(_gather(url, parts, latencies, timings))
    seconds = time.perf_counter() - t0
    return {**summary(latencies, seconds), "stages_p50_ms": stage_p50(timings)}


async def _gather(url, parts, latencies, timings):
    await asyncio.gather(*(_client(url, p, latencies, timings) for p in parts))


def ceiling_app():
    """The framework alone: the same route and body, answered with a constant (2 replicas, as the feed)."""
    from fastapi import FastAPI
    from ray import serve

    api = FastAPI()

    @serve.deployment(name="ceiling")
    @serve.ingress(api)
    class Ceiling:
        @api.post("/v1/feed")
        def feed(self, body: dict):
            return {"items": [], "timings_ms": {}}

        @api.get("/healthz")
        def healthz(self):
            return {"status": "ok"}

    return Ceiling


def load_levels(url: str, users: np.ndarray, rng, args) -> dict:
    """Sequential (``--sequential`` requests), then each client count of CLIENTS."""
    over_http(url, rng.choice(users, 20), 1)  # warm the HTTP path
    out = {"sequential": over_http(url, rng.choice(users, args.sequential), 1)}
    for clients in CLIENTS:
        out[f"clients_{clients}"] = over_http(url, rng.choice(users, args.per_client * clients), clients)
    return out


def streaming_run(home: Path, users: np.ndarray, args, console) -> dict:
    """Fused, two replicas, the Redis state store, on a copy of the home: CONCURRENT clients
    while ``--stream`` posts a second arrive through ``POST /v1/posts``."""
    from live_content import streaming  # benchmarks/live_content.py
    import live_content

    from newsfeed.data.io import read_table
    from serving.local import LocalServer
    from serving.settings import ServingSettings

    with tempfile.TemporaryDirectory() as tmp:
        copy = copy_home(home, Path(tmp) / "home")
        os.environ["NEWSFEED_STATE_PREFIX"] = f"bench-load-{uuid.uuid4().hex[:8]}"
        settings = ServingSettings(home=str(copy), mode="fused", replicas=args.replicas, replica_cpus=0.5,
                                   replicate_posts=args.replicate, state="production")
        first_id = int(read_table(copy / "data", "posts")["post_id"].max()) * (args.replicate + 1) + 1_000
        live_content.PORT = PORT
        with console.status("streaming: starting Ray Serve"), LocalServer(settings, port=PORT) as server:
            rng = np.random.default_rng(5)
            over_http(server.url, rng.choice(users, 20), 1)
            stop = threading.Event()
            thread = threading.Thread(target=streaming, args=(users, args.stream, first_id, stop))
            thread.start()
            try:
                result = over_http(server.url, rng.choice(users, args.per_client * CONCURRENT), CONCURRENT)
            finally:
                stop.set()
                thread.join()
            health = server.wait_ready()
        return {**result, "clients": CONCURRENT, "state": "production (Redis)", "stream_posts_per_second": args.stream,
                "posts_added": health["content"]}


def feed_quality(home: Path, users: int) -> dict:
    """The served feed against the simulator's oracle (``benchmarks/feed_quality.py``'s measure)."""
    from newsfeed.data.world import World
    from newsfeed.feed import offline
    from newsfeed.feed.service import FeedService

    world = World.of_dataset(home / "data")
    if world is None:
        return {"skipped": "not simulated data"}
    service = FeedService.open(home)
    known = np.array(sorted(service.directory.known_users))
    sample = known[:: max(1, len(known) // users)][:users]
    return offline.evaluate(service, world, sample)["feed"]["served feed"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("NEWSFEED_HOME", ".newsfeed")))
    parser.add_argument("--replicate", type=int, default=13, help="serve each post this many times (8,000 x 13)")
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--per-client", type=int, default=60, help="requests per client at each client count")
    parser.add_argument("--modes", default="fused,chained")
    parser.add_argument("--ingresses", default="haproxy,proxy", help="the first is the one the top-level keys report")
    parser.add_argument("--replicas", type=int, default=2, help="replicas per deployment (2 cores: 2)")
    parser.add_argument("--stream", type=float, default=10.0, help="posts a second in the streaming run (0: skip)")
    parser.add_argument("--quality-users", type=int, default=300, help="users the feed's quality is judged on (0: skip)")
    parser.add_argument("--ranker-budget", type=int, default=None,
                        help="serve every arm with this ranker budget (default: the home's experiment as set)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serving_load.json"))
    args = parser.parse_args()
    from serving.ingress import INGRESSES

    modes = [m for m in args.modes.split(",") if m]
    ingresses = [i for i in args.ingresses.split(",") if i]
    if any(m not in ("fused", "chained") for m in modes) or args.replicate < 1 or args.sequential < 10:
        parser.error("--modes: fused and/or chained; --replicate >= 1; --sequential >= 10")
    if not ingresses or any(i not in INGRESSES for i in ingresses) or args.per_client < 1 or args.stream < 0:
        parser.error(f"--ingresses: some of {', '.join(INGRESSES)}; --per-client >= 1; --stream >= 0")
    if args.ranker_budget is not None and args.ranker_budget < 1:
        parser.error("--ranker-budget >= 1")
    if not (args.home / "data" / "posts.parquet").exists():
        parser.error(f"{args.home}: no demo home (run `make bench-home` first)")

    console = Console()
    scratch = tempfile.TemporaryDirectory()
    try:
        # A copy without the home's served state: every run starts from the data's own history,
        # and the home is left as it was.
        home = copy_home(args.home.resolve(), Path(scratch.name) / "home")
        if args.ranker_budget is not None:
            set_ranker_budget(home, args.ranker_budget)
        run(home, args, modes, ingresses, console)
    finally:
        scratch.cleanup()


def set_ranker_budget(home: Path, budget: int) -> None:
    """Every arm of the copy's experiment ranks at most ``budget`` candidates."""
    from newsfeed.feed.experiments import ExperimentStore

    store = ExperimentStore.open(home, "embedded")
    experiment = store.read()
    arms = [a.model_copy(update={"sources": a.sources.model_copy(update={"ranker_budget": budget})})
            for a in experiment.arms]
    store.save(experiment.model_copy(update={"arms": arms}), experiment.version)


def run(home: Path, args, modes: list[str], ingresses: list[str], console: Console) -> None:
    from newsfeed.data.io import read_table

    known = read_table(home / "data", "users")["user_id"].to_numpy()
    rng = np.random.default_rng(0)
    results: dict = {"config": {k: str(v) for k, v in vars(args).items()}}
    if args.quality_users:  # first: the runs below mark the feeds they serve as seen
        with console.status("feed quality"):
            results["feed_quality"] = feed_quality(home, args.quality_users)
    with console.status("in process"):
        results["in_process"], results["batching"] = in_process(home, args.replicate, rng.choice(known, args.sequential))
    gc.collect()
    from serving.local import LocalServer
    from serving.settings import ServingSettings

    by_ingress: dict = {}
    for ingress in ingresses:
        runs = by_ingress[ingress] = {}
        for mode in ("ceiling", *modes):
            settings = ServingSettings(home=str(home), mode="fused" if mode == "ceiling" else mode,
                                       replicas=args.replicas, replica_cpus=0.5 if mode != "chained" else 0.25,
                                       replicate_posts=args.replicate)
            app = None
            if mode == "ceiling":
                app = ceiling_app().options(num_replicas=args.replicas, ray_actor_options={"num_cpus": 0.5}).bind()
            with console.status(f"{ingress}, {mode}: starting Ray Serve"), \
                    LocalServer(settings, port=PORT, ingress=ingress, app=app) as server:
                runs[mode] = load_levels(server.url, known, rng, args)
            console.print(f"{ingress} {mode}: done")
    default = by_ingress[ingresses[0]]
    for mode, levels in default.items():
        results[f"{mode}_sequential"] = levels["sequential"]
        results[f"{mode}_concurrent"] = levels[f"clients_{CONCURRENT}"]
    if "fused" in default:
        results["ratio_to_ceiling"] = results["fused_concurrent"]["rps"] / results["ceiling_concurrent"]["rps"]
    results["by_ingress"] = by_ingress
    if args.stream:
        results["streaming"] = streaming_run(home, known, args, console)

    table = Table(title=f"/v1/feed at {results['in_process']['posts']:,} posts, ranker budget "
                        f"{results['in_process']['ranker_budget']} (limit 20)")
    for c in ("ingress", "run", "clients", "p50 ms", "p95 ms", "p99 ms", "req/s"):
        table.add_column(c, justify="left" if c in ("ingress", "run") else "right")

    def row(ingress: str, name: str, clients, r: dict) -> None:
        table.add_row(ingress, name, str(clients), f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}", f"{r['p99_ms']:.1f}",
                      f"{r['rps']:.0f}")

    row("-", "in process", 1, results["in_process"])
    for ingress, runs in by_ingress.items():
        for mode, levels in runs.items():
            for level, r in levels.items():
                row(ingress, mode, 1 if level == "sequential" else level.split("_")[1], r)
    if "streaming" in results:
        row(ingresses[0], f"fused, Redis, {args.stream:g} posts/s", CONCURRENT, results["streaming"])
    console.print(table)
    stages = Table(title="median ms per stage (as the replica measured it)")
    stages.add_column("stage")
    runs = {"in_process": results["in_process"], **{f"{m}_sequential": results[f"{m}_sequential"] for m in modes},
            **{f"{m}_concurrent": results[f"{m}_concurrent"] for m in modes}}
    for n in runs:
        stages.add_column(n, justify="right")
    names = list(dict.fromkeys(s for r in runs.values() for s in r["stages_p50_ms"]))
    for s in names:
        stages.add_row(s, *(f"{r['stages_p50_ms'].get(s, float('nan')):.2f}" for r in runs.values()))
    console.print(stages)
    b = results["batching"]
    console.print(f"batching: ranker forward {b['forward_ms_one_request']:.2f} ms for one request, "
                  f"{b['forward_ms_four_requests_at_once']:.2f} ms for four at once "
                  f"({b['saved_per_request_ms']:.2f} ms saved per request)")
    if "ratio_to_ceiling" in results:
        console.print(f"fused at {CONCURRENT} clients / ceiling: {results['ratio_to_ceiling']:.2f} of its req/s")
    if "feed_quality" in results and "engagement_vs_oracle" in results["feed_quality"]:
        q = results["feed_quality"]
        console.print(f"served feed, engagement vs oracle: {q['engagement_vs_oracle']:.3f} "
                      f"[{q['engagement_vs_oracle_low']:.3f}, {q['engagement_vs_oracle_high']:.3f}]")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(args.out)
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
