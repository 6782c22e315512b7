"""`newsfeed pipeline run | compile | submit | schedule`: the training pipeline (pipelines/)
locally, as IR YAML, and on Kubeflow Pipelines."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from newsfeed import atomic
from newsfeed.cli.common import DataDirOption, HomeOption, RegistryOption, StoreOption, console, fail
from newsfeed.gate import GateConfig
from newsfeed.models.settings import RANKER_TRAINING, TWO_TOWER_TRAINING

app = typer.Typer(help="The training pipeline: run locally, compile, submit to Kubeflow, schedule.",
                  no_args_is_help=True)

GATE_REJECTED = 3
"""Exit code of `run` when the gate stops the challenger (the run itself succeeded)."""

ScaleOption = Annotated[float | None, typer.Option(help="Size of the simulated dataset made when the data location "
                                                        "holds none (1.0: 2,000 users, 8,000 posts) [default 1.0].")]
SeedOption = Annotated[int | None, typer.Option(help="Seed of simulation and training [default 7].")]
EpochsOption = Annotated[int | None, typer.Option(help="Maximum epochs of each model [default 12].")]
TwoTowerLrOption = Annotated[float | None, typer.Option(
    help=f"Two-tower learning rate [default {TWO_TOWER_TRAINING.learning_rate:g}].")]
RankerLrOption = Annotated[float | None, typer.Option(
    help=f"Ranker learning rate [default {RANKER_TRAINING.learning_rate:g}; fine-tuning has its own].")]
ArchitectureOption = Annotated[str | None, typer.Option(help="Ranker: mmoe | shared-bottom [default mmoe].")]
RankerFromOption = Annotated[str | None, typer.Option(
    help="Fine-tune this registered ranker (champion, challenger or a version) on the impressions since it was "
         "trained, instead of training afresh; afresh while there is none [default: afresh].")]
MaxBadRateOption = Annotated[float | None, typer.Option(help="Fail when a table has more bad rows [default 0.01].")]
TrainerOption = Annotated[str | None, typer.Option(help="local (in the step) | ray (Ray Train) [default local].")]
RayWorkersOption = Annotated[int | None, typer.Option(help="Ray Train workers [default 2].")]
RayAddressOption = Annotated[str | None, typer.Option(help="Ray cluster to train on [default: a local Ray per step].")]
GATE = GateConfig()  # the gate's defaults, declared once in newsfeed.gate
ToleranceOption = Annotated[float | None, typer.Option(help="Gate: how far beyond noise the ranker's engagement may "
                                                            f"fall below the champion's [default {GATE.tolerance:g}].")]
GuardrailOption = Annotated[float | None, typer.Option(help="Gate: how far hide/block AUC and Recall@500 may fall "
                                                            f"[default {GATE.guardrail_tolerance:g}].")]
CalibrationOption = Annotated[float | None, typer.Option(help="Gate: how far a head's calibration error may rise "
                                                              f"[default {GATE.calibration_tolerance:g}].")]
HoldoutOption = Annotated[float | None, typer.Option(help="Days at the data's end held out, half validation, half "
                                                          "test; 0: the last 2/7 of its span [default 0]. A few "
                                                          "hours to a day lets a retrain learn from a change it "
                                                          "was started by.")]
PrerankUsersOption = Annotated[int | None, typer.Option(help="Users whose lists distil the pre-ranker registered "
                                                               "with the new ranker; 0: none [default 300].")]
HostOption = Annotated[str, typer.Option("--host", help="Kubeflow Pipelines endpoint, e.g. http://localhost:8080.")]
PackageOption = Annotated[Path | None, typer.Option("--package", help="Compiled pipeline [default: the committed one].")]


def _arguments(**options) -> dict:
    """The pipeline parameters given (None: the pipeline's default), checked before any work."""
    from pipelines.arguments import check

    return check({k: v for k, v in options.items() if v is not None})


@app.command()
def run(
    scale: ScaleOption = None, seed: SeedOption = None, epochs: EpochsOption = None,
    two_tower_learning_rate: TwoTowerLrOption = None, ranker_learning_rate: RankerLrOption = None,
    ranker_architecture: ArchitectureOption = None, ranker_from: RankerFromOption = None,
    max_bad_rate: MaxBadRateOption = None, trainer: TrainerOption = None, ray_workers: RayWorkersOption = None, ray_address: RayAddressOption = None,
    gate_tolerance: ToleranceOption = None, guardrail_tolerance: GuardrailOption = None,
    calibration_tolerance: CalibrationOption = None, holdout_days: HoldoutOption = None,
    prerank_users: PrerankUsersOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show kfp's executor logs too.")] = False,
    home: HomeOption = None, data_dir: DataDirOption = None, store: StoreOption = None, registry: RegistryOption = None,
) -> None:
    """Run the whole pipeline here (kfp SubprocessRunner): validate, features, training sets,
    train both models, evaluate against the champion, gate, register, index, distil the
    pre-ranker, package.

    Exits 0 when the challenger was registered, 3 when the gate stopped it, 1 when a step failed."""
    from newsfeed.workspace import Workspace
    from pipelines.local import PipelineFailed, run as run_locally

    ws = Workspace.open(home, data_dir, store, registry)
    arguments = _arguments(home=str(ws.home), data_dir=str(ws.data_dir), feature_store=store, registry=registry,
                           scale=scale, seed=seed, epochs=epochs, two_tower_learning_rate=two_tower_learning_rate,
                           ranker_learning_rate=ranker_learning_rate, ranker_architecture=ranker_architecture,
                           ranker_from=ranker_from, max_bad_rate=max_bad_rate, trainer=trainer,
                           ray_workers=ray_workers, ray_address=ray_address, gate_tolerance=gate_tolerance,
                           guardrail_tolerance=guardrail_tolerance, calibration_tolerance=calibration_tolerance,
                           holdout_days=holdout_days, prerank_users=prerank_users)
    ws.check_services()  # an unreachable store is named now, not after minutes of work
    root = ws.paths.pipeline_runs
    t0 = time.perf_counter()
    try:
        decision = run_locally(arguments, root, verbose)
    except PipelineFailed as err:
        raise fail(f"the pipeline failed; nothing was registered.\n{err}") from None
    atomic.write_text(ws.paths.last_gate_decision, json.dumps(decision))
    minutes, seconds = divmod(time.perf_counter() - t0, 60)
    console.print(decision["message"], highlight=False, soft_wrap=True)
    if not decision["passed"]:
        console.print(f"[bold red]stopped by the gate[/]: nothing registered ({minutes:.0f} min {seconds:.0f} s; "
                      f"artifacts under {root})", soft_wrap=True)
        raise typer.Exit(GATE_REJECTED)
    from newsfeed.registry import MODEL_NAMES

    for name in MODEL_NAMES.values():
        aliases = ws.registry.aliases(name)
        latest = ws.registry.versions(name)[-1]
        held = ", ".join(a for a, v in aliases.items() if v == str(latest.version))
        console.print(f"{name}: version {latest.version} ({held})", highlight=False)
    console.print(f"pipeline finished in {minutes:.0f} min {seconds:.0f} s; artifacts under {root}", soft_wrap=True)


@app.command("compile")
def compile_(
    out: Annotated[Path | None, typer.Option("--out", help="Where to write [default: pipelines/compiled/].")] = None,
    check: Annotated[bool, typer.Option("--check", help="Only check that the committed YAML is up to date.")] = False,
) -> None:
    """Compile the pipeline to Kubeflow's IR YAML (committed under pipelines/compiled/)."""
    from pipelines.remote import COMPILED, compile_pipeline, stale

    if check:
        if stale(out or COMPILED):
            raise fail(f"{out or COMPILED} is out of date with the pipeline code: run `newsfeed pipeline compile`")
        console.print(f"{out or COMPILED} is up to date")
        return
    path = compile_pipeline(out or COMPILED)
    console.print(f"wrote {path}")


def _remote(job, *args, **kwargs):
    from pipelines.remote import KubeflowError

    try:
        return job(*args, **kwargs)
    except (KubeflowError, ValueError) as err:
        raise fail(str(err)) from None


@app.command()
def submit(
    host: HostOption,
    run_name: Annotated[str | None, typer.Option(help="Name of the run [default: generated].")] = None,
    experiment: Annotated[str, typer.Option(help="Kubeflow experiment.")] = "newsfeed",
    package: PackageOption = None,
    data_dir: Annotated[str | None, typer.Option("--data-dir", help="Data location on the cluster.")] = None,
    scale: ScaleOption = None, seed: SeedOption = None, epochs: EpochsOption = None, trainer: TrainerOption = None,
    ray_workers: RayWorkersOption = None, ray_address: RayAddressOption = None,
    gate_tolerance: ToleranceOption = None, ranker_from: RankerFromOption = None,
) -> None:
    """Submit one run of the compiled pipeline to a Kubeflow Pipelines endpoint."""
    from pipelines.remote import submit as submit_run

    arguments = _arguments(data_dir=data_dir, scale=scale, seed=seed, epochs=epochs, trainer=trainer,
                           ray_workers=ray_workers, ray_address=ray_address, gate_tolerance=gate_tolerance,
                           ranker_from=ranker_from)
    run_id, url = _remote(submit_run, host, arguments, run_name, experiment, package)
    console.print(f"submitted run {run_id}: {url}", soft_wrap=True)


@app.command()
def schedule(
    host: HostOption,
    cron: Annotated[str, typer.Option("--cron", help="When to run: crontab's 5 fields, e.g. '0 3 * * *' "
                                                     "(03:00 daily), or KFP's 6 (seconds first).")],
    name: Annotated[str, typer.Option(help="Name of the recurring run.")] = "newsfeed-training-schedule",
    experiment: Annotated[str, typer.Option(help="Kubeflow experiment.")] = "newsfeed",
    package: PackageOption = None,
    data_dir: Annotated[str | None, typer.Option("--data-dir", help="Data location on the cluster.")] = None,
    epochs: EpochsOption = None, trainer: TrainerOption = None, ray_workers: RayWorkersOption = None,
    ray_address: RayAddressOption = None, gate_tolerance: ToleranceOption = None,
    ranker_from: RankerFromOption = None,
) -> None:
    """Create a recurring run of the compiled pipeline on Kubeflow Pipelines (e.g. hourly with
    ``--ranker-from champion``: the champion fine-tuned on the newest hours, gated as any)."""
    from pipelines.remote import schedule as schedule_runs

    arguments = _arguments(data_dir=data_dir, epochs=epochs, trainer=trainer, ray_workers=ray_workers,
                           ray_address=ray_address, gate_tolerance=gate_tolerance, ranker_from=ranker_from)
    job_id, expression = _remote(schedule_runs, host, cron, arguments, name, experiment, package)
    console.print(f"recurring run {job_id} ({name}): cron '{expression}'", highlight=False)
