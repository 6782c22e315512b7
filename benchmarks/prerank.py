"""The pre-ranker's job judged against the heavy ranker: how much of the ranker's top 10 a cut
to a budget keeps, and what the cut costs per request, for serving's two-tower cut and for a
student distilled from the ranker (``newsfeed.feed.distilled``).

    .venv/bin/python benchmarks/prerank.py [--home .newsfeed-bench] [--users 300]

On simulated data it also judges the feed each cut leads to: the ranker's top 10 of the
distilled or two-tower cut of every unseen post to serving's budget, by the world's true
engagement (0 = random posts, 1 = the oracle's), beside the ranker alone over them all.

Users split by id: the student learns from the ranker's scores of even-id users' lists
(their merged candidates plus random unseen posts) and is judged on odd-id users, on two
lists each: the merged candidates serving pre-ranks today, and every unseen post published
(the pool a cheap enough pre-ranker could cut from instead). Writes
benchmarks/results/prerank.json and a run of the home's MLflow (experiment newsfeed-prerank).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

EXPERIMENT = "newsfeed-prerank"
TOP = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("NEWSFEED_HOME", ".newsfeed-bench")))
    parser.add_argument("--users", type=int, default=300, help="users to judge on (and as many to learn from)")
    parser.add_argument("--extra", type=int, default=300, help="random unseen posts added to each training list")
    parser.add_argument("--budgets", default="20,50,100,200,500")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/prerank.json"))
    args = parser.parse_args()
    try:
        budgets = [int(b) for b in args.budgets.split(",") if b]
    except ValueError:
        parser.error(f"--budgets: comma-separated integers, not {args.budgets!r}")
    if args.users < 10 or args.extra < 0 or not budgets or min(budgets) < TOP:
        parser.error(f"--users >= 10, --extra >= 0, --budgets >= {TOP}")
    if not (args.home / "mlflow").is_dir():
        parser.error(f"{args.home}: no trained home; run `make bench-home`")

    from newsfeed.data.world import World
    from newsfeed.feed import distilled
    from newsfeed.feed.prerank_eval import Judge

    console = Console()
    t0 = time.perf_counter()
    judge = Judge.open(args.home)
    users = judge.users()
    train, test = users[users % 2 == 0], users[users % 2 == 1]
    train, test = (u[:: max(1, len(u) // args.users)][: args.users] for u in (train, test))
    config = distilled.DistillConfig(**{k: v for k, v in (("epochs", args.epochs), ("temperature", args.temperature))
                                        if v is not None})
    with console.status(f"the ranker's lists of {len(train)} users"):
        lists = [judge.teacher_list(int(u), extra=args.extra, seed=int(u)) for u in train]
    t1 = time.perf_counter()
    with console.status(f"distilling ({config.epochs} epochs)"):
        student = judge.student(lists, config)
    t2 = time.perf_counter()
    with console.status(f"judging on {len(test)} users"):
        report = judge.compare(student, test, budgets, TOP)
        world = World.of_dataset(args.home / "data")
        if world is not None:  # simulated data: the cut's worth in the feed, by the world's true engagement
            report["feed"] = judge.feed_values(student, world, test, judge.prerank.budget)
    report.update({"train_users": len(train), "test_users": len(test), "extra": args.extra,
                   "config": vars(config), "lists_s": t1 - t0, "distill_s": t2 - t1})
    _print(console, report, budgets)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(args.out)
    run_id = log_to_mlflow(args.home, report, judge.versions())
    console.print(f"{time.perf_counter() - t0:.0f} s; wrote {args.out}; MLflow run {run_id} in experiment {EXPERIMENT}")


def _print(console: Console, report: dict, budgets: list[int]) -> None:
    for pool, rows in report["pools"].items():
        table = Table(title=f"{pool}: share of the ranker's top {TOP} kept by a cut to the budget "
                            f"({report['test_users']} held-out users, {rows['posts_per_user']:,.0f} posts each) "
                            "[95% CI]")
        table.add_column("cut")
        for b in budgets:
            table.add_column(f"to {b}", justify="right")
        table.add_column("ms / request", justify="right")
        for cut, row in rows["cuts"].items():
            table.add_row(cut, *(f"{row['kept'][str(b)]['kept']:.3f} [{row['kept'][str(b)]['kept_low']:.3f}, "
                                 f"{row['kept'][str(b)]['kept_high']:.3f}]" if str(b) in row["kept"] else "-"
                                 for b in budgets),
                          f"{row['ms']:.2f}")
        table.add_row("heavy ranker (all)", *("" for _ in budgets), f"{rows['ranker_ms']:.2f}")
        console.print(table)
    if "feed" in report:
        table = Table(title="feed of 10: true expected engagement, 0 = random unseen posts, 1 = the oracle's")
        table.add_column("feed")
        table.add_column("engagement_vs_oracle [95% CI]", justify="right")
        v = "engagement_vs_oracle"
        for name, row in report["feed"].items():
            table.add_row(name, f"{row[v]:.3f} [{row[v + '_low']:.3f}, {row[v + '_high']:.3f}]")
        console.print(table)


def log_to_mlflow(home: Path, report: dict, versions: dict[str, str]) -> str:
    import mlflow

    from newsfeed.registry import Registry

    registry = Registry.open(home)
    metrics = {}
    for pool, rows in report["pools"].items():
        metrics[f"{pool}.ranker_ms"] = rows["ranker_ms"]
        for cut, row in rows["cuts"].items():
            metrics[f"{pool}.{cut}.ms"] = row["ms"]
            metrics.update({f"{pool}.{cut}.kept_at_{b}": v["kept"] for b, v in row["kept"].items()})
    metrics.update({f"feed.{name}": row["engagement_vs_oracle"] for name, row in report.get("feed", {}).items()})
    with mlflow.start_run(experiment_id=registry.experiment_id(EXPERIMENT)) as run:
        mlflow.set_tags({f"served.{model}": version for model, version in versions.items()})
        mlflow.log_params({"train_users": report["train_users"], "test_users": report["test_users"],
                           "extra": report["extra"], **{f"distill.{k}": v for k, v in report["config"].items()}})
        mlflow.log_metrics({re.sub(r"[^\w.\-/]+", "_", k): float(v) for k, v in metrics.items()})
        mlflow.log_dict(report, "prerank.json")
    return run.info.run_id


if __name__ == "__main__":
    main()
