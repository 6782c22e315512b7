"""A/B against team-draft interleaving on the closed loop: the same two arms (the champion and
the most-popular baseline, a known better and a known worse ranker), each given to its own
users and interleaved for a third group, on the same simulated users and days, served by the
real service. Reports each arm's realised engagement and how many users each method needs
to find the better arm (two-sided 5%, 80% power), with the ratio.

    .venv/bin/python benchmarks/loop_sensitivity.py [--home .newsfeed-bench] [--days 3]

Works on a copy of the home (the loop changes what it serves); no drift, no retrain. Writes
benchmarks/results/loop_sensitivity.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("NEWSFEED_HOME", ".newsfeed")))
    parser.add_argument("--days", type=float, default=3.0)
    parser.add_argument("--arms", default="champion,most_popular")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/loop_sensitivity.json"))
    args = parser.parse_args()
    if not (args.home / "data" / "truth").is_dir() or not (args.home / "mlflow").is_dir():
        parser.error(f"{args.home}: needs a trained home of simulated data (`make bench-home`)")
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch) / "home"
        shutil.copytree(args.home, home, ignore=shutil.ignore_patterns("user_state.sqlite*", "impressions", "loop"))
        exe = shutil.which("newsfeed") or str(Path(sys.executable).with_name("newsfeed"))
        done = subprocess.run([exe, "simulate", "--home", str(home), "--days", f"{args.days:g}", "--drift-day", "-1",
                               "--no-retrain", "--arms", args.arms, "--interleave", args.arms, "--json"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"the loop failed: {done.stderr[-2000:]}")
        summary = json.loads(done.stdout.strip().splitlines()[-1])
    result = {"arms": summary["arms"], "sensitivity": summary["sensitivity"], "days": args.days,
              "wall_seconds": summary["wall_seconds"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=float))
    sens = summary["sensitivity"]
    a, b = sens["arms"]
    for name, arm in summary["arms"].items():
        e = arm["engagement_per_impression"]
        print(f"{name:>28}: {arm['users']:>5,} users, {arm['impressions']:>7,} impressions, engagement/impression "
              f"{e['estimate']:.3f} [{e['ci'][0]:.3f}, {e['ci'][1]:.3f}]")
    pref = sens["interleaving"]["preference_a"]
    print(f"interleaving: {pref['estimate']:.1%} [{pref['ci'][0]:.1%}, {pref['ci'][1]:.1%}] of users with a "
          f"preference preferred {a}")
    print(f"users needed (5%, 80% power): A/B {sens['ab']['users']:,.0f} (power at that many, resampled: "
          f"{sens['ab']['power_at_that_many']}), interleaving {sens['interleaving']['users']:,.0f} "
          f"({sens['interleaving']['power_at_that_many']}); ratio {sens['ratio_ab_to_interleaving']:.1f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
