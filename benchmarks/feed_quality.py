"""The served feed against the simulator's oracle: candidate recall per source and merged,
and the feed's true expected engagement (0 = random, 1 = oracle) beside most-popular and
random feeds and the ranker alone over every unseen post (``newsfeed.feed.offline``), and
the served feed again with each pre-ranker (distilled, two-tower) at each budget, the fresh
source as the arm sets it and offering the newest ``--fresh`` posts.

    .venv/bin/python benchmarks/feed_quality.py [--home .newsfeed] [--users 300] [--served-only]

Needs the benchmark home (`make bench-home`). Prints two tables, writes benchmarks/results/feed_quality.json.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("NEWSFEED_HOME", ".newsfeed")))
    parser.add_argument("--users", type=int, default=300, help="users sampled (every n-th by id)")
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--budgets", default="500",
                        help="also judge the served feed with these pre-rank budgets (candidates the ranker scores)")
    parser.add_argument("--fresh", type=int, default=5000,
                        help="also judge both pre-rankers with the fresh source offering this many newest posts")
    parser.add_argument("--served-only", action="store_true",
                        help="judge the served feed only as the arm sets it (no other pre-ranker, budget or fresh source)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/feed_quality.json"))
    args = parser.parse_args()
    try:
        budgets = [int(b) for b in args.budgets.split(",") if b]
    except ValueError:
        parser.error(f"--budgets: comma-separated integers, not {args.budgets!r}")
    if args.users < 10 or args.limit < 1 or any(b < 1 for b in budgets) or args.fresh < 0:
        parser.error("--users >= 10, --limit >= 1, --budgets >= 1, --fresh >= 0")
    from newsfeed.data.world import World
    from newsfeed.feed import offline

    world = World.of_dataset(args.home / "data")
    if world is None:
        parser.error(f"{args.home}/data: not simulated data (no world to judge by); run `make bench-home`")
    console = Console()
    t0 = time.perf_counter()
    service, users = offline.judged_service(args.home, args.users)
    arm = service.experiments.current().arms[0]
    # Each pre-ranker at each budget, over the sources as set and with the fresh source
    # offering the newest --fresh posts too (a cut cheap enough can pre-rank them all).
    variants = {}
    for cut in () if args.served_only else ("distilled", "two_tower"):
        for fresh in sorted({arm.sources.fresh, args.fresh}):
            for budget in sorted({arm.sources.ranker_budget, *budgets}):
                if (cut, fresh, budget) != (arm.sources.prerank, arm.sources.fresh, arm.sources.ranker_budget):
                    variants[f"served feed, {cut} cut to {budget}, fresh {fresh}"] = arm.model_copy(update={
                        "name": f"{arm.name}-{cut}-{budget}-{fresh}", "sources": arm.sources.model_copy(
                            update={"prerank": cut, "fresh": fresh, "ranker_budget": budget})})
    with console.status(f"{len(users)} users"):
        report = offline.evaluate(service, world, users, limit=args.limit, variants=variants)
    report["ranker_budget"] = arm.sources.ranker_budget
    recall = Table(title=f"candidates: share of the oracle's top {report['oracle_k']} unseen posts found "
                         f"({report['users']} users, {report['pool_posts_per_user']:,.0f} unseen posts each)")
    recall.add_column("source")
    recall.add_column("recall [95% CI]", justify="right")
    for name, row in report["candidate_recall"].items():
        recall.add_row(name, f"{row['recall']:.3f} [{row['recall_low']:.3f}, {row['recall_high']:.3f}]")
    feed = Table(title=f"feed of {args.limit}: true expected engagement, 0 = random posts, 1 = the oracle's")
    feed.add_column("feed")
    feed.add_column("engagement_vs_oracle [95% CI]", justify="right")
    for name, row in report["feed"].items():
        v = "engagement_vs_oracle"
        feed.add_row(name, f"{row[v]:.3f} [{row[v + '_low']:.3f}, {row[v + '_high']:.3f}]")
    console.print(recall, feed)
    console.print(f"{time.perf_counter() - t0:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(args.out)
    run_id = log_to_mlflow(args.home, report, service.pipeline(arm)[1])
    console.print(f"wrote {args.out}; MLflow run {run_id} in experiment {EXPERIMENT}")


EXPERIMENT = "newsfeed-feed-quality"


def log_to_mlflow(home: Path, report: dict, versions: dict[str, str]) -> str:
    """The figures as a run of the home's MLflow, tagged with the model versions served."""
    import mlflow

    from newsfeed.models.runs import metric_name
    from newsfeed.registry import Registry

    registry = Registry.open(home)
    metrics = {metric_name(f"candidate_recall.{name}"): row["recall"]
               for name, row in report["candidate_recall"].items()}
    metrics.update({metric_name(f"feed.{name}.{k}"): v for name, row in report["feed"].items() for k, v in row.items()})
    with mlflow.start_run(experiment_id=registry.experiment_id(EXPERIMENT)) as run:
        mlflow.set_tags({f"served.{model}": version for model, version in versions.items()})
        mlflow.log_params({k: report[k] for k in ("users", "oracle_k", "ranker_budget") if k in report})
        mlflow.log_metrics({re.sub(r"[^\w.\-/]+", "_", k): float(v) for k, v in metrics.items()})
        mlflow.log_dict(report, "feed_quality.json")
    return run.info.run_id


if __name__ == "__main__":
    main()
