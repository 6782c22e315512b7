"""`newsfeed train two-tower | ranker` and `newsfeed evaluate`: train, evaluate against the
baselines, log to MLflow and register the new version as the challenger."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from newsfeed.cli.common import (DataDirOption, HomeOption, RegistryOption, StoreOption, console, fail,
                                 open_feature_store, open_registry, require_applied)

app = typer.Typer(help="Train the two-tower retrieval model or the multi-task ranker.", no_args_is_help=True)

EpochsOption = Annotated[int, typer.Option(help="Maximum epochs (early stopping on validation loss).")]
SeedOption = Annotated[int, typer.Option(help="Seed of initialisation and shuffling.")]
BatchOption = Annotated[int, typer.Option(help="Minibatch size.")]
NoRegisterOption = Annotated[bool, typer.Option("--no-register", help="Log the run but register no version.")]
RecencyOption = Annotated[float, typer.Option("--recency-half-life", help="Weight training rows by recency, "
                                                                         "halving every this many days (0: off).")]
RefitOption = Annotated[bool, typer.Option("--refit/--no-refit", help="After early stopping, retrain on train + "
                                                                       "validation for the chosen epoch count.")]


def _context(home, data_dir, store, registry):
    from newsfeed.config import Paths

    paths = Paths.resolve(home, data_dir)
    feast_store, _ = open_feature_store(home, store)
    require_applied(feast_store)
    return paths, feast_store, open_registry(home, registry)


def metric_table(title: str, report: dict[str, dict[str, float]]) -> Table:
    """One row per scorer (model and baselines), one column per metric."""
    table = Table(title=title)
    columns = list(dict.fromkeys(k for row in report.values() for k in row))
    table.add_column("scorer")
    for c in columns:
        table.add_column(c, justify="right")
    for scorer, row in report.items():
        table.add_row(scorer, *(f"{row[c]:.4f}" if c in row else "" for c in columns))
    return table


def head_table(heads: dict[str, float]) -> Table:
    from newsfeed.models.ranker import HEADS

    table = Table(title="ranker heads (test period)")
    for c in ("head", "ROC-AUC", "PR-AUC", "calibration error"):
        table.add_column(c, justify="left" if c == "head" else "right")
    for h in HEADS:
        values = [heads.get(f"{m}_{h}", float("nan")) for m in ("auc", "pr_auc", "calibration_error")]
        table.add_row(h, *(f"{v:.3f}" for v in values))
    return table


def _train_config(epochs: int, batch_size: int, seed: int, learning_rate: float, refit: bool, recency: float):
    from pydantic import ValidationError

    from newsfeed.models.training import TrainConfig

    try:
        return TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, learning_rate=learning_rate, refit=refit,
                           recency_half_life_days=recency or None)
    except ValidationError as err:
        first = err.errors()[0]
        option = {"recency_half_life_days": "recency_half_life"}.get(first["loc"][0], first["loc"][0])
        raise fail(f"--{str(option).replace('_', '-')}: {first['msg']}") from None


def _run(job, *args, **kwargs):
    """Call a training run; bad data, settings or an unreachable registry end in a clear error."""
    from newsfeed.registry import RegistryError

    try:
        return job(*args, **kwargs)
    except (FileNotFoundError, ValueError, RegistryError) as err:  # WeightsError is a ValueError
        raise fail(str(err)) from None


def _report_run(result) -> None:
    version = f"version {result.version} (alias challenger)" if result.version else "not registered"
    console.print(f"[bold]{result.model_name}[/]: run {result.run_id}, {version}; "
                  f"{result.history.samples_per_second:,.0f} samples/s, best epoch {result.history.best_epoch + 1}",
                  soft_wrap=True)


@app.command("two-tower")
def two_tower(
    epochs: EpochsOption = 12, batch_size: BatchOption = 512, seed: SeedOption = 7,
    learning_rate: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    refit: RefitOption = False, recency_half_life: RecencyOption = 0.0, no_register: NoRegisterOption = False,
    home: HomeOption = None, data_dir: DataDirOption = None, store: StoreOption = None, registry: RegistryOption = None,
) -> None:
    """Train the two-tower retrieval model on engaged impressions; evaluate Recall@K against baselines."""
    from newsfeed.models.runs import train_two_tower

    train = _train_config(epochs, batch_size, seed, learning_rate, refit, recency_half_life)
    paths, feast_store, reg = _context(home, data_dir, store, registry)
    result = _run(train_two_tower, paths.home, paths.data_dir, feast_store, reg, train=train,
                  register=not no_register)
    console.print(metric_table("retrieval (test period, seen posts excluded)", result.report))
    _report_run(result)


@app.command()
def ranker(
    architecture: Annotated[str, typer.Option(help="mmoe | shared-bottom.")] = "mmoe",
    weights: Annotated[Path | None, typer.Option(help="Engagement weight table (YAML) to register with the model.")] = None,
    epochs: EpochsOption = 12, batch_size: BatchOption = 1024, seed: SeedOption = 7,
    learning_rate: Annotated[float, typer.Option(help="AdamW learning rate.")] = 2e-3,
    refit: RefitOption = True, recency_half_life: RecencyOption = 5.0, no_register: NoRegisterOption = False,
    home: HomeOption = None, data_dir: DataDirOption = None, store: StoreOption = None, registry: RegistryOption = None,
) -> None:
    """Train the multi-task ranker; evaluate per-head AUC and NDCG@10 against baselines and the oracle."""
    from pydantic import ValidationError

    from newsfeed.models.ranker import RankerConfig
    from newsfeed.models.runs import train_ranker

    try:
        config = RankerConfig(architecture=architecture)
    except ValidationError as err:
        raise fail(f"--architecture: {err.errors()[0]['msg']}") from None
    train = _train_config(epochs, batch_size, seed, learning_rate, refit, recency_half_life)
    paths, feast_store, reg = _context(home, data_dir, store, registry)
    result = _run(train_ranker, paths.home, paths.data_dir, feast_store, reg, config, train, weights_file=weights,
                  register=not no_register)
    console.print(head_table(result.report["heads"]))
    console.print(metric_table("ranking (test period, per request)", result.report["ranking"]))
    _report_run(result)


def evaluate(
    model: Annotated[str, typer.Option("--model", help="Alias (champion, challenger) or version number.")] = "challenger",
    home: HomeOption = None, data_dir: DataDirOption = None, store: StoreOption = None, registry: RegistryOption = None,
) -> None:
    """Evaluate the registered two-tower and ranker versions on the held-out period, with the baselines."""
    from newsfeed.models.runs import evaluate_registered

    paths, feast_store, reg = _context(home, data_dir, store, registry)
    report = _run(evaluate_registered, paths.home, paths.data_dir, feast_store, reg, model)
    versions = ", ".join(f"{k} v{v}" for k, v in report["versions"].items())
    console.print(f"evaluating {model}: {versions}")
    console.print(metric_table("retrieval (test period, seen posts excluded)", report["retrieval"]))
    console.print(head_table(report["ranker"]["heads"]))
    console.print(metric_table("ranking (test period, per request)", report["ranker"]["ranking"]))
