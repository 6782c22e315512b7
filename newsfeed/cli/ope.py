"""`newsfeed ope estimate`: a policy's click rate from another policy's logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from newsfeed.cli.common import console, fail

app = typer.Typer(help="Off-policy evaluation: judge a policy from logged impressions before any user sees it.",
                  no_args_is_help=True)


@app.command()
def estimate(
    open_bandit: Annotated[Path | None, typer.Option("--open-bandit", help="Open Bandit Dataset root "
                                                                           "(<policy>/<campaign>/<campaign>.csv).")] = None,
    campaign: Annotated[str, typer.Option(help="Open Bandit campaign: men | women | all.")] = "men",
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="A data folder whose impressions carry "
                                                                     "propensities.")] = None,
    behaviour: Annotated[str | None, typer.Option(help="The logging policy (variant) to learn from [Open Bandit: "
                                                       "bts; data folder: all rows].")] = None,
    target: Annotated[str, typer.Option(help="Target policy to estimate: uniform.")] = "uniform",
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap and the reward model's folds.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print every estimate as JSON.")] = False,
) -> None:
    """IPS, self-normalised IPS and doubly robust estimates of the target's click rate, each with a
    95% bootstrap interval, beside the target's own logged click rate where the data holds it."""
    from monitoring import ope

    if (open_bandit is None) == (data_dir is None):
        raise fail("give one of --open-bandit DIR or --data-dir DIR")
    if campaign not in ("men", "women", "all"):
        raise fail(f"--campaign: one of men, women, all (got {campaign!r})")
    if target not in ope.TARGETS:
        raise fail(f"--target: one of {', '.join(ope.TARGETS)} (got {target!r})")
    if open_bandit is not None:
        result = ope.evaluate_open_bandit(open_bandit, campaign, behaviour or "bts", target, seed)
    else:
        from monitoring.impression_log import from_data_dir

        result = ope.evaluate_impressions(from_data_dir(data_dir)[0], target, behaviour, seed)
    if as_json:
        print(json.dumps(result))
        return
    _print(result)


def _print(result: dict) -> None:
    from rich.table import Table

    truth = result.get("on_policy")
    table = Table(title=f"{result['target']} policy's click rate from {result['behaviour']} logs "
                        f"({result['rows']:,} rows, {result['clicks']} clicks, {result['actions']} actions)")
    for column in ("estimator", "estimate", "95% interval", *(("covers truth",) if truth else ())):
        table.add_column(column, justify="left" if column == "estimator" else "right")
    for name, value in result["estimators"].items():
        row = [name.upper(), f"{value['estimate']:.5f}", f"[{value['ci'][0]:.5f}, {value['ci'][1]:.5f}]"]
        if truth:
            row.append("yes" if result["coverage"][name] else "no")
        table.add_row(*row)
    if truth:
        table.add_row("on-policy truth", f"{truth['estimate']:.5f}", f"[{truth['ci'][0]:.5f}, {truth['ci'][1]:.5f}]",
                      f"{truth['rows']:,} rows, {truth['clicks']} clicks")
    console.print(table)
    console.print(f"{result['clicks']} clicks in {result['rows']:,} rows: intervals this wide are what the data allows.")
