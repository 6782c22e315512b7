"""Simulator speed at the 10,000-user scale: rows/s for simulate, write and validate.

The baseline measured in the same run is writing the same rows to parquet:
the ratio says how much dearer simulation is than merely storing its output.

    .venv/bin/python benchmarks/generate_speed.py [--users 10000 --posts 50000 --days 14]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from newsfeed.data.io import write_dataset
from newsfeed.data.simulator import SimConfig, generate
from newsfeed.data.validation import validate_tables


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--posts", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/generate_speed.json"))
    args = parser.parse_args()

    config = SimConfig(users=args.users, posts=args.posts, days=args.days)
    (tables, _world), simulate_s = timed(lambda: generate(config))
    rows = sum(len(df) for df in tables.values())
    with tempfile.TemporaryDirectory() as tmp:
        _, write_s = timed(lambda: write_dataset(Path(tmp), tables, source="benchmark"))
    result, validate_s = timed(lambda: validate_tables(tables))
    assert result.bad_rows == 0 and not result.errors

    stages = {"simulate": simulate_s, "write parquet (baseline)": write_s, "validate": validate_s}
    table = Table(title=f"generation at {args.users:,} users, {args.posts:,} posts, {args.days} days: "
                        f"{len(tables['impressions']):,} impressions, {rows:,} rows in all")
    for col in ("stage", "seconds", "rows/s", "x baseline"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for stage, seconds in stages.items():
        table.add_row(stage, f"{seconds:.2f}", f"{rows / seconds:,.0f}", f"{seconds / write_s:.2f}")
    table.add_row("generate = simulate + write", f"{simulate_s + write_s:.2f}",
                  f"{rows / (simulate_s + write_s):,.0f}", f"{(simulate_s + write_s) / write_s:.2f}")
    Console().print(table)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "config": config.model_dump(mode="json"),
        "rows": {t: len(df) for t, df in tables.items()},
        "seconds": stages,
        "rows_per_second": {s: rows / v for s, v in stages.items()},
        "simulate_vs_write_ratio": simulate_s / write_s,
    }, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
