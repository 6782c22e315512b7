"""Live content, measured in one run on a real Ray Serve app with two fused replicas:

1. publish-to-visible: a post by a friend of a user, published through ``POST /v1/posts``,
   until both replicas offer it to that user (the in-network source, seen through the
   feed's ``explain``); p50 and p99 over ``--posts`` posts;
2. posts per second through ``POST /v1/posts`` (batches of ``--batch``; each post's text
   embedded by MiniLM, its features written online, the batch logged and announced);
3. the feed's latency over HTTP, sequential, without and then with posts streaming in
   (``--stream`` posts a second from another thread), same run;
4. replica memory per 100k posts in the window: a replica's resident memory (models loaded,
   warmed up) with the home's posts and with them ``--replicate`` times over, in fresh
   processes, scaled to 100k posts.

    .venv/bin/python benchmarks/live_content.py [--home .newsfeed] [--state embedded|production]

``--home``: a home with registered champions (after `make bench-home`); it is copied, never
changed. Prints one table and writes benchmarks/results/live_content.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from homes import copy_home  # noqa: E402

PORT = 8791
WORDS = ("match goal city council election rain storm market shares film premiere concert vaccine school "
         "budget train strike festival recipe garden bridge").split()


def call(path: str, body: dict | None = None) -> tuple[dict, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", json.dumps(body).encode() if body else None,
                                     {"Content-Type": "application/json"}, method="POST" if body else "GET")
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.loads(reply.read()), reply.headers.get("X-Replica", "")


def text(rng) -> str:
    return " ".join(rng.choice(WORDS, 8))


def visible_latency(reader: int, friend: int, posts: int, first_id: int) -> list[float]:
    """Seconds from the publish call's start until both replicas offered the post to ``reader``."""
    rng, seconds = np.random.default_rng(0), []
    for k in range(posts):
        post_id = first_id + k
        t0 = time.perf_counter()
        call("/v1/posts", {"posts": [{"post_id": post_id, "author_id": friend, "text": text(rng), "topic": "news"}]})
        seen: dict[str, bool] = {}
        while not (len(seen) == 2 and all(seen.values())):
            body, replica = call("/v1/feed", {"user_id": reader, "limit": 1, "explain": True})
            seen[replica] = post_id in body["explain"]["sources"]["in_network"]
            if time.perf_counter() - t0 > 30:
                raise RuntimeError(f"post {post_id} not on both replicas within 30 s: {seen}")
        seconds.append(time.perf_counter() - t0)
    return seconds


def publish_rate(authors: np.ndarray, total: int, batch: int, first_id: int) -> float:
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    for start in range(0, total, batch):
        items = [{"post_id": first_id + start + i, "author_id": int(rng.choice(authors)), "text": text(rng),
                  "topic": str(rng.choice(["news", "sports", "politics"]))} for i in range(batch)]
        body, _ = call("/v1/posts", {"posts": items})
        assert body["accepted"] == batch, body
    return total / (time.perf_counter() - t0)


def feed_latency(users: np.ndarray, requests: int) -> list[float]:
    out = []
    for user in users[:requests]:
        t0 = time.perf_counter()
        call("/v1/feed", {"user_id": int(user), "limit": 20})
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def streaming(authors: np.ndarray, rate: float, first_id: int, stop: threading.Event) -> None:
    rng, k = np.random.default_rng(2), 0
    while not stop.is_set():
        call("/v1/posts", {"posts": [{"post_id": first_id + k, "author_id": int(rng.choice(authors)),
                                      "text": text(rng), "topic": "news"}]})
        k += 1
        stop.wait(1 / rate)


MEMORY = """
import json, os, resource, sys, gc
import torch
torch.set_num_threads(1)
from newsfeed.feed.service import FeedService
service = FeedService.open(sys.argv[1], replicate_posts=int(sys.argv[2]))
service.warm_up()
gc.collect()
rss = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
print(json.dumps({"posts": len(service.corpus), "rss_bytes": rss}))
"""


def replica_memory(home: Path, times: int) -> dict:
    runs = []
    for k in (1, times):
        done = subprocess.run([sys.executable, "-c", MEMORY, str(home), str(k)], capture_output=True, text=True,
                              check=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    (small, large) = runs
    per_post = (large["rss_bytes"] - small["rss_bytes"]) / (large["posts"] - small["posts"])
    return {"posts": [small["posts"], large["posts"]], "rss_mib": [r["rss_bytes"] / 2**20 for r in runs],
            "mib_per_100k_posts": per_post * 100_000 / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=Path(".newsfeed"))
    parser.add_argument("--state", choices=["embedded", "production"], default="production")
    parser.add_argument("--posts", type=int, default=40, help="posts timed from publish to visible")
    parser.add_argument("--total", type=int, default=500, help="posts published for the rate")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--stream", type=float, default=10.0, help="posts a second while feeds are timed")
    parser.add_argument("--replicate", type=int, default=12, help="the larger corpus for the memory figure")
    args = parser.parse_args()
    console = Console()
    from newsfeed.data.io import read_table
    from serving.local import LocalServer
    from serving.settings import ServingSettings

    with tempfile.TemporaryDirectory() as tmp:
        home = copy_home(args.home.resolve(), Path(tmp) / "home")
        os.environ["NEWSFEED_STATE_PREFIX"] = f"bench-live-{uuid.uuid4().hex[:8]}"
        friendships = read_table(home / "data", "friendships")
        reader, friend = int(friendships["user_id"].iloc[0]), int(friendships["friend_id"].iloc[0])
        authors = read_table(home / "data", "users")["user_id"].to_numpy()
        users = np.random.default_rng(3).choice(authors, args.requests * 2)
        first_id = int(read_table(home / "data", "posts")["post_id"].max()) + 1_000
        settings = ServingSettings(home=str(home), mode="fused", replicas=2, replica_cpus=0.5, state=args.state)
        with LocalServer(settings, port=PORT, num_cpus=4):
            console.print("measuring publish-to-visible ...")
            visible = visible_latency(reader, friend, args.posts, first_id)
            console.print("measuring posts per second ...")
            rate = publish_rate(authors, args.total, args.batch, first_id + 10_000)
            console.print("measuring feed latency without, then with, posts streaming in ...")
            feed_latency(users, 30)  # warm
            quiet = feed_latency(users, args.requests)
            stop = threading.Event()
            thread = threading.Thread(target=streaming, args=(authors, args.stream, first_id + 100_000, stop))
            thread.start()
            busy = feed_latency(users[args.requests:], args.requests)
            stop.set()
            thread.join()
            health, _ = call("/healthz")
        console.print("measuring replica memory ...")
        memory = replica_memory(home, args.replicate)
    result = {
        "state": args.state, "publish_to_visible_p50_ms": float(np.median(visible) * 1e3),
        "publish_to_visible_p99_ms": float(np.percentile(visible, 99) * 1e3), "posts_per_second": rate,
        "feed_p50_ms_quiet": float(np.median(quiet)), "feed_p99_ms_quiet": float(np.percentile(quiet, 99)),
        "feed_p50_ms_streaming": float(np.median(busy)), "feed_p99_ms_streaming": float(np.percentile(busy, 99)),
        "stream_posts_per_second": args.stream, "replica_memory": memory, "content": health["content"],
    }
    table = Table(title=f"live content, 2 fused replicas, state {args.state}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("publish -> on both replicas, p50 / p99",
                  f"{result['publish_to_visible_p50_ms']:.0f} / {result['publish_to_visible_p99_ms']:.0f} ms")
    table.add_row(f"POST /v1/posts, batches of {args.batch}", f"{rate:.0f} posts/s")
    table.add_row("feed p50 / p99, no stream", f"{result['feed_p50_ms_quiet']:.1f} / {result['feed_p99_ms_quiet']:.1f} ms")
    table.add_row(f"feed p50 / p99, {args.stream:g} posts/s streaming",
                  f"{result['feed_p50_ms_streaming']:.1f} / {result['feed_p99_ms_streaming']:.1f} ms")
    table.add_row("replica memory per 100k posts", f"{memory['mib_per_100k_posts']:.0f} MiB")
    console.print(table)
    out = Path(__file__).parent / "results" / "live_content.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
