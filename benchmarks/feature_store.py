"""Feature store speed, embedded (sqlite) versus production (Redis + SQL registry), in one run.

Reports the online store's full load (offline rows and online keys per second) and
online read latency, median and p99, for one user plus 500 candidate posts read
the way serving reads them:
  - "user + 500 posts": the user's views for 1 entity and the post views for 500;
  - "user only" (what serving reads per request when post features live in the replica)
    and "affinity, 500 pairs" (user-author rows for the candidates) break it down;
  - "ranker, 500 pairs": the whole ranker feature service for 500 (user, post,
    author) rows, including user-author affinity and the on-demand request features.
The sqlite figures are the baseline; the ratio column is Redis / sqlite.

    .venv/bin/python benchmarks/feature_store.py [--users 2000 --posts 8000 --days 14 --reps 100]
"""

from __future__ import annotations

import argparse
import gc
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
from newsfeed.features import build, catalog, online_load, store as fstore
from newsfeed.features.online import ranker_rows

USER_VIEWS = ("user_profile", "user_engagement")
POST_VIEWS = ("post_content", "post_engagement", "post_engagement_live")


def features_of(views) -> list[str]:
    return [f"{v}:{c}" for v in views for c in catalog.TABLES[v].columns]


def latencies(fn, reps: int) -> dict:
    for _ in range(3):
        fn()  # warm-up: connections, caches, lazy imports
    gc.collect()
    gc.freeze()  # as a serving process does after warm-up: no full collections over Feast's objects
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    gc.unfreeze()
    return {"median_ms": float(np.median(times)), "p99_ms": float(np.percentile(times, 99))}


def measure(kind: str, home: Path, manifest: dict, reps: int, rng: np.random.Generator, posts: pd.DataFrame,
            user_ids: np.ndarray) -> dict:
    feast_store = fstore.open_store(home, kind, project=f"nfbench_{uuid.uuid4().hex[:8]}")
    try:
        fstore.apply(feast_store)
        seconds = online_load.load(feast_store, home, manifest, full=True).seconds
        rows, keys = sum(manifest["rows"].values()), sum(manifest["keys"].values())
        user_features, post_features = features_of(USER_VIEWS), features_of(POST_VIEWS)
        authors = posts.set_index("post_id")["author_id"].fillna(-1).astype(np.int64)
        picks = [(int(rng.choice(user_ids)), rng.choice(posts["post_id"].to_numpy(), 500, replace=False))
                 for _ in range(reps + 3)]
        it = iter(picks * 4)

        def user_and_posts():
            user, post_ids = next(it)
            feast_store.get_online_features(features=user_features, entity_rows=[{"user_id": user}])
            feast_store.get_online_features(features=post_features, entity_rows=[{"post_id": int(p)} for p in post_ids])

        def user_only():
            user, _ = next(it)
            feast_store.get_online_features(features=user_features, entity_rows=[{"user_id": user}])

        def affinity():
            user, post_ids = next(it)
            feast_store.get_online_features(
                features=features_of(("user_author_affinity",)),
                entity_rows=[{"user_id": user, "author_id": int(a)} for a in authors.reindex(post_ids)])

        def ranker():
            user, post_ids = next(it)
            ranker_rows(feast_store, user, post_ids.tolist(), pd.Timestamp.now(tz="UTC"),
                        authors=authors.reindex(post_ids).to_numpy())

        return {
            "materialize_s": seconds, "rows_per_s": rows / seconds, "keys_per_s": keys / seconds,
            "user_only": latencies(user_only, reps),
            "user_plus_500_posts": latencies(user_and_posts, reps),
            "affinity_500_pairs": latencies(affinity, reps),
            "ranker_500_pairs": latencies(ranker, reps),
        }
    finally:
        feast_store._get_provider().teardown_infra(feast_store.project, feast_store.list_feature_views(),
                                                   feast_store.list_entities())
        feast_store.delete_project(feast_store.project)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--posts", type=int, default=8_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--reps", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/feature_store.json"))
    args = parser.parse_args()
    console = Console()

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        tables, _ = generate(SimConfig(users=args.users, posts=args.posts, days=args.days))
        write_dataset(home / "data", tables, source="simulator")
        t0 = time.perf_counter()
        manifest = build.build_offline(home / "data", home)
        build_s = time.perf_counter() - t0
        rng = np.random.default_rng(0)
        results = {kind: measure(kind, home, manifest, args.reps, rng, tables["posts"],
                                 tables["impressions"]["user_id"].unique())
                   for kind in ("embedded", "production")}

    rows, keys = sum(manifest["rows"].values()), sum(manifest["keys"].values())
    table = Table(title=f"feature store at {args.users:,} users, {args.posts:,} posts, {args.days} days: "
                        f"{rows:,} offline rows, {keys:,} online keys (build {build_s:.1f} s)")
    for col in ("measure", "sqlite (embedded)", "Redis (production)", "Redis / sqlite"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    e, p = results["embedded"], results["production"]
    table.add_row("materialize, s", f"{e['materialize_s']:.1f}", f"{p['materialize_s']:.1f}",
                  f"{p['materialize_s'] / e['materialize_s']:.2f}")
    table.add_row("materialize, offline rows/s", f"{e['rows_per_s']:,.0f}", f"{p['rows_per_s']:,.0f}",
                  f"{p['rows_per_s'] / e['rows_per_s']:.2f}")
    table.add_row("materialize, online keys/s", f"{e['keys_per_s']:,.0f}", f"{p['keys_per_s']:,.0f}",
                  f"{p['keys_per_s'] / e['keys_per_s']:.2f}")
    for read in ("user_only", "user_plus_500_posts", "affinity_500_pairs", "ranker_500_pairs"):
        for stat in ("median_ms", "p99_ms"):
            a, b = e[read][stat], p[read][stat]
            table.add_row(f"{read.replace('_', ' ')}, {stat.replace('_ms', '')} ms", f"{a:.1f}", f"{b:.1f}", f"{b / a:.2f}")
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": vars(args) | {"out": str(args.out)}, "build_s": build_s,
                                    "manifest": manifest, "results": results}, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
