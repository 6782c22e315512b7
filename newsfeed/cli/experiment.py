"""`newsfeed experiment set | show`: the arms that split feed traffic."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from newsfeed.cli.common import HomeOption, console, fail

app = typer.Typer(help="Experiment arms: traffic shares, models, weights, re-rankers.", no_args_is_help=True)


def _store(home):
    from newsfeed.config import Paths
    from newsfeed.feed.service import ExperimentStore

    return ExperimentStore(Paths.resolve(home).home)


def _pairs(values: list[str], option: str) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise fail(f"{option} {value!r}: expected NAME=VALUE")
        out[name] = rest
    return out


@app.command("set")
def set_experiment(
    arm: Annotated[list[str], typer.Option("--arm", help="NAME=PERCENT; repeat per arm. A new arm serves the "
                                                          "challenger models unless --model says otherwise.")] = [],
    model: Annotated[list[str], typer.Option("--model", help="NAME=ALIAS_OR_VERSION for both models of an arm.")] = [],
    shadow: Annotated[str | None, typer.Option(help="Arm (share 0) to score beside every request; '' for none.")] = None,
    salt: Annotated[str | None, typer.Option(help="New assignment salt (reshuffles users).")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="A whole experiment as YAML.")] = None,
    home: HomeOption = None,
) -> None:
    """Change the experiment; running servers on this home follow within a second."""
    import yaml
    from pydantic import ValidationError

    from newsfeed.feed.arms import Arm, Experiment

    shares = _pairs(arm, "--arm")
    models = _pairs(model, "--model")
    try:
        numbers = {name: float(value) for name, value in shares.items()}
    except ValueError:
        raise fail(f"--arm: shares must be numbers, got {shares}") from None
    store = _store(home)
    try:
        experiment = (Experiment.model_validate(yaml.safe_load(file.read_text()) or {}) if file
                      else store.read())
        arms = {a.name: a for a in experiment.arms}
        for name in {*numbers, *models}:
            if name not in arms:
                default = "champion" if name == "champion" else "challenger"
                arms[name] = Arm(name=name, share=0, two_tower=default, ranker=default)
        for name, ref in models.items():
            arms[name] = arms[name].model_copy(update={"two_tower": ref, "ranker": ref})
        if numbers:  # the arms named are the experiment's arms; others drop out
            arms = {n: a.model_copy(update={"share": numbers.get(n, 0.0)}) for n, a in arms.items()
                    if n in numbers or n == (shadow or experiment.shadow)}
        update = {"arms": [a.model_dump() for a in arms.values()]}
        if shadow is not None:
            update["shadow"] = shadow or None
        if salt:
            update["salt"] = salt
        experiment = Experiment.model_validate({**experiment.model_dump(), **update})
    except ValidationError as err:
        raise fail(f"invalid experiment: {err.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    except (OSError, yaml.YAMLError) as err:
        raise fail(f"{file}: {err}") from None
    _print(store.save(experiment))


@app.command()
def show(home: HomeOption = None) -> None:
    """The experiment's arms, shares and models."""
    _print(_store(home).read())


def _print(experiment) -> None:
    from rich.table import Table

    table = Table(title=f"experiment {experiment.name!r} version {experiment.version} (salt {experiment.salt!r})")
    for column in ("arm", "share %", "two-tower", "ranker", "weights", "re-ranking"):
        table.add_column(column, justify="right" if column == "share %" else "left")
    for a in experiment.arms:
        changed = {k: v for k, v in a.reranking.model_dump().items()
                   if v != type(a.reranking)().model_dump()[k]}
        table.add_row(a.name + (" (shadow)" if a.name == experiment.shadow else ""), f"{a.share:g}", a.two_tower,
                      a.ranker, ", ".join(f"{k}={v:g}" for k, v in a.weights.items()) or "registered",
                      ", ".join(f"{k}={v}" for k, v in changed.items()) or "defaults")
    console.print(table)
