"""`newsfeed drift check | report`: compare recent traffic with the champion's training data,
decide whether to retrain, and keep the reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from newsfeed.cli.common import DataDirOption, HomeOption, StoreOption, console, fail, open_feature_store, open_registry

app = typer.Typer(help="Drift between the champion's training data and recent traffic; the retrain trigger.",
                  no_args_is_help=True)

ReferenceOption = Annotated[Path | None, typer.Option(
    "--reference", help="Data folder to compare against [default: the champion's training window, from its lineage].")]
CurrentOption = Annotated[Path | None, typer.Option(
    "--current", help="Data folder of recent traffic [default: the last --current-days of the data folder].")]
CurrentDaysOption = Annotated[float, typer.Option(help="Days of recent impressions in the current window.")]
ReferenceDaysOption = Annotated[float, typer.Option(
    help="Last days of the champion's training window compared (0: all of it; its first days are a cold start).")]
DryRunOption = Annotated[bool, typer.Option(
    "--dry-run", help="Decide and audit, but start no retrain and hold no cooldown.")]
AgainstOption = Annotated[str, typer.Option(
    help="Reference: training (the champion's training window) | previous (the --reference-days of this data just "
         "before the current window: live traffic against its own recent past).")]
WaitOption = Annotated[bool, typer.Option(
    "--wait", help="A local retrain runs to its end before the command returns; its exit code in the audit line.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]
PolicyOption = Annotated[Path | None, typer.Option(
    "--policy", help="Retrain policy YAML (thresholds, cooldown, action) [default: <home>/monitoring/policy.yaml "
                     "if present, else built-in].")]


def _run(home, data_dir, store, registry, reference, current, current_days, reference_days, policy_file, dry_run,
         write: bool, wait: bool = False, against: str = "training"):
    from monitoring import drift, report_store, windows
    from monitoring.trigger import RetrainPolicy, Trigger
    from newsfeed.config import Paths
    from newsfeed.feed.served_data import absorb

    paths = Paths.resolve(home, data_dir)
    if against not in windows.AGAINST:
        raise fail(f"--against {against!r}: expected one of {', '.join(windows.AGAINST)}")
    if current_days <= 0:
        raise fail(f"--current-days: must be positive, got {current_days:g}")
    if reference_days < 0:
        raise fail(f"--reference-days: must be 0 or more, got {reference_days:g}")
    for option, folder in (("--reference", reference), ("--current", current)):
        if folder is not None and not folder.is_dir():
            raise fail(f"{option}: {folder}: no such folder")
    default_policy = paths.home / "monitoring" / "policy.yaml"
    policy = RetrainPolicy.load(policy_file or (default_policy if default_policy.exists() else None))
    policy.check()
    feast_store, _ = open_feature_store(paths.home, store)
    reg = open_registry(paths.home, registry)
    absorb(paths.home, paths.data_dir)  # recent traffic: what the service showed, with its reactions
    ref, cur, lineage = windows.build(feast_store, reg, paths.data_dir, reference, current,
                                      current_days, reference_days, against=against)
    summary, snapshot = drift.compare(ref, cur, lineage)
    trigger = Trigger(paths.home, policy)
    now = cur.end.timestamp()  # the traffic's time: the wall clock in production, the loop's when simulated
    decision = trigger.decide(summary, now)
    summary["drifted"] = bool(decision.reasons)
    folder = report_store.write(paths.home, summary, decision.to_dict(), snapshot) if write else None
    action = trigger.act(decision, paths.data_dir, str(folder / "report.html") if folder else None, now,
                         dry_run=dry_run, wait=wait)
    return summary, decision, action, folder


def _print(summary, decision, action, folder) -> None:
    verdict = "[bold red]DRIFT[/]" if summary["drifted"] else "[green]no drift[/]"
    console.print(f"{verdict}: {len(summary['drifted_features'])} of {len(summary['features'])} features drifted "
                  f"({summary['drifted_share']:.0%}); engagement score drift "
                  f"{summary['prediction']['engagement_score']['score']:.3f}")
    engagement = summary["engagement"]
    console.print(f"realised engagement per impression {engagement['reference']:.3f} -> {engagement['current']:.3f} "
                  f"(z {engagement['z']:+.1f})", highlight=False)
    for reason in decision.reasons:
        console.print(f"  why: {reason}", highlight=False)
    if decision.retrain:
        verb = "would fire (dry run)" if action["action"].startswith("dry run") else f"fired ({action['action']})"
        console.print(f"retrain {verb}: {' '.join(action.get('command', []))}", soft_wrap=True, highlight=False)
    elif decision.suppressed:
        console.print(f"retrain held: {decision.suppressed}")
    if folder:
        console.print(f"report: {folder / 'report.html'} (index: {folder.parent / 'index.html'})", soft_wrap=True)


@app.command()
def check(
    reference: ReferenceOption = None, current: CurrentOption = None, current_days: CurrentDaysOption = 1.0,
    reference_days: ReferenceDaysOption = 3.0, policy: PolicyOption = None, dry_run: DryRunOption = False,
    wait: WaitOption = False, as_json: JsonOption = False, against: AgainstOption = "training",
    home: HomeOption = None, data_dir: DataDirOption = None, store: StoreOption = None,
    registry: Annotated[str | None, typer.Option(help="embedded | production [env NEWSFEED_REGISTRY].")] = None,
) -> None:
    """Compare the windows, decide, fire the retrain trigger when the policy says so (audit line
    in <home>/monitoring/audit.log). Exit 0 either way."""
    _show(*_run(home, data_dir, store, registry, reference, current, current_days, reference_days, policy, dry_run,
                write=False, wait=wait, against=against), as_json)


def _show(summary, decision, action, folder, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"drifted": summary["drifted"], "drifted_features": summary["drifted_features"],
                          "retrain": decision.retrain, "reasons": decision.reasons,
                          "suppressed": decision.suppressed, "action": action,
                          "report": str(folder / "report.html") if folder else None, **summary}, default=str))
    else:
        _print(summary, decision, action, folder)


@app.command()
def report(
    reference: ReferenceOption = None, current: CurrentOption = None, current_days: CurrentDaysOption = 1.0,
    reference_days: ReferenceDaysOption = 3.0, policy: PolicyOption = None, dry_run: DryRunOption = False,
    wait: WaitOption = False, as_json: JsonOption = False, against: AgainstOption = "training",
    home: HomeOption = None, data_dir: DataDirOption = None, store: StoreOption = None,
    registry: Annotated[str | None, typer.Option(help="embedded | production [env NEWSFEED_REGISTRY].")] = None,
) -> None:
    """As `check`, and write the HTML and JSON report under <home>/monitoring/drift/ with its index."""
    _show(*_run(home, data_dir, store, registry, reference, current, current_days, reference_days, policy, dry_run,
                write=True, wait=wait, against=against), as_json)
