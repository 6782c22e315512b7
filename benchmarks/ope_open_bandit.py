"""Off-policy evaluation checked on real logs: the uniform-random policy's click rate estimated
from the Bernoulli Thompson sampling policy's logs (Open Bandit Dataset, men campaign), set
beside the random policy's own logged click rate. The baseline measured in the same run is
the naive estimate (the behaviour policy's own click rate, no correction). Several bootstrap
seeds show how much the intervals themselves move.

    .venv/bin/python benchmarks/ope_open_bandit.py [--root ../shared/datasets/open-bandit] [--campaign men]

Prints one table, writes benchmarks/results/ope_open_bandit.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "open-bandit"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--campaign", default="men")
    parser.add_argument("--seeds", type=int, default=5, help="bootstrap seeds (interval stability)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ope_open_bandit.json"))
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error("--seeds >= 1")
    from monitoring import ope

    t0 = time.perf_counter()
    runs = [ope.evaluate_open_bandit(args.root, args.campaign, seed=seed) for seed in range(args.seeds)]
    first = runs[0]
    truth = first["on_policy"]
    naive = ope.on_policy(ope.open_bandit_campaign(args.root, args.campaign)["bts"]["click"].to_numpy())
    table = Table(title=f"uniform random's click rate from {first['rows']:,} Bernoulli-TS rows ({first['clicks']} "
                        f"clicks), {args.campaign} campaign; truth: random's own {truth['rows']:,} rows "
                        f"({truth['clicks']} clicks)")
    for column in ("estimator", "estimate", "95% CI", "covers truth", f"of {args.seeds} seeds", "error"):
        table.add_column(column, justify="left" if column == "estimator" else "right")
    rows = {}
    for name in ("ips", "snips", "dr"):
        value = first["estimators"][name]
        covered = sum(run["coverage"][name] for run in runs)
        rows[name] = {**value, "covers": first["coverage"][name], "covers_seeds": covered,
                      "relative_error": value["estimate"] / truth["estimate"] - 1}
        table.add_row(name.upper(), f"{value['estimate']:.5f}", f"[{value['ci'][0]:.5f}, {value['ci'][1]:.5f}]",
                      "yes" if first["coverage"][name] else "no", f"{covered}/{args.seeds}",
                      f"{rows[name]['relative_error']:+.0%}")
    naive_covers = naive["ci"][0] <= truth["estimate"] <= naive["ci"][1]
    table.add_row("naive (bts rate)", f"{naive['estimate']:.5f}", f"[{naive['ci'][0]:.5f}, {naive['ci'][1]:.5f}]",
                  "yes" if naive_covers else "no", "", f"{naive['estimate'] / truth['estimate'] - 1:+.0%}")
    table.add_row("truth (random)", f"{truth['estimate']:.5f}", f"[{truth['ci'][0]:.5f}, {truth['ci'][1]:.5f}]",
                  "", "", "")
    console = Console()
    console.print(table)
    overlap = {name: bool(first["estimators"][name]["ci"][1] >= truth["ci"][0]) for name in rows}
    half = np.mean([np.diff(v["ci"])[0] / 2 / v["estimate"] for v in first["estimators"].values()])
    console.print(f"every interval overlaps the truth's own interval: {all(overlap.values())}; "
                  f"{first['clicks']} and {truth['clicks']} clicks make intervals about ±{half:.0%} wide. "
                  f"{time.perf_counter() - t0:.1f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"campaign": args.campaign, "rows": first["rows"], "clicks": first["clicks"],
                                    "estimators": rows, "naive": {**naive, "covers": naive_covers},
                                    "on_policy": truth, "overlaps_truth_interval": overlap,
                                    "interval_widths": {n: float(np.diff(first["estimators"][n]["ci"])[0])
                                                        for n in rows}}, indent=2))


if __name__ == "__main__":
    main()
