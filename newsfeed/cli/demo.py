"""`newsfeed demo` (what `make demo` runs): the platform's main job end to end on the embedded
defaults, in minutes on a laptop. A small simulated network is trained by the pipeline,
served, and then lived in by the closed loop: users read and react, interests drift, the
drift check fires, a challenger is retrained on what was served, goes out as a canary and
the experiment decides. Every process it starts, it stops."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Annotated

import typer

from newsfeed.cli.common import HomeOption, console, fail

MARK = ".newsfeed-demo"
"""Written into a home the demo made: only such a home is cleared for the next demo."""
USERS, POSTS, EPOCHS = 500, 2_000, 4
CANARY_POLICY = "# The demo's canary must end within its days: a verdict after 2 days at most.\nmax_hours: 48\n"


def _fresh(home: Path) -> None:
    if home.exists() and any(home.iterdir()):
        if not (home / MARK).exists():
            raise fail(f"{home} holds a home the demo did not make; pass --home with a new folder (or delete it)")
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / MARK).write_text("made by `newsfeed demo`; the next demo clears it\n")


def demo(
    days: Annotated[float, typer.Option(help="Simulated days of the loop.")] = 7.0,
    drift_day: Annotated[float, typer.Option(help="Loop day interests drift.")] = 3.0,
    seed: Annotated[int, typer.Option(help="Seed of the network and of the loop.")] = 7,
    home: HomeOption = None,
) -> None:
    """Train, serve and run the closed loop on a fresh demo home (cleared if a demo made it)."""
    import subprocess
    import sys

    from newsfeed.cli.simulate import print_summary, run_loop
    from newsfeed.config import Paths
    from newsfeed.loop.config import BASELINES, LoopConfig

    if days <= drift_day + 1:
        raise fail(f"--days {days:g}: the loop needs a day after the drift day ({drift_day:g}) and more to decide")
    paths = Paths.resolve(home)
    _fresh(paths.home)
    t0 = time.perf_counter()
    exe = shutil.which("newsfeed") or str(Path(sys.executable).with_name("newsfeed"))

    def step(title: str, args: list[str]) -> None:
        console.print(f"\n[bold]{title}[/]: newsfeed {' '.join(args)}", highlight=False, soft_wrap=True)
        code = subprocess.run([exe, *args, "--home", str(paths.home)], stdin=subprocess.DEVNULL).returncode
        if code != 0:
            raise fail(f"`newsfeed {' '.join(args)}` failed (exit {code})")

    step("1. a simulated network", ["data", "generate", "--users", str(USERS), "--posts", str(POSTS),
                                    "--seed", str(seed), "--drift-day", "-1"])
    step("2. the training pipeline (kfp, locally)", ["pipeline", "run", "--epochs", str(EPOCHS), "--seed", str(seed)])
    canary = paths.home / "monitoring" / "canary-policy.yaml"
    canary.parent.mkdir(parents=True, exist_ok=True)
    canary.write_text(CANARY_POLICY)
    console.print(f"\n[bold]3. the closed loop[/]: newsfeed simulate --days {days:g} --drift-day {drift_day:g} "
                  f"--arms champion,{','.join(BASELINES)} --retrain-epochs {EPOCHS} --step-hours 2 --canary-policy {canary}",
                  highlight=False, soft_wrap=True)
    config = LoopConfig(days=days, drift_day=drift_day, arms=["champion", *BASELINES], retrain_epochs=EPOCHS,
                        step_hours=2.0, seed=seed)
    summary = run_loop(config, home=paths.home, canary_policy=canary)
    print_summary(summary)
    minutes, seconds = divmod(time.perf_counter() - t0, 60)
    retrains = [r for r in summary["retrains"] if r["exit_code"] == 0]
    verdicts = [v for d in summary["decisions"] for v in d["verdicts"] if d["done"]]
    console.print(f"\n[bold]demo done[/] in {minutes:.0f} min {seconds:.0f} s: {len(retrains)} drift-triggered "
                  f"retrain(s), {len(verdicts)} experiment decision(s)", highlight=False)
    console.print(f"  the loop's page and summary: {summary['out']}/index.html, summary.json\n"
                  f"  drift reports: {paths.home / 'monitoring' / 'drift' / 'index.html'}\n"
                  f"  MLflow (models, runs, lineage): {paths.home / 'mlflow'} "
                  f"(mlflow ui --backend-store-uri sqlite:///{paths.home / 'mlflow' / 'mlflow.db'})\n"
                  f"  the served log: {paths.home / 'serving' / 'impressions'}; the data and its logs: "
                  f"{paths.data_dir}", highlight=False, soft_wrap=True)
