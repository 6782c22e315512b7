"""`newsfeed train two-tower | ranker` and `newsfeed evaluate`: train, evaluate against the
baselines, log to MLflow and register the new version as the challenger."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from newsfeed.cli.common import (DataDirOption, HomeOption, RegistryOption, StoreOption, console, fail,
                                 open_feature_store, open_registry, require_applied)
from newsfeed.models.settings import RANKER_FINE_TUNING, RANKER_TRAINING, TWO_TOWER_TRAINING
from newsfeed.models.tables import head_table, ranking_table, retrieval_table

app = typer.Typer(help="Train the two-tower retrieval model or the multi-task ranker.", no_args_is_help=True)

EpochsOption = Annotated[int, typer.Option(help="Maximum epochs (early stopping on validation loss).")]
SeedOption = Annotated[int, typer.Option(help="Seed of initialisation and shuffling.")]
BatchOption = Annotated[int, typer.Option(help="Minibatch size.")]
LearningRateOption = Annotated[float, typer.Option(help="AdamW learning rate.")]
NoRegisterOption = Annotated[bool, typer.Option("--no-register", help="Log the run but register no version.")]
RecencyOption = Annotated[float, typer.Option("--recency-half-life", help="Weight training rows by recency, "
                                                                         "halving every this many days (0: off).")]
RefitOption = Annotated[bool, typer.Option("--refit/--no-refit", help="After early stopping, retrain on train + "
                                                                       "validation for the chosen epoch count.")]
RayWorkersOption = Annotated[int, typer.Option(help="Train data-parallel on this many Ray Train workers "
                                                  "(0: in this process).", min=0)]
RayAddressOption = Annotated[str | None, typer.Option(help="Ray cluster for --ray-workers [default: a local Ray].")]


def _trainer(workers: int, address: str | None):
    from newsfeed.models.distributed import RayTrainConfig

    return RayTrainConfig(workers=workers, address=address) if workers else None


def _context(home, data_dir, store, registry):
    from newsfeed.config import Paths

    paths = Paths.resolve(home, data_dir)
    feast_store, _ = open_feature_store(home, store)
    require_applied(feast_store)
    return paths, feast_store, open_registry(home, registry)


def _train_config(base, epochs: int, batch_size: int, seed: int, learning_rate: float, refit: bool,
                  recency: float):
    """``base`` (a model's training defaults, newsfeed.models.runs) with the command's options."""
    from pydantic import ValidationError

    from newsfeed.errors import option_message
    from newsfeed.models.training import TrainConfig

    try:
        return TrainConfig(**{**base.model_dump(), "epochs": epochs, "batch_size": batch_size, "seed": seed,
                              "learning_rate": learning_rate, "refit": refit, "recency_half_life_days": recency or None})
    except ValidationError as err:
        raise fail(option_message(err, {"recency_half_life_days": "--recency-half-life"})) from None


def _run(job, *args, **kwargs):
    """Call a training run; bad data, settings or an unreachable registry end in a clear error."""
    from newsfeed.registry import RegistryError

    try:
        return job(*args, **kwargs)
    except (FileNotFoundError, ValueError, RegistryError) as err:  # WeightsError is a ValueError
        raise fail(str(err)) from None


def _report_run(result) -> None:
    version = f"version {result.version} (alias challenger)" if result.version else "not registered"
    h = result.history
    console.print(f"[bold]{result.model_name}[/]: run {result.run_id}, {version}; trained in {h.seconds:.1f} s "
                  f"({h.samples_per_second:,.0f} samples/s), best epoch {h.best_epoch + 1}", soft_wrap=True)


@app.command("two-tower")
def two_tower(
    epochs: EpochsOption = TWO_TOWER_TRAINING.epochs, batch_size: BatchOption = TWO_TOWER_TRAINING.batch_size,
    seed: SeedOption = TWO_TOWER_TRAINING.seed, learning_rate: LearningRateOption = TWO_TOWER_TRAINING.learning_rate,
    refit: RefitOption = TWO_TOWER_TRAINING.refit,
    recency_half_life: RecencyOption = TWO_TOWER_TRAINING.recency_half_life_days or 0.0,
    no_register: NoRegisterOption = False,
    ray_workers: RayWorkersOption = 0, ray_address: RayAddressOption = None, home: HomeOption = None, data_dir: DataDirOption = None, store: StoreOption = None, registry: RegistryOption = None,
) -> None:
    """Train the two-tower retrieval model on engaged impressions; evaluate Recall@K against baselines."""
    from newsfeed.models.runs import train_two_tower

    train = _train_config(TWO_TOWER_TRAINING, epochs, batch_size, seed, learning_rate, refit, recency_half_life)
    paths, feast_store, reg = _context(home, data_dir, store, registry)
    result = _run(train_two_tower, paths.home, paths.data_dir, feast_store, reg, train=train,
                  register=not no_register, trainer=_trainer(ray_workers, ray_address))
    console.print(retrieval_table(result.report))
    _report_run(result)


FromOption = Annotated[str | None, typer.Option(
    "--from", help="Fine-tune this registered ranker (alias or version) on the impressions since the time it was "
                   "trained through, from its weights, instead of training afresh (continual training).")]


@app.command()
def ranker(
    architecture: Annotated[str | None, typer.Option(help="mmoe | shared-bottom [default: mmoe; with --from, "
                                                          "the base's].")] = None,
    weights: Annotated[Path | None, typer.Option(help="Engagement weight table (YAML) to register with the model.")] = None,
    start: FromOption = None,
    epochs: Annotated[int | None, typer.Option(help=f"Maximum epochs, early-stopped on validation [default: "
                                                    f"{RANKER_TRAINING.epochs}]; with --from, passes over the new "
                                                    f"impressions [default: {RANKER_FINE_TUNING.epochs}].")] = None,
    batch_size: BatchOption = RANKER_TRAINING.batch_size, seed: SeedOption = RANKER_TRAINING.seed,
    learning_rate: Annotated[float | None, typer.Option(help=f"AdamW learning rate [default: "
                                                             f"{RANKER_TRAINING.learning_rate:g}; with --from: "
                                                             f"{RANKER_FINE_TUNING.learning_rate:g}].")] = None,
    refit: Annotated[bool | None, typer.Option(
        "--refit/--no-refit", help=f"After early stopping, retrain on train + validation for the chosen epoch count "
                                   f"[default: {'refit' if RANKER_TRAINING.refit else 'no-refit'}; a fine-tune "
                                   f"has none].", show_default=False)] = None,
    recency_half_life: RecencyOption = RANKER_TRAINING.recency_half_life_days or 0.0,
    teachers: Annotated[int | None, typer.Option(
        min=0, help=f"Rankers trained first, with seeds --seed on, whose mean predicted probabilities the ranker "
                    f"learns from in place of the 0/1 reactions (ensemble distillation; 0: from the reactions) "
                    f"[default: {RANKER_TRAINING.teachers}; a fine-tune has none].", show_default=False)] = None,
    no_register: NoRegisterOption = False,
    ray_workers: RayWorkersOption = 0, ray_address: RayAddressOption = None, home: HomeOption = None, data_dir: DataDirOption = None, store: StoreOption = None, registry: RegistryOption = None,
) -> None:
    """Train the multi-task ranker; evaluate per-head AUC and NDCG@10 against baselines and the oracle."""
    from pydantic import ValidationError

    from newsfeed.models.ranker import RankerConfig
    from newsfeed.models.runs import fine_tune_ranker, train_ranker

    if start is not None and architecture is not None:
        raise fail("--architecture: a fine-tune keeps its base's architecture (leave it out with --from)")
    if start is not None and ray_workers:
        raise fail("--ray-workers: a fine-tune trains in this process (leave it out with --from)")
    if start is not None and refit:
        raise fail("--refit: a fine-tune has no early stopping to refit after (leave it out with --from)")
    if start is not None and teachers:
        raise fail("--teachers: a fine-tune starts from its base's weights, not from teachers (leave it out with --from)")
    try:
        config = RankerConfig(**({"architecture": architecture} if architecture else {}))
    except ValidationError as err:
        raise fail(f"--architecture: {err.errors()[0]['msg']}") from None
    base = RANKER_FINE_TUNING if start is not None else RANKER_TRAINING
    train = _train_config(base, base.epochs if epochs is None else epochs, batch_size, seed,
                          base.learning_rate if learning_rate is None else learning_rate,
                          base.refit if refit is None else refit, recency_half_life)
    if teachers is not None:
        train = train.model_copy(update={"teachers": teachers})
    paths, feast_store, reg = _context(home, data_dir, store, registry)
    if start is not None:
        result = _run(fine_tune_ranker, paths.home, paths.data_dir, feast_store, reg, start, train,
                      weights_file=weights, register=not no_register)
    else:
        result = _run(train_ranker, paths.home, paths.data_dir, feast_store, reg, config, train, weights_file=weights,
                      register=not no_register, trainer=_trainer(ray_workers, ray_address))
    console.print(head_table(result.report["heads"]))
    console.print(ranking_table(result.report["ranking"], result.report["tuning"]))
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
    console.print(retrieval_table(report["retrieval"]))
    console.print(head_table(report["ranker"]["heads"]))
    console.print(ranking_table(report["ranker"]["ranking"], report["ranker"]["tuning"]))
