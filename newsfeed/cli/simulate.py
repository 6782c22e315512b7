"""`newsfeed simulate`: the closed loop. The simulator's users read and react through the
served platform (one started here on the home, or ``--url``), on the simulated clock; the
drift check, retrain, canary and verdict run on their schedule; and arms run side by side as
a policy test bench."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from newsfeed.cli.common import DataDirOption, HomeOption, StateOption, console, fail
from newsfeed.loop.config import LoopConfig


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


D = LoopConfig()  # the defaults the help shows, declared once in newsfeed.loop.config


def simulate(
    days: Annotated[float | None, typer.Option(help=f"Simulated days [default {D.days:g}].")] = None,
    arms: Annotated[str | None, typer.Option(help="Arms side by side, equal shares, comma-separated: the "
                                                  "experiment's arms or baselines most_popular, random [default: "
                                                  "the experiment as it is].")] = None,
    interleave: Annotated[str | None, typer.Option(help="A,B: two of --arms also interleaved (team draft) in an arm "
                                                        "of their own; reports the users each method needs.")] = None,
    drift_day: Annotated[float | None, typer.Option(help=f"Loop day interests drift; below 0: never [default "
                                                         f"{D.drift_day:g}].")] = None,
    drift_strength: Annotated[float | None, typer.Option(help=f"How far interests move, 0-1 [default "
                                                              f"{D.drift_strength:g}].")] = None,
    retrain: Annotated[bool, typer.Option(help="Run the drift check, retrain, canary and verdict on schedule.")] = True,
    retrain_epochs: Annotated[int | None, typer.Option(help="Epochs of a retrain (unless --policy says) [default: "
                                                            "the pipeline's].")] = None,
    drift_every: Annotated[float | None, typer.Option(help="Simulated hours between drift checks [default "
                                                           f"{D.drift_every_hours:g}].")] = None,
    reference_days: Annotated[float | None, typer.Option(help="The drift check compares the last day with this many "
                                                              "days before it; checks start once they are served "
                                                              f"[default {D.reference_days:g}].")] = None,
    decide_every: Annotated[float | None, typer.Option(help="Simulated hours between canary verdicts [default "
                                                            f"{D.decide_every_hours:g}].")] = None,
    canary_share: Annotated[float | None, typer.Option(help="Percent of the control arm's users a challenger takes "
                                                            f"[default {D.canary_share:g}].")] = None,
    step_hours: Annotated[float | None, typer.Option(help=f"Simulated hours per step of the clock [default "
                                                          f"{D.step_hours:g}].")] = None,
    clients: Annotated[int | None, typer.Option(help=f"Sessions in flight at once [default {D.clients}].")] = None,
    seed: Annotated[int | None, typer.Option(help=f"Seed of the simulated behaviour [default {D.seed}].")] = None,
    url: Annotated[str | None, typer.Option(help="A running service on the simulated clock (NEWSFEED_CLOCK="
                                                 "simulated; admin token in NEWSFEED_ADMIN_TOKEN) [default: start one "
                                                 "on the home].")] = None,
    replicas: Annotated[int, typer.Option(help="Replicas of the service started here.", min=1)] = 2,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for the summary, the page and the jobs' logs "
                                                           "[default: <home>/loop/<time>].")] = None,
    policy: Annotated[Path | None, typer.Option(help="Retrain policy YAML for the drift check [default: the loop's, "
                                                     "newsfeed.loop.jobs.LOOP_POLICY].")] = None,
    canary_policy: Annotated[Path | None, typer.Option(help="Canary policy YAML for the verdict.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON (progress goes to stderr).")] = False,
    home: HomeOption = None,
    data_dir: DataDirOption = None,
    state: StateOption = None,
) -> None:
    """Run the closed loop on the served platform and report engagement per arm, drift checks,
    retrains and verdicts (a page with plots beside the summary)."""
    from pydantic import ValidationError

    from newsfeed.errors import option_message

    given = {"days": days, "drift_strength": drift_strength, "retrain_epochs": retrain_epochs,
             "drift_every_hours": drift_every, "reference_days": reference_days, "decide_every_hours": decide_every,
             "canary_share": canary_share, "step_hours": step_hours, "clients": clients, "seed": seed}
    options = {k: v for k, v in given.items() if v is not None}
    if arms:
        options["arms"] = [a.strip() for a in arms.split(",") if a.strip()]
    if interleave:
        options["interleave"] = tuple(a.strip() for a in interleave.split(","))
    if drift_day is not None:
        options["drift_day"] = None if drift_day < 0 else drift_day
    try:
        config = LoopConfig(retrain=retrain, **options)
    except ValidationError as err:
        raise fail(option_message(err)) from None
    summary = run_loop(config, url=url, replicas=replicas, out=out, policy=policy, canary_policy=canary_policy,
                       as_json=as_json, home=home, data_dir=data_dir, state=state)
    if as_json:
        print(json.dumps(summary, default=float))
    else:
        print_summary(summary)


def run_loop(config: LoopConfig, *, url: str | None = None, replicas: int = 2, out: Path | None = None,
             policy: Path | None = None, canary_policy: Path | None = None, as_json: bool = False, home=None,
             data_dir=None, state: str | None = None) -> dict:
    """The loop of ``config`` on the home (a service started there unless ``url``); its summary,
    written with its page under ``out``."""
    import os
    import secrets
    import sys

    from newsfeed import atomic
    from newsfeed.config import Paths

    for option, path in (("--policy", policy), ("--canary-policy", canary_policy)):
        if path is not None and not path.is_file():
            raise fail(f"{option}: {path}: no such file")
    paths = Paths.resolve(home, data_dir)
    if not (paths.data_dir / "truth").is_dir():
        raise fail(f"{paths.data_dir}: not a simulated dataset (run `newsfeed data generate` and `newsfeed pipeline "
                   "run` first)")
    out = out or paths.home / "loop" / time.strftime("%Y%m%dT%H%M%S")
    stream = sys.stderr if as_json else sys.stdout

    def progress(line: str) -> None:
        print(line, file=stream, flush=True)

    server = None
    if url is None:
        os.environ["NEWSFEED_ADMIN_TOKEN"] = os.environ.get("NEWSFEED_ADMIN_TOKEN") or secrets.token_hex(16)
        server = _start_server(paths, replicas, state, progress)
        url = server.url
    try:
        summary = _loop(config, url, paths, out, policy, canary_policy, progress)
    finally:
        if server is not None:
            progress("stopping the service")
            server.stop()
    summary["out"] = str(out)
    atomic.write_text(out / "summary.json", json.dumps(summary, indent=1, default=float))
    return summary


def _start_server(paths, replicas: int, state: str | None, progress):
    from serving.local import LocalServer
    from serving.settings import ServingSettings

    from newsfeed.cli.serve import _check_ready_to_serve

    settings = ServingSettings(home=str(paths.home.resolve()), data_dir=str(paths.data_dir.resolve()),
                               clock="simulated", replicas=replicas, state=state)
    _check_ready_to_serve(settings)
    server = LocalServer(settings, port=_free_port())
    progress(f"starting the service ({replicas} replicas, simulated clock) at {server.url}")
    t0 = time.perf_counter()
    server.start()
    progress(f"service ready in {time.perf_counter() - t0:.0f} s")
    return server


def _loop(config, url: str, paths, out: Path, policy, canary_policy, progress) -> dict:
    import os

    from newsfeed.loop.client import FeedClient
    from newsfeed.loop.jobs import Jobs
    from newsfeed.loop.run import Loop
    from newsfeed.loop.summary import page, summarise
    from newsfeed.loop.world import LiveWorld
    from newsfeed import atomic

    client = FeedClient(url, os.environ.get("NEWSFEED_ADMIN_TOKEN"), os.environ.get("NEWSFEED_INGEST_TOKEN"))
    try:
        health = client.wait_ready(60)
        if health["clock"]["kind"] != "simulated":
            raise fail(f"{url} runs on the {health['clock']['kind']} clock: serve with NEWSFEED_CLOCK=simulated")
        start = client.now()
        start_ns = int(start * 1e9)
        world = LiveWorld.of_dataset(paths.data_dir, start_ns, config.days, config.seed)
        progress(f"the loop starts at {health['clock']['now']}: {config.days:g} days, "
                 f"{len(world.published.posts):,} posts, {len(world.published.users):,} sign-ups and "
                 f"{len(world.published.friendships):,} new ties to come")
        jobs = (Jobs(paths.home, paths.data_dir, out / "jobs", policy, canary_policy, config.retrain_epochs)
                if config.retrain else None)
        loop = Loop(config, client, world, jobs, progress)
        t0 = time.perf_counter()
        ledger = loop.run(start_ns)
        world.save(paths.data_dir)
    finally:
        client.close()
    summary = summarise(ledger, config.drift_day, config.interleave, config.interleaved_arm)
    summary.update(drift_day=config.drift_day, wall_seconds=round(time.perf_counter() - t0, 1),
                   config=config.model_dump())
    atomic.write_text(out / "index.html", page(summary, ledger))
    ledger.frame().to_csv(out / "impressions.csv.gz", index=False)
    return summary


def print_summary(summary: dict) -> None:
    from rich.table import Table

    from newsfeed.loop.summary import gate_line

    table = Table(title="realised engagement per impression (eng./impr.), 95% interval over users")
    for column in ("arm", "users", "impr.", "eng./impr.", "95% interval", "true exp."):
        table.add_column(column, justify="left" if column == "arm" else "right", no_wrap=True)
    for name, arm in summary["arms"].items():
        e = arm["engagement_per_impression"]
        table.add_row(name, f"{arm['users']:,}", f"{arm['impressions']:,}", f"{e['estimate']:+.3f}",
                      f"[{e['ci'][0]:+.3f}, {e['ci'][1]:+.3f}]", f"{arm['expected_per_impression']['estimate']:+.3f}")
    console.print(table)
    for canary in summary.get("canaries", []):
        days = f"days {canary['from_day']:g}-{canary['to_day']:g}" if canary["to_day"] else f"from day {canary['from_day']:g}"
        same = ", ".join(f"{name} {arm['engagement_per_impression']['estimate']:+.3f} (true exp. "
                         f"{arm['expected_per_impression']['estimate']:+.3f}; {arm['users']} users)"
                         for name, arm in canary["arms"].items())
        console.print(f"during the canary ({days}), per impression: {same}", highlight=False, soft_wrap=True)
    for retrain in summary["retrains"]:
        gate = f"; gate: {gate_line(retrain['gate'])}" if retrain.get("gate") else ""
        reasons = "; ".join(retrain["reasons"])
        console.print(f"retrain on day {retrain['day']:g}: exit {retrain['exit_code']} ({reasons}){gate}",
                      highlight=False, soft_wrap=True)
    for decision in summary["decisions"]:
        for verdict in decision["verdicts"]:
            console.print(f"verdict on day {decision['day']:g}: {verdict['arm']} {verdict['action']} ({verdict['why']})",
                          highlight=False, soft_wrap=True)
    sensitivity = summary.get("sensitivity")
    if sensitivity:
        a, b = sensitivity["arms"]
        il, ab = sensitivity["interleaving"], sensitivity["ab"]
        pref = il["preference_a"]
        console.print(f"interleaving {a} vs {b}: {pref['estimate']:.1%} of users with a preference preferred {a} "
                      f"[{pref['ci'][0]:.1%}, {pref['ci'][1]:.1%}]; users needed to tell them apart (5% level, 80% "
                      f"power): A/B {ab['users']:,.0f}, interleaving {il['users']:,.0f} "
                      f"(ratio {sensitivity['ratio_ab_to_interleaving']:.1f})", highlight=False, soft_wrap=True)
    console.print(f"page: {summary['out']}/index.html; summary: {summary['out']}/summary.json", highlight=False,
                  soft_wrap=True)
