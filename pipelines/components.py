"""The training pipeline's steps as KFP v2 lightweight Python components.

Each is a thin wrapper over the core library: it opens the workspace its parameters name,
calls one or two ``newsfeed`` functions, and writes what came out as KFP artifacts
(``Dataset``, ``Model``, ``Metrics``, ``HTML``) so a run's lineage shows in the KFP UI.
Imports live inside each function: KFP ships the function's source to the step's container
(the newsfeed image, which has the package installed) or, locally, to a subprocess.

Shared state lives where every step can reach it: the home folder (local disk here, a
shared volume on the cluster: the offline feature tables, the training-set cache) and the
stores it names (Feast, MLflow). Empty ``feature_store``/``registry`` follow the
environment (``NEWSFEED_FEATURE_STORE``, ``NEWSFEED_REGISTRY``), else the embedded ones.
"""

# No `from __future__ import annotations`: KFP reads the parameter types at run time.
import functools

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output, OutputPath

IMAGE = "ghcr.io/newsfeed-platform/newsfeed:0.1.0"
"""The image every step runs in: this package and its pinned dependencies."""

component = functools.partial(dsl.component, base_image=IMAGE, install_kfp_package=False)


@component
def prepare_data(home: str, data_dir: str, scale: float, seed: int, dataset: Output[Dataset]):
    """The dataset at the data location, with the impressions the service showed since
    (``newsfeed.feed.served_data``); where there is none yet, a simulated one at ``scale``
    (1.0: 2,000 users, 8,000 posts, 14 days)."""
    import json
    from pathlib import Path

    from newsfeed.data.io import has_dataset, read_manifest, replace_dataset
    from newsfeed.data.simulator import SimConfig, simulate_to
    from newsfeed.feed.served_data import absorb
    from newsfeed.workspace import Workspace

    ws = Workspace.open(home, data_dir)
    if has_dataset(ws.data_dir):
        manifest = read_manifest(ws.data_dir)
        print(f"using the dataset at {ws.data_dir} ({manifest.get('source', 'no manifest')})")
        absorbed = absorb(ws.home, ws.data_dir)  # what the service showed since, with its reactions
        if absorbed:
            print(f"{absorbed:,} served impressions added to the data's impression log")
    else:
        config = SimConfig.at_scale(scale, int(seed))  # kfp.local hands ints over as floats
        print(f"no dataset at {ws.data_dir}: simulating {config.users:,} users and {config.posts:,} posts")
        manifest = replace_dataset(ws.data_dir, lambda folder: simulate_to(folder, config))
    Path(dataset.path).write_text(json.dumps(manifest, indent=1, default=str))
    dataset.metadata.update({"data_dir": str(ws.data_dir), "source": manifest.get("source", "unknown"),
                             **{f"rows_{t}": n for t, n in manifest.get("rows", {}).items()}})


@component
def validate_data(home: str, data_dir: str, max_bad_rate: float, dataset: Input[Dataset],
                  validation: Output[Metrics], report: Output[HTML]):
    """Check every table against its contract and quarantine bad rows (beside the data);
    fail the run, before anything is trained or registered, when the data is unusable."""
    from pathlib import Path

    from newsfeed import reports
    from newsfeed.data.validation import validate_dataset
    from newsfeed.workspace import Workspace

    ws = Workspace.open(home, data_dir)
    result = validate_dataset(ws.data_dir)
    rows = [{"table": r.table, "rows": r.rows, "bad rows": r.bad_rows, "bad rate": r.bad_rate,
             "top reasons": "; ".join(f"{why} x{n}" for why, n in r.reasons.most_common(3))}
            for r in result.reports.values()]
    for r in result.reports.values():
        validation.log_metric(f"bad_rate_{r.table}", r.bad_rate)
        validation.log_metric(f"rows_{r.table}", r.rows)
    failures = result.failures(max_bad_rate)
    verdict = (reports.paragraph("unusable: " + "; ".join(failures), "fail") if failures
               else reports.paragraph(f"usable ({result.bad_rows:,} rows quarantined)", "pass"))
    Path(report.path).write_text(reports.page(f"validation of {ws.data_dir}", verdict, reports.table(rows)))
    result.require_usable(max_bad_rate)


@component
def build_features(home: str, data_dir: str, feature_store: str, validation: Input[Metrics],
                   features: Output[Dataset]):
    """Register the feature definitions, compute every feature table from the data and the
    event log (the Feast offline sources), and materialize them into the online store."""
    import json
    from pathlib import Path

    from newsfeed.features.build import build_offline
    from newsfeed.features.online_load import load
    from newsfeed.features.store import apply
    from newsfeed.workspace import Workspace

    ws = Workspace.open(home, data_dir, feature_store)
    apply(ws.store)
    manifest = build_offline(ws.data_dir, ws.home, progress=lambda step: print(f"features: {step}", flush=True))
    loaded = load(ws.store, ws.home, manifest)
    print(loaded.describe(ws.store_kind or "embedded"))
    Path(features.path).write_text(json.dumps(manifest, indent=1))
    features.metadata.update({"project": ws.store.project, "data_fingerprint": manifest["data_fingerprint"],
                              "start": manifest["start"], "end": manifest["end"], "online_load_seconds": loaded.seconds,
                              **{f"rows_{t}": n for t, n in manifest["rows"].items()}})


@component
def build_training_sets(home: str, data_dir: str, feature_store: str, holdout_days: float, features: Input[Dataset],
                        ranker_set: Output[Dataset], two_tower_set: Output[Dataset]):
    """Point-in-time training sets from Feast: every impression with the ranker's features,
    every engaged impression with the two-tower's, as of the impression's time."""
    from newsfeed.models import datasets
    from newsfeed.workspace import Workspace

    ws = Workspace.open(home, data_dir, feature_store)
    data = datasets.load(ws.home, ws.data_dir, datasets.SplitConfig.of(holdout_days))
    for artifact, service, positives_only in ((ranker_set, "ranker", False), (two_tower_set, "two_tower", True)):
        frame = datasets.impression_set(ws.home, ws.store, data, service, positives_only=positives_only)
        frame.drop(columns="split").to_parquet(artifact.path, index=False)
        artifact.metadata.update({"feature_service": service, "rows": len(frame), "columns": frame.shape[1] - 1,
                                  **{f"rows_{k}": int(v) for k, v in frame["split"].value_counts().items()},
                                  **data.lineage["split"], "data_fingerprint": data.lineage["data_fingerprint"]})
        print(f"{service}: {len(frame):,} rows x {frame.shape[1] - 1} columns")


@component
def train_two_tower(home: str, data_dir: str, feature_store: str, registry: str, epochs: int,
                    learning_rate: float, seed: int, trainer: str, ray_workers: int, ray_address: str,
                    holdout_days: float, training_set: Input[Dataset], model: Output[Model], metrics: Output[Metrics]):
    """Train the two-tower retrieval model (here, or on Ray with ``trainer='ray'``) and
    evaluate it on the held-out period; the MLflow run is logged, nothing is registered yet."""
    import pandas as pd
    from rich.console import Console

    from newsfeed.models import runs, saved
    from newsfeed.models.datasets import SplitConfig
    from newsfeed.models.distributed import RayTrainConfig
    from newsfeed.models.tables import retrieval_table
    from newsfeed.workspace import Workspace

    ws = Workspace.open(home, data_dir, feature_store, registry)
    ray = RayTrainConfig.for_trainer(trainer, int(ray_workers), ray_address)
    train = runs.TWO_TOWER_TRAINING.model_copy(update={"epochs": int(epochs), "learning_rate": learning_rate,
                                                       "seed": int(seed)})
    result = runs.train_two_tower(ws.home, ws.data_dir, ws.store, ws.registry, train=train,
                                  split=SplitConfig.of(holdout_days), register=False, trainer=ray,
                                  positives=pd.read_parquet(training_set.path))
    Console(width=100).print(retrieval_table(result.report))
    saved.save(result.model, model.path)
    model.metadata.update({"model_name": result.model_name, "mlflow_run_id": result.run_id,
                           "workers": result.history.workers, "best_epoch": result.history.best_epoch + 1})
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)


@component
def train_ranker(home: str, data_dir: str, feature_store: str, registry: str, epochs: int, learning_rate: float,
                 seed: int, architecture: str, start: str, trainer: str, ray_workers: int, ray_address: str,
                 holdout_days: float, training_set: Input[Dataset], model: Output[Model], metrics: Output[Metrics]):
    """Train the multi-task ranker (here, or on Ray), or, with ``start`` (a registered ranker's
    alias or version), fine-tune that one on the impressions since it was trained (here; its
    own passes and rate, newsfeed.models.settings.RANKER_FINE_TUNING); evaluate it on the
    held-out period (heads, NDCG@10 beside the baselines); the MLflow run is logged, nothing
    is registered yet."""
    import pandas as pd
    from rich.console import Console

    from newsfeed.models import runs, saved
    from newsfeed.models.datasets import SplitConfig
    from newsfeed.models.distributed import RayTrainConfig
    from newsfeed.models.ranker import RankerConfig
    from newsfeed.models.tables import head_table, ranking_table
    from newsfeed.registry import ALIASES, RANKER
    from newsfeed.scoring import load_weights
    from newsfeed.workspace import Workspace

    ws = Workspace.open(home, data_dir, feature_store, registry)
    split, impressions = SplitConfig.of(holdout_days), pd.read_parquet(training_set.path)
    if start in ALIASES and start not in ws.registry.aliases(RANKER):
        print(f"no {start} {RANKER} yet to fine-tune: training afresh")
        start = ""
    # No feature store: the training set comes in whole (opening Feast would cost seconds).
    if start:
        result = runs.fine_tune_ranker(ws.home, ws.data_dir, None, ws.registry, start,
                                       runs.RANKER_FINE_TUNING.model_copy(update={"seed": int(seed)}), split=split,
                                       register=False, impressions=impressions)
        print(f"fine-tuned {RANKER} {start} on {result.history.samples:,} impression passes "
              f"({result.history.seconds:.0f} s)")
    else:
        ray = RayTrainConfig.for_trainer(trainer, int(ray_workers), ray_address)
        train = runs.RANKER_TRAINING.model_copy(update={"epochs": int(epochs), "learning_rate": learning_rate,
                                                        "seed": int(seed)})
        result = runs.train_ranker(ws.home, ws.data_dir, None, ws.registry, RankerConfig(architecture=architecture),
                                   train, split=split, register=False, trainer=ray, impressions=impressions)
    console = Console(width=100)
    console.print(head_table(result.report["heads"]))
    console.print(ranking_table(result.report["ranking"], result.report["tuning"]))
    saved.save(result.model, model.path, load_weights())
    model.metadata.update({"model_name": result.model_name, "mlflow_run_id": result.run_id,
                           "workers": result.history.workers, "best_epoch": result.history.best_epoch + 1,
                           "start": start or "afresh", "train_seconds": result.history.seconds})
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)


@component
def evaluate_champion(home: str, data_dir: str, feature_store: str, registry: str, holdout_days: float,
                      two_tower: Input[Model], ranker: Input[Model], champion: Output[Metrics]):
    """Score the current champions on the held-out period the challengers were scored on
    (a model with no champion yet is left out), and each challenger against its champion
    paired: the rankers on the same feeds (each with its own weight table, both judged by
    the platform's), the two-towers on the same requests."""
    from newsfeed.models import runs, saved
    from newsfeed.models.datasets import SplitConfig
    from newsfeed.workspace import Workspace

    ws = Workspace.open(home, data_dir, feature_store, registry)
    challenger = runs.Challenger(saved.load(ranker.path), saved.load_weights(ranker.path), saved.load(two_tower.path))
    found = runs.champion_metrics(ws.home, ws.data_dir, ws.store, ws.registry, SplitConfig.of(holdout_days),
                                  challenger=challenger)
    for name, entry in found.items():
        print(f"champion {name} version {entry['version']}")
        champion.metadata[name] = entry
    if not found:
        print("no champion yet")


@component
def gate(two_tower_metrics: Input[Metrics], ranker_metrics: Input[Metrics], champion: Input[Metrics],
         tolerance: float, guardrail_tolerance: float, calibration_tolerance: float, report: Output[HTML],
         decision: OutputPath(str)) -> bool:
    """Pass the challenger only if its feeds' engagement is not worse than the champion's
    beyond noise (paired, within ``tolerance``) and no guardrail broke; the decision (which
    metric failed, by how much) is the output."""
    import json
    from pathlib import Path

    from newsfeed import reports
    from newsfeed.gate import GateConfig, decide
    from newsfeed.registry import RANKER, TWO_TOWER

    config = GateConfig(tolerance=tolerance, guardrail_tolerance=guardrail_tolerance,
                        calibration_tolerance=calibration_tolerance)
    challenger = {TWO_TOWER: dict(two_tower_metrics.metadata), RANKER: dict(ranker_metrics.metadata)}
    champions = {name: entry["metrics"] for name, entry in champion.metadata.items()}
    paired = {name: entry.get("paired", {}) for name, entry in champion.metadata.items()}
    result = decide(challenger, champions, config, paired)
    print(result.message())
    rows = [{"check": "primary" if c["primary"] else "guardrail", "metric": c["metric"],
             "challenger": c["challenger"], "champion": c["champion"], "limit": c["limit"],
             "result": "pass" if c["passed"] else "FAIL"} for c in result.to_dict()["checks"]]
    Path(report.path).write_text(reports.page("promotion gate", reports.preformatted(result.message()),
                                              reports.table(rows)))
    Path(decision).write_text(json.dumps(result.to_dict()))
    return result.passed


@component
def register_models(home: str, registry: str, two_tower: Input[Model], ranker: Input[Model], decision: str,
                    pipeline_run: str) -> str:
    """Register both challengers' MLflow runs as new versions (alias challenger; champion
    too for a model that has none) tagged with the gate's decision and this run; returns
    the versions as JSON."""
    import json

    from newsfeed.models import runs
    from newsfeed.workspace import Workspace

    ws = Workspace.open(home, None, None, registry)
    tags = {"pipeline_run": pipeline_run, "gate": json.loads(decision)["message"].splitlines()[0]}
    versions = {artifact.metadata["model_name"]: runs.register_run(ws.registry, artifact.metadata["model_name"],
                                                                   artifact.metadata["mlflow_run_id"], tags,
                                                                   first_becomes_champion=True)
                for artifact in (two_tower, ranker)}
    for name, version in versions.items():
        print(f"{name}: version {version}, aliases {ws.registry.aliases(name)}")
    return json.dumps(versions)


@component
def build_index(home: str, data_dir: str, feature_store: str, registry: str, versions: str, index: Output[Artifact]):
    """Embed every post with the new two-tower version, build the FAISS index, measure its
    recall against exact search, and register it with that version."""
    import json

    import mlflow

    from newsfeed.models import runs
    from newsfeed.registry import TWO_TOWER
    from newsfeed.workspace import Workspace

    ws = Workspace.open(home, data_dir, feature_store, registry)
    result = runs.build_index(ws.data_dir, ws.store, ws.registry, ref=json.loads(versions)[TWO_TOWER])
    mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="index", dst_path=index.path)
    index.metadata.update({"model_version": result.model_version, "mlflow_run_id": result.run_id, "kind": result.kind,
                           "posts": result.size, "recall_vs_exact": result.recall_vs_exact})
    print(f"indexed {result.size:,} posts ({result.kind}), recall vs exact {result.recall_vs_exact:.3f}")


@component
def distill_prerank(home: str, data_dir: str, feature_store: str, registry: str, versions: str, users: int,
                    seed: int, prerank: Output[Metrics]):
    """Distil a pre-ranker from the new ranker version on the lists serving would give it
    (``users`` users; 0: none), judge it on others against the two-tower cut, and register it
    with the version (``newsfeed.feed.prerank_training``)."""
    import json

    from newsfeed.feed.prerank_training import distill_registered
    from newsfeed.feed.service import FeedService
    from newsfeed.feed.user_state import open_user_state
    from newsfeed.registry import RANKER, TWO_TOWER
    from newsfeed.workspace import Workspace

    if int(users) <= 0:  # kfp.local hands ints over as floats
        print("no pre-ranker distilled (users 0)")
        return
    ws = Workspace.open(home, data_dir, feature_store, registry)
    new = json.loads(versions)
    # As a replica sees the home: its users' seen posts from the state store the replicas share.
    service = FeedService(ws.home, ws.data_dir, ws.store, ws.registry, state=open_user_state(ws.home))
    result = distill_registered(service, ws.registry, new[TWO_TOWER], new[RANKER], int(users), int(seed))
    for cut, kept in result.kept.items():
        for budget, share in kept.items():
            prerank.log_metric(f"kept_at_{budget}_{cut}", share)
        prerank.log_metric(f"ms_{cut}", result.ms[cut])
    prerank.metadata.update({"model_version": result.ranker_version, "mlflow_run_id": result.run_id})
    print(f"pre-ranker distilled from {RANKER} v{result.ranker_version} ({result.train_users} users, "
          f"{sum(result.seconds.values()):.0f} s); of the ranker's top 10 over every unseen post, kept at "
          + ", ".join(f"{b}: {k:.3f} (two-tower {result.kept['two-tower'][b]:.3f})"
                      for b, k in result.kept["distilled"].items()))


@component
def package_ranker(home: str, registry: str, versions: str, bento: Output[Artifact]):
    """Package the new ranker version as a Bento (standalone scoring service) and keep its
    containerfile as the artifact."""
    import json
    import os
    import shutil
    from pathlib import Path

    from newsfeed.workspace import Workspace

    ws = Workspace.open(home, None, None, registry)
    os.environ.setdefault("BENTOML_HOME", str(ws.home / "bentoml"))  # before BentoML loads
    from newsfeed.packaging import package_ranker as package
    from newsfeed.registry import RANKER

    result = package(ws.registry, json.loads(versions)[RANKER], ws.home / "bento")
    Path(bento.path).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(result.containerfile, Path(bento.path) / result.containerfile.name)
    bento.metadata.update({"bento": result.bento, "bento_path": str(result.bento_path),
                           "model_version": result.model_version})
    print(f"built Bento {result.bento}")
