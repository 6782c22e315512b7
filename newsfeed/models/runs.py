"""One training, evaluation or indexing run end to end: data -> model -> evaluation ->
MLflow (params, metrics, artifacts, lineage) -> registry alias. The command line and the
pipeline components call these; the logic lives here once."""

from __future__ import annotations

import functools
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version as installed_version
from pathlib import Path

import numpy as np
import pandas as pd

from newsfeed.data.world import World
from newsfeed.features.catalog import TIMESTAMP
from newsfeed.models import continual, datasets, evaluation, saved
from newsfeed.models.distributed import RayTrainConfig
from newsfeed.models.ranker import (HEADS, MultiTaskRanker, RankerConfig, apply_platt, fit_platt, multitask_loss,
                                    training_batch as ranker_batch)
from newsfeed.models.settings import RANKER_FINE_TUNING, RANKER_TRAINING, TWO_TOWER_TRAINING, TrainConfig
from newsfeed.models.training import History, fit, recency_weights, seed_everything
from newsfeed.models.two_tower import (POST_VIEWS, USER_VIEWS, TwoTower, TwoTowerConfig, full_corpus_recall,
                                       in_batch_loss, sampling_log_q, training_batch as two_tower_batch)
from newsfeed.models.registered import load_registered
from newsfeed.registry import INDEX_TAG, RANKER, TWO_TOWER, Registry, RegistryError, code_version
from newsfeed.scoring import engagement_score, load_weights, realised_engagement

INDEX_EXPERIMENT = "newsfeed-index"
MODEL_URI_TAG = "model_uri"
RUNTIME_PACKAGES = ("torch", "numpy", "pandas", "pandera", "scikit-learn", "pyyaml", "pydantic", "mlflow", "rich")
"""What a registered model needs to load and predict anywhere (pinned to this environment's versions)."""


@dataclass
class RunResult:
    model_name: str
    run_id: str
    version: str | None
    metrics: dict[str, float]
    report: dict = field(default_factory=dict)
    history: History | None = None
    model: object = None  # the trained TwoTower or MultiTaskRanker


def metric_name(name: str) -> str:
    """MLflow metric names allow no '@'."""
    return name.replace("@", "_at_")


def flat_metrics(report: dict[str, dict[str, float]], prefix: str = "") -> dict[str, float]:
    return {metric_name(f"{prefix}{scorer}.{k}"): float(v) for scorer, row in report.items() for k, v in row.items()
            if v == v}  # NaN (undefined) is left out, not logged as a number


def runtime_requirements() -> list[str]:
    out = []
    for package in RUNTIME_PACKAGES:
        try:
            out.append(f"{package}=={installed_version(package)}")
        except PackageNotFoundError:
            out.append(package)
    return out


def _log_model(model, name: str, kind: str, weights: dict | None, register: bool, registry: Registry):
    """Log the model folder as a pyfunc (with this package's code, so it loads anywhere) in
    the active run; with ``register``, register it as the challenger (see register_run)."""
    import mlflow
    import newsfeed
    from newsfeed.models import pyfunc

    python_model, signature = ((pyfunc.TwoTowerPyfunc(), pyfunc.two_tower_signature()) if kind == "two_tower"
                               else (pyfunc.RankerPyfunc(), pyfunc.ranker_signature()))
    with tempfile.TemporaryDirectory() as tmp:
        folder = saved.save(model, Path(tmp) / "model", weights)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=python_model, signature=signature, artifacts={pyfunc.MODEL_DIR: str(folder)},
            code_paths=[str(Path(newsfeed.__file__).parent)], pip_requirements=runtime_requirements(),
        )
    mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
    return register_run(registry, name, mlflow.active_run().info.run_id) if register else None


def register_run(registry: Registry, name: str, run_id: str, tags: dict | None = None,
                 first_becomes_champion: bool = False) -> str:
    """Register the model a training run logged as a new version of ``name``, with the run's
    lineage (and ``tags``) as version tags, and make it the challenger; with
    ``first_becomes_champion``, also the champion when the model has none yet."""
    import mlflow

    run = registry.client.get_run(run_id)
    uri = run.data.tags.get(MODEL_URI_TAG)
    if not uri:
        raise RegistryError(f"run {run_id} logged no model to register")
    version = str(mlflow.register_model(uri, name).version)
    lineage = {k.removeprefix("lineage."): v for k, v in run.data.tags.items() if k.startswith("lineage.")}
    for key, value in {**lineage, **(tags or {})}.items():
        registry.client.set_model_version_tag(name, version, key, str(value))
    registry.set_alias(name, "challenger", version)
    if first_becomes_champion and "champion" not in registry.aliases(name):
        registry.set_alias(name, "champion", version)
    return version


def _start_run(registry: Registry, name: str, lineage: dict, params: dict):
    import mlflow

    run = mlflow.start_run(experiment_id=registry.experiment_id(name))
    mlflow.set_tags({f"lineage.{k}": str(v) for k, v in lineage.items()})
    mlflow.log_params({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in params.items()})
    return run


def _log_history(history: History) -> None:
    import mlflow

    for epoch, (tl, vl) in enumerate(zip(history.train_loss, history.val_loss)):
        mlflow.log_metrics({"train_loss": tl, "val_loss": vl}, step=epoch)
    for epoch, value in enumerate(history.val_metric):
        mlflow.log_metric("val_metric", value, step=epoch)
    mlflow.log_metrics({"best_epoch": history.best_epoch, "train_samples_per_second": history.samples_per_second,
                        "train_seconds": history.seconds})


def _lineage(data: datasets.ModelData, service: str) -> dict:
    """What a run learnt from, as its version's tags: the data, the features, the code, and
    the time it has learnt up to (where a later fine-tune starts)."""
    return {**data.lineage, "feature_service": service, "code_version": code_version(),
            continual.TRAINED_THROUGH: data.bounds.test_start.isoformat()}


def _train(job: Callable, trainer: RayTrainConfig | None, home: Path, name: str):
    """``job()`` here, or on a Ray cluster's workers (``trainer``): the same code either way."""
    if trainer is None:
        return job()
    from newsfeed.models.distributed import run_on_ray

    return run_on_ray(job, trainer, Path(home).resolve() / "ray", name)


def _trainer_params(trainer: RayTrainConfig | None) -> dict:
    return {"trainer": "ray" if trainer else "local", "workers": trainer.workers if trainer else 1}


def train_two_tower(home: Path, data_dir: Path, store, registry: Registry, config: TwoTowerConfig = TwoTowerConfig(),
                    train: TrainConfig = TWO_TOWER_TRAINING, split: datasets.SplitConfig = datasets.SplitConfig(),
                    register: bool = True, show_progress: bool = True, trainer: RayTrainConfig | None = None,
                    positives: pd.DataFrame | None = None) -> RunResult:
    """``positives``: the engaged impressions with their point-in-time features (as
    ``datasets.impression_set(..., "two_tower", positives_only=True)`` makes them), when built
    beforehand (the pipeline passes its training-set artifact); else built here."""
    import mlflow

    data = datasets.load(home, data_dir, split)
    positives = (datasets.impression_set(home, store, data, "two_tower", positives_only=True) if positives is None
                 else datasets.with_split(positives, data))
    fit_rows, val_rows = positives[positives["split"] == "train"], positives[positives["split"] == "val"]
    if len(fit_rows) < train.batch_size or val_rows.empty:
        raise ValueError(f"too little data to train: {len(fit_rows):,} training and {len(val_rows):,} validation "
                         f"positives (need at least one batch, {train.batch_size})")
    job = functools.partial(
        fit_and_refit, functools.partial(TwoTower.from_frame, config=config), in_batch_loss, _two_tower_batch,
        fit_rows, val_rows, train, "two-tower", show_progress, val_metric=full_corpus_recall)
    model, history = _train(job, trainer, home, "two-tower")
    report = evaluate_two_tower(model, home, store, data, World.of_dataset(data_dir))
    lineage = _lineage(data, "two_tower")
    params = {**config.model_dump(), **train.model_dump(), **split.model_dump(), **_trainer_params(trainer),
              "train_positives": len(fit_rows)}
    with _start_run(registry, TWO_TOWER, lineage, params) as run:
        _log_history(history)
        metrics = flat_metrics(report)
        mlflow.log_metrics(metrics)
        mlflow.log_dict(report, "evaluation.json")
        version = _log_model(model, TWO_TOWER, "two_tower", None, register, registry)
    return RunResult(TWO_TOWER, run.info.run_id, version, metrics, report, history, model)


def _two_tower_batch(model: TwoTower, rows: pd.DataFrame):
    return two_tower_batch(model, rows, sampling_log_q(rows["post_id"].to_numpy()))


def fit_and_refit(build, loss_fn, to_batch, train_rows: pd.DataFrame, val_rows: pd.DataFrame, train: TrainConfig,
                  description: str, show_progress: bool, val_metric=None, calibrate=None):
    """(model, history): early-stopped on ``val_rows``, then, with ``train.refit``, built and
    trained afresh on train + validation rows for the epoch count early stopping chose. The
    validation days are the last before the test period: under drift, the most telling ones
    (the ranker's backtest in benchmarks/model_choices.py: +0.038 of the attainable engagement;
    the two-tower's Recall@500 +0.015, inside the noise, so it keeps training without). ``build(rows)`` makes a model
    whose encoder is fitted on ``rows``; ``val_metric(model, val_batch)`` replaces the loss
    for early stopping. ``calibrate(model, val_rows)`` is fitted on the early-stopped model's
    validation predictions (rows it did not train on) and returns the correction applied to
    the model returned (the refit one trains on those rows, so it cannot judge itself)."""
    def training(model, rows: pd.DataFrame):
        batch = to_batch(model, rows)
        if train.recency_half_life_days:
            batch["weight"] = recency_weights(rows[TIMESTAMP], train.recency_half_life_days)
        return batch

    seed_everything(train.seed)  # the initial weights too, not only the shuffling
    model = build(train_rows)
    val_batch = to_batch(model, val_rows)  # unweighted: early stopping judges the days ahead evenly
    metric = (lambda m: val_metric(m, val_batch)) if val_metric else None
    history = fit(model, loss_fn, training(model, train_rows), val_batch, train, description, show_progress,
                  val_metric=metric)
    correct = calibrate(model, val_rows) if calibrate else (lambda _: None)
    if not train.refit:
        correct(model)
        return model, history
    recent = pd.concat([train_rows, val_rows], ignore_index=True)
    seed_everything(train.seed)
    model = build(recent)
    epochs = train.model_copy(update={"epochs": history.best_epoch + 1})
    refit = fit(model, loss_fn, training(model, recent), to_batch(model, val_rows), epochs, f"{description} refit",
                show_progress, keep_best=False)
    history.seconds, history.samples = history.seconds + refit.seconds, history.samples + refit.samples  # all it cost
    correct(model)
    return model, history


def fit_ranker(config: RankerConfig, train: TrainConfig, train_rows: pd.DataFrame, val_rows: pd.DataFrame,
               weights: dict[str, float], show_progress: bool = True):
    """(ranker, history): ``fit_and_refit`` with the ranker's early-stopping measure and
    calibration; with ``train.teachers``, distilled from that many rankers (``soft_labels``)."""
    val_metric = validation_engagement(val_rows, weights) if train.early_stopping == "engagement" else None
    calibrate = platt_calibration if config.calibration == "platt" else None
    spent = History()
    if train.teachers:
        train_rows, val_rows, spent = soft_labels(config, train, train_rows, val_rows, weights, show_progress)
    model, history = fit_and_refit(functools.partial(MultiTaskRanker.from_frame, config=config), multitask_loss,
                                   ranker_batch, train_rows, val_rows, train, f"ranker {config.architecture}",
                                   show_progress, val_metric=val_metric, calibrate=calibrate)
    history.seconds, history.samples = history.seconds + spent.seconds, history.samples + spent.samples
    return model, history


def soft_labels(config: RankerConfig, train: TrainConfig, train_rows: pd.DataFrame, val_rows: pd.DataFrame,
                weights: dict[str, float], show_progress: bool) -> tuple[pd.DataFrame, pd.DataFrame, History]:
    """(train rows, validation rows, what the teachers cost): every head's 0/1 label replaced by
    the mean probability ``train.teachers`` rankers, trained on the labels with seeds
    ``train.seed`` on, give the row at its logged position. Each teacher alone learns the
    labels' noise its own way; their mean keeps what they agree on, and the ranker trained on it
    is one model to serve, where an ensemble would cost each request every member's time
    (docs/model-choices.md#the-ranker)."""
    both = pd.concat([train_rows, val_rows], ignore_index=True)
    columns = [f"p_{h}" for h in HEADS]
    total, spent = np.zeros((len(both), len(HEADS))), History()
    for i in range(train.teachers):
        teacher_train = train.model_copy(update={"seed": train.seed + i, "teachers": 0})
        teacher, history = fit_ranker(config, teacher_train, train_rows, val_rows, weights, show_progress)
        total += teacher.predict(both, logged_position=True)[columns].to_numpy()
        spent.seconds, spent.samples = spent.seconds + history.seconds, spent.samples + history.samples
    soft = both.copy()
    soft[list(HEADS)] = (total / train.teachers).astype(np.float32)
    return soft.iloc[:len(train_rows)], soft.iloc[len(train_rows):], spent


def platt_calibration(model: MultiTaskRanker, rows: pd.DataFrame):
    """``fit_and_refit``'s ``calibrate``: per-head Platt scaling fitted on ``rows``, to fold into a model."""
    return functools.partial(apply_platt, params=fit_platt(model, rows))


def validation_engagement(val_rows: pd.DataFrame, weights: dict[str, float]):
    """``val_metric`` for the ranker: the share of the attainable realised engagement (hides and
    blocks negative) the validation feeds deliver as the model orders them, 0 = random order
    (``engagement_vs_best`` without its interval): what the ranker is for, where the loss is a
    proxy that weighs a click's error like a block's."""
    from newsfeed import metrics

    groups = val_rows["request_id"].to_numpy()
    realised = realised_engagement({r: val_rows[r].to_numpy() for r in weights}, weights)

    def measure(model, _batch) -> float:
        gains = metrics.slate_gains(groups, realised, engagement_score(model.predict(val_rows), weights),
                                    metrics.log_discount)
        return float(gains.gain.sum() / max(gains.attainable.sum(), 1e-12))
    return measure


def evaluate_two_tower(model: TwoTower, home: Path, store, data: datasets.ModelData, world: World | None) -> dict:
    """The retrieval report (see ``evaluation.retrieval_report``) over the corpus serving's ANN
    source searches, with the most-popular baseline's half-life chosen on the validation
    period's requests ("tuning"); with the simulator's ``world``, beside the oracle."""
    from newsfeed.index import FRESHNESS_HORIZON_DAYS

    rs = datasets.retrieval_set(home, store, data, USER_VIEWS, POST_VIEWS, FRESHNESS_HORIZON_DAYS)
    half_life, tried = evaluation.tune_retrieval_popularity(data.impressions, data.posts, data.bounds.val_start,
                                                  data.bounds.test_start, FRESHNESS_HORIZON_DAYS)
    scorers = evaluation.retrieval_scorers(rs, evaluation.two_tower_scores(rs, model), half_life, world,
                                           load_weights())
    tuning = {"most_popular_half_life_days": half_life,
              **{f"most_popular_val_recall@100_half_life_{h:g}d": v for h, v in tried.items()}}
    return {**evaluation.retrieval_report(rs, scorers), "tuning": tuning}


def train_ranker(home: Path, data_dir: Path, store, registry: Registry, config: RankerConfig = RankerConfig(),
                 train: TrainConfig = RANKER_TRAINING, split: datasets.SplitConfig = datasets.SplitConfig(),
                 weights_file: Path | None = None, register: bool = True, show_progress: bool = True,
                 trainer: RayTrainConfig | None = None, impressions: pd.DataFrame | None = None) -> RunResult:
    """``impressions``: every impression with its point-in-time features, when built
    beforehand (see train_two_tower's ``positives``); ``store`` is read only without them."""
    weights = load_weights(weights_file)
    data = datasets.load(home, data_dir, split)
    frame = (datasets.impression_set(home, store, data, "ranker") if impressions is None
             else datasets.with_split(impressions, data))
    parts = split_parts(frame)
    job = functools.partial(fit_ranker, config, train, parts["train"], parts["val"], weights, show_progress)
    model, history = _train(job, trainer, home, "ranker")
    report = evaluate_ranker(model, parts["test"], parts["val"], weights, World.of_dataset(data_dir))
    params = {**config.model_dump(), **train.model_dump(), **split.model_dump(), **_trainer_params(trainer),
              "start": "afresh", "train_impressions": len(parts["train"])}
    return _log_ranker_run(registry, model, history, report, _lineage(data, "ranker"), params, weights, register)


def split_parts(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """A joined training set's train, val and test rows; ValueError where one is empty."""
    parts = {name: frame[frame["split"] == name] for name in ("train", "val", "test")}
    empty = [name for name, part in parts.items() if part.empty]
    if empty:
        raise ValueError(f"the temporal split left no {' or '.join(empty)} impressions; is the data's time span too short?")
    return parts


def fine_tune_ranker(home: Path, data_dir: Path, store, registry: Registry, base: str | int = "champion",
                     train: TrainConfig = RANKER_FINE_TUNING, split: datasets.SplitConfig = datasets.SplitConfig(),
                     weights_file: Path | None = None, register: bool = True, show_progress: bool = True,
                     impressions: pd.DataFrame | None = None) -> RunResult:
    """The registered ranker ``base`` (alias or version) trained on from its weights over the
    impressions since the time it was trained through up to today's held-out period
    (``continual.fine_tune``), then evaluated, logged and registered as ``train_ranker``'s run
    is; its lineage names the version it started from."""
    weights = load_weights(weights_file)
    data = datasets.load(home, data_dir, split)
    model, _, version = load_registered(registry, RANKER, base)
    since = version.tags.get(continual.TRAINED_THROUGH)
    if not since:
        raise RegistryError(f"{RANKER} version {version.version} does not record what it was trained through (it "
                            "was registered before continual training): train it afresh")
    frame = (datasets.impression_set(home, store, data, "ranker") if impressions is None
             else datasets.with_split(impressions, data))
    parts = split_parts(frame)
    new = continual.rows_since(frame, pd.Timestamp(since), data.bounds.test_start)
    if new.empty:
        raise continual.NothingToFineTune(
            f"{RANKER} version {version.version} was trained through {since}: the data holds no impressions from then "
            f"to the held-out period (from {data.bounds.test_start.isoformat()}), nothing to fine-tune on")
    model, history = continual.fine_tune(model, new, train, show_progress)
    report = evaluate_ranker(model, parts["test"], parts["val"], weights, World.of_dataset(data_dir))
    params = {**model.config.model_dump(), **train.model_dump(), **split.model_dump(), "trainer": "local",
              "workers": 1, "start": f"{RANKER} version {version.version}", "train_impressions": len(new)}
    lineage = {**_lineage(data, "ranker"), "fine_tuned_from": str(version.version)}
    return _log_ranker_run(registry, model, history, report, lineage, params, weights, register)


def _log_ranker_run(registry: Registry, model: MultiTaskRanker, history: History, report: dict, lineage: dict,
                    params: dict, weights: dict, register: bool) -> RunResult:
    import mlflow

    with _start_run(registry, RANKER, lineage, params) as run:
        _log_history(history)
        metrics = ranker_metrics(report)
        mlflow.log_metrics(metrics)
        mlflow.log_dict(report, "evaluation.json")
        mlflow.log_dict(weights, "engagement_weights.yaml")
        version = _log_model(model, RANKER, "ranker", weights, register, registry)
    return RunResult(RANKER, run.info.run_id, version, metrics, report, history, model)


def ranker_metrics(report: dict) -> dict[str, float]:
    """A ranker evaluation (``evaluate_ranker``) as the flat metrics logged with its run."""
    return {**{metric_name(k): v for k, v in report["heads"].items() if v == v}, **flat_metrics(report["ranking"]),
            **flat_metrics({"tuning": report["tuning"]})}


def evaluate_ranker(model: MultiTaskRanker, test: pd.DataFrame, val: pd.DataFrame, weights: dict[str, float],
                    world: World | None) -> dict:
    """Heads and ranking on ``test`` beside the baselines, the most-popular baseline's setting
    chosen on ``val`` (the validation period's feeds): {"heads", "ranking", "tuning"}."""
    # Heads are checked against the logs at the logged positions; ranking is on relevance (position 0).
    heads = evaluation.head_metrics(test, model.predict(test, logged_position=True))
    scores = engagement_score(model.predict(test), weights)
    prior, tried = evaluation.tune_ranking_popularity(val, weights, world)
    scorers = evaluation.ranking_scorers(test, scores, weights, world, popularity_prior=prior)
    tuning = {"most_popular_prior_impressions": prior,
              **{f"most_popular_val_prior_{p:g}": value for p, value in tried.items()}}
    return {"heads": heads, "ranking": evaluation.ranking_report(test, scorers, weights), "tuning": tuning}


def _evaluate_version(home: Path, data_dir: Path, store, registry: Registry, data: datasets.ModelData, name: str,
                      ref: str) -> tuple[str, dict]:
    """(version, evaluation report) of a registered version on ``data``'s held-out period."""
    model, weights, version = load_registered(registry, name, ref)
    if name == TWO_TOWER:
        return str(version.version), evaluate_two_tower(model, home, store, data, World.of_dataset(data_dir))
    frame = datasets.impression_set(home, store, data, "ranker")
    return str(version.version), evaluate_ranker(model, frame[frame["split"] == "test"], frame[frame["split"] == "val"],
                                                 weights, World.of_dataset(data_dir))


def evaluate_registered(home: Path, data_dir: Path, store, registry: Registry, ref: str = "champion",
                        split: datasets.SplitConfig = datasets.SplitConfig()) -> dict:
    """Both registered models (by alias or version) on the held-out period, beside the baselines."""
    data = datasets.load(home, data_dir, split)
    tt_version, retrieval = _evaluate_version(home, data_dir, store, registry, data, TWO_TOWER, ref)
    rk_version, ranker = _evaluate_version(home, data_dir, store, registry, data, RANKER, ref)
    return {"versions": {TWO_TOWER: tt_version, RANKER: rk_version}, "retrieval": retrieval, "ranker": ranker}


@dataclass
class Challenger:
    """Freshly trained models, not yet registered, to compare with the champions paired."""

    ranker: MultiTaskRanker
    weights: dict[str, float]  # the ranker's own weight table
    two_tower: TwoTower | None = None


def champion_metrics(home: Path, data_dir: Path, store, registry: Registry,
                     split: datasets.SplitConfig = datasets.SplitConfig(),
                     challenger: Challenger | None = None) -> dict[str, dict]:
    """model name -> {"version", "metrics"}: each model's champion evaluated on today's
    held-out period (the one a challenger trained today is scored on), under the metric
    names the challenger's run logs. A model with no champion yet is left out. With the
    challenger, each entry also has "paired": metric -> the challenger minus the champion on
    the same feeds or requests, with its interval (see ``paired_rankers``, ``paired_two_towers``)."""
    data = datasets.load(home, data_dir, split)
    out = {}
    for name, flatten in ((TWO_TOWER, flat_metrics), (RANKER, ranker_metrics)):
        if "champion" in registry.aliases(name):
            version, report = _evaluate_version(home, data_dir, store, registry, data, name, "champion")
            out[name] = {"version": version, "metrics": flatten(report)}
    if challenger is not None and RANKER in out:
        out[RANKER]["paired"] = paired_rankers(home, data_dir, store, registry, data, challenger)
    if challenger is not None and challenger.two_tower is not None and TWO_TOWER in out:
        out[TWO_TOWER]["paired"] = paired_two_towers(home, store, registry, data, challenger.two_tower)
    return out


def paired_rankers(home: Path, data_dir: Path, store, registry: Registry, data: datasets.ModelData,
                   challenger: Challenger) -> dict[str, dict]:
    """The primary measure and the guarded heads, challenger minus champion ranker on the same
    test feeds. Each ranks with its own weight table (what it would serve); both are judged
    by the platform's table, so a challenger with a worse table loses."""
    champion, champion_weights, _ = load_registered(registry, RANKER, "champion")
    frame = datasets.impression_set(home, store, data, "ranker")
    test = frame[frame["split"] == "test"]
    primary = evaluation.paired_ranking(
        test, engagement_score(challenger.ranker.predict(test), challenger.weights),
        engagement_score(champion.predict(test), champion_weights or load_weights()),
        load_weights(), World.of_dataset(data_dir))
    heads = evaluation.paired_heads(test, challenger.ranker.predict(test, logged_position=True),
                                    champion.predict(test, logged_position=True))
    return {**primary, **heads}


def paired_two_towers(home: Path, store, registry: Registry, data: datasets.ModelData,
                      challenger: TwoTower) -> dict[str, dict]:
    """Recall@k, challenger minus champion two-tower on the same test requests."""
    from newsfeed.index import FRESHNESS_HORIZON_DAYS

    champion, _, _ = load_registered(registry, TWO_TOWER, "champion")
    rs = datasets.retrieval_set(home, store, data, USER_VIEWS, POST_VIEWS, FRESHNESS_HORIZON_DAYS)
    return evaluation.paired_retrieval(rs, evaluation.two_tower_scores(rs, challenger),
                                       evaluation.two_tower_scores(rs, champion))


@dataclass
class IndexResult:
    model_version: str
    run_id: str
    kind: str
    size: int
    recall_vs_exact: float
    build_seconds: float


def post_frame(store, post_ids: np.ndarray) -> pd.DataFrame:
    """The post tower's inputs for ``post_ids`` from the online store (what serving sees)."""
    refs = datasets.view_features(store, "two_tower", POST_VIEWS)
    frame = store.get_online_features(features=refs, entity_rows=[{"post_id": int(p)} for p in post_ids],
                                      full_feature_names=True).to_df()
    frame["author_id"] = pd.to_numeric(frame["post_content__written_by"], errors="coerce").fillna(-1).astype(np.int64)
    return frame


def build_index(data_dir: Path, store, registry: Registry, ref: str = "challenger", kind: str = "auto",
                recall_k: int = 100, seed: int = 0) -> IndexResult:
    """Embed every post with a registered two-tower version, index them, measure the index's
    recall against exact search, and register the index with that version (and only it)."""
    import mlflow

    from newsfeed.data.io import read_dataset
    from newsfeed.index import PostIndex, recall_against_exact

    model, _, version = load_registered(registry, TWO_TOWER, ref)
    posts = read_dataset(data_dir, ("posts",)).get("posts")
    if posts is None or posts.empty:
        raise FileNotFoundError(f"{data_dir}: no posts to index")
    post_ids = posts["post_id"].to_numpy(np.int64)
    embeddings = model.embed_posts(post_frame(store, post_ids))
    t0 = time.perf_counter()
    index = PostIndex.build(embeddings, post_ids, kind)
    seconds = time.perf_counter() - t0
    queries = embeddings[np.random.default_rng(seed).choice(len(embeddings), min(256, len(embeddings)), replace=False)]
    recall = recall_against_exact(index, embeddings, post_ids, queries, min(recall_k, len(post_ids)))
    manifest = {"model_name": TWO_TOWER, "model_version": str(version.version), "model_run_id": version.run_id,
                "kind": index.kind, "size": index.size, "dim": index.dim}
    with mlflow.start_run(experiment_id=registry.experiment_id(INDEX_EXPERIMENT)) as run:
        mlflow.set_tags({"model_name": TWO_TOWER, "model_version": str(version.version)})
        mlflow.log_params({"kind": index.kind, "recall_k": recall_k})
        mlflow.log_metrics({f"recall_vs_exact_at_{recall_k}": recall, "posts": index.size, "build_seconds": seconds})
        with tempfile.TemporaryDirectory() as tmp:
            folder = index.save(Path(tmp) / "index")
            (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
            mlflow.log_artifacts(str(folder), "index")
    registry.client.set_model_version_tag(TWO_TOWER, str(version.version), INDEX_TAG, run.info.run_id)
    return IndexResult(str(version.version), run.info.run_id, index.kind, index.size, recall, seconds)
