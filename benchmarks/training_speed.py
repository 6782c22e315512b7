"""Training throughput of both models at the 10,000-user scale, in one run.

Simulates 10,000 users, 50,000 posts, 14 days (~1M impressions), computes the features
and joins a fixed sample of impressions point-in-time through Feast (the full ranker join
at this scale takes ~20 minutes on 2 cores; throughput per sample does not depend on how
many rows there are). Then trains, for a fixed number of epochs with the product's
training loop and default settings:
  - the ranker with a shared bottom (the baseline of the ratio column),
  - the ranker with MMoE (the default),
  - the two-tower model on the sampled engaged impressions (in-batch negatives).
Samples/s counts training rows through forward + backward + optimizer step; the
validation pass is not timed. The state lives in ``--home`` and is reused by a rerun.

    .venv/bin/python benchmarks/training_speed.py [--users 10000 --posts 50000 --sample 200000 --epochs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "training_speed.json"


def prepare(home: Path, users: int, posts: int, days: int, sample: int, seed: int):
    """(ranker rows, engaged rows) joined to their features, cached in ``home``."""
    from newsfeed.data.io import read_manifest, read_table, write_dataset
    from newsfeed.data.simulator import SimConfig, generate
    from newsfeed.features import build, store as fstore, training_set
    from newsfeed.models.datasets import is_positive

    data = home / "data"
    config = SimConfig(seed=seed, users=users, posts=posts, days=days)
    if read_manifest(data).get("config") != config.model_dump(mode="json"):
        tables, _ = generate(config)
        write_dataset(data, tables, source="simulator", config=config.model_dump(mode="json"))
    cached = {name: home / f"{name}-{sample}.parquet" for name in ("ranker", "two_tower")}
    if all(p.exists() for p in cached.values()):
        return pd.read_parquet(cached["ranker"]), pd.read_parquet(cached["two_tower"])
    build.build_offline(data, home)
    store = fstore.open_store(home)
    fstore.apply(store)
    impressions, post_table = read_table(data, "impressions"), read_table(data, "posts")
    rows = impressions.sample(min(sample, len(impressions)), random_state=seed)
    ranker = training_set.build(store, training_set.entity_frame(rows, post_table), "ranker")
    engaged = impressions[is_positive(impressions)]
    engaged = engaged.sample(min(sample, len(engaged)), random_state=seed)
    two_tower = training_set.build(store, training_set.entity_frame(engaged, post_table), "two_tower")
    ranker.to_parquet(cached["ranker"], index=False)
    two_tower.to_parquet(cached["two_tower"], index=False)
    return ranker, two_tower


def measure(ranker_rows: pd.DataFrame, engaged_rows: pd.DataFrame, epochs: int) -> dict[str, dict]:
    from newsfeed.models import ranker as rk, two_tower as tt
    from newsfeed.models.training import TrainConfig, fit, seed_everything

    # A fixed epoch count: patience beyond it, so no run stops early and all do the same work.
    out = {}
    val = slice(0, 4096)
    for architecture in ("shared-bottom", "mmoe"):
        seed_everything(7)
        model = rk.MultiTaskRanker.from_frame(ranker_rows, rk.RankerConfig(architecture=architecture))
        batch = rk.training_batch(model, ranker_rows)
        train = TrainConfig(epochs=epochs, patience=epochs)
        history = fit(model, rk.multitask_loss, batch, {k: v[val] for k, v in batch.items()}, train,
                      f"ranker ({architecture})", show_progress=False)
        out[f"ranker ({architecture})"] = {"samples": len(ranker_rows), "samples_per_second": history.samples_per_second,
                                           "batch_size": train.batch_size,
                                           "parameters": sum(p.numel() for p in model.parameters())}
    seed_everything(7)
    model = tt.TwoTower.from_frame(engaged_rows, tt.TwoTowerConfig())
    batch = tt.training_batch(model, engaged_rows, tt.sampling_log_q(engaged_rows["post_id"].to_numpy()))
    train = TrainConfig(epochs=epochs, patience=epochs, batch_size=512)  # the CLI's two-tower default
    history = fit(model, tt.in_batch_loss, batch, {k: v[val] for k, v in batch.items()}, train, "two-tower",
                  show_progress=False)
    out["two-tower"] = {"samples": len(engaged_rows), "samples_per_second": history.samples_per_second,
                        "batch_size": train.batch_size, "parameters": sum(p.numel() for p in model.parameters())}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--posts", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--sample", type=int, default=200_000, help="impressions (and engaged impressions) joined")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--home", type=Path, default=ROOT / ".newsfeed" / "bench-training")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    t0 = time.perf_counter()
    ranker_rows, engaged_rows = prepare(args.home, args.users, args.posts, args.days, args.sample, args.seed)
    prepare_seconds = time.perf_counter() - t0
    results = measure(ranker_rows, engaged_rows, args.epochs)
    base = results["ranker (shared-bottom)"]["samples_per_second"]
    table = Table(title=f"training throughput, {args.users:,} users / {args.posts:,} posts, "
                        f"{torch.get_num_threads()} torch threads, {args.epochs} epochs")
    for column in ("model", "rows", "batch", "parameters", "samples/s", "x shared-bottom"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, row in results.items():
        table.add_row(name, f"{row['samples']:,}", str(row["batch_size"]), f"{row['parameters']:,}",
                      f"{row['samples_per_second']:,.0f}", f"{row['samples_per_second'] / base:.2f}")
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"users": args.users, "posts": args.posts, "days": args.days,
                                    "epochs": args.epochs, "threads": torch.get_num_threads(),
                                    "prepare_seconds": prepare_seconds, "results": results}, indent=1))
    print(f"wrote {args.out} (data and joins took {prepare_seconds:.0f} s; cached in {args.home})")


if __name__ == "__main__":
    main()
