"""The served feed over several trainings of the same data: how far one pipeline run's
figure moves with the training's own randomness, so a setting is judged by more than one.

One simulated dataset (``--data-seed``) is generated once; for each training seed a home
gets a copy of it, `newsfeed pipeline run --seed S` trains, gates and registers both models
and the pre-ranker there, and ``benchmarks/feed_quality.py`` judges its served feed. Printed:
each training's ranker on the test days' logged feeds (the gate's figure), the served feed
and the ranker over every unseen post, then their mean and spread across trainings. A
setting (a catalog or model default) is compared by running this in a checkout that has it.

    .venv/bin/python benchmarks/served_spread.py --data-seed 37 --train-seeds 7,8,9 --work /tmp/spread

About 4.5 minutes a training on the default scale (2 cores). Writes <work>/served_spread-<data seed>.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent
SERVED, ALONE = "served feed", "ranker alone (whole pool)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-seed", type=int, default=37, help="the simulated dataset's seed")
    parser.add_argument("--train-seeds", default="7,8,9", help="comma-separated training seeds, a home each")
    parser.add_argument("--work", type=Path, required=True, help="where the homes go (kept: reruns reuse them)")
    parser.add_argument("--users", type=int, default=300, help="users the served feed is judged on")
    args = parser.parse_args()
    try:
        seeds = [int(s) for s in args.train_seeds.split(",") if s]
    except ValueError:
        parser.error(f"--train-seeds: comma-separated integers, not {args.train_seeds!r}")
    if len(seeds) < 2 or len(set(seeds)) < len(seeds) or min(seeds) < 0 or args.data_seed < 0 or args.users < 10:
        parser.error("--train-seeds: two or more distinct seeds >= 0; --data-seed >= 0; --users >= 10")

    data = args.work / f"data-{args.data_seed}"
    if not (data / "data").is_dir():
        _call("newsfeed", "data", "generate", "--seed", str(args.data_seed), "--home", str(data))
    rows = []
    for seed in seeds:
        home = args.work / f"data-{args.data_seed}-train-{seed}"
        if not (home / "feed_quality.json").is_file():
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir(parents=True)
            shutil.copytree(data / "data", home / "data")
            t0 = time.perf_counter()
            _call("newsfeed", "pipeline", "run", "--seed", str(seed), "--home", str(home))
            print(f"training seed {seed}: pipeline {time.perf_counter() - t0:.0f} s", flush=True)
            _call("python", str(Path(__file__).with_name("feed_quality.py")), "--home", str(home), "--users", str(args.users),
                  "--served-only", "--out", str(home / "feed_quality.json"))
        rows.append(_row(seed, home))

    summary = {"data_seed": args.data_seed, "trainings": rows}
    print(f"\ndata seed {args.data_seed}: engagement vs oracle (0 random, 1 oracle)")
    print(f"{'training seed':>14} {'ranker, test feeds':>19} {'served feed':>12} {'ranker, whole pool':>19}")
    for r in rows:
        print(f"{r['seed']:>14} {r['ranker_test_feeds']:>19.3f} {r['served']:>12.3f} {r['ranker_whole_pool']:>19.3f}")
    for key in ("ranker_test_feeds", "served", "ranker_whole_pool"):
        values = np.array([r[key] for r in rows])
        summary[key] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)),
                        "min": float(values.min()), "max": float(values.max())}
    print(f"{'mean (sd)':>14} " + " ".join(
        f"{summary[k]['mean']:>{w - 8}.3f} ({summary[k]['sd']:.3f})"
        for k, w in (("ranker_test_feeds", 19), ("served", 12), ("ranker_whole_pool", 19))))
    out = args.work / f"served_spread-{args.data_seed}.json"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(out)
    print(f"wrote {out}")


def _row(seed: int, home: Path) -> dict:
    """One training's three figures: the champion ranker's on the test days and the served-feed report's two."""
    from newsfeed.gate import PRIMARY
    from newsfeed.registry import RANKER, Registry

    report = json.loads((home / "feed_quality.json").read_text())
    registry = Registry.open(home)
    run = registry.client.get_run(registry.version(RANKER, "champion").run_id)
    return {"seed": seed, "ranker_test_feeds": run.data.metrics[PRIMARY[0]],
            "served": report["feed"][SERVED]["engagement_vs_oracle"],
            "served_low": report["feed"][SERVED]["engagement_vs_oracle_low"],
            "served_high": report["feed"][SERVED]["engagement_vs_oracle_high"],
            "ranker_whole_pool": report["feed"][ALONE]["engagement_vs_oracle"]}


def _call(program: str, *argv: str) -> None:
    """A project command in this environment; its failure ends the benchmark with its message."""
    done = subprocess.run([str(BIN / program), *argv], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{program} {' '.join(argv)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


if __name__ == "__main__":
    main()
