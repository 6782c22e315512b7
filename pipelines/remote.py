"""The pipeline on Kubeflow Pipelines: compile it to IR YAML, submit a run, schedule
recurring runs (``kfp.Client``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from newsfeed.errors import first_line, NewsfeedError

COMPILED = Path(__file__).resolve().parent / "compiled" / "newsfeed-training.yaml"
EXPERIMENT = "newsfeed"


class KubeflowError(NewsfeedError, RuntimeError):
    """Kubeflow Pipelines could not be reached or refused the request; the message says which."""


def compile_pipeline(out: Path = COMPILED) -> Path:
    from kfp import compiler

    from pipelines.training_pipeline import training_pipeline

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(training_pipeline, str(out))
    return out


def stale(path: Path = COMPILED) -> bool:
    """Whether ``path`` differs from what compiling the code gives now."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = compile_pipeline(Path(tmp) / "pipeline.yaml").read_text()
    return not Path(path).exists() or Path(path).read_text() != fresh


def cron_six_fields(expression: str) -> str:
    """KFP's cron has a leading seconds field: a 5-field (crontab) expression gets ``0``."""
    fields = expression.split()
    if len(fields) == 5:
        return " ".join(["0", *fields])
    if len(fields) == 6:
        return " ".join(fields)
    raise ValueError(f"cron expression {expression!r}: expected 5 fields (minute hour day month weekday) "
                     "or 6 (seconds first)")


def connect(host: str):
    import warnings

    import kfp

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This client only works with Kubeflow Pipeline v2")
        try:
            return kfp.Client(host=host)  # checks the API's health on the way
        except Exception as err:  # urllib3, kfp_server_api and auth errors alike: say where and why
            raise KubeflowError(f"cannot reach Kubeflow Pipelines at {host}: {_reason(err)}") from None


def _reason(err: Exception) -> str:
    text = first_line(err)
    return text[:300]


def _package(path: Path | None) -> str:
    path = Path(path or COMPILED)
    if not path.exists():
        raise KubeflowError(f"{path}: no compiled pipeline (run `newsfeed pipeline compile`)")
    return str(path)


def submit(host: str, arguments: dict, run_name: str | None = None, experiment: str = EXPERIMENT,
           package: Path | None = None) -> tuple[str, str]:
    """Start one run; return (run id, its page on the KFP UI)."""
    client = connect(host)
    try:
        result = client.create_run_from_pipeline_package(_package(package), arguments=arguments, run_name=run_name,
                                                         experiment_name=experiment, enable_caching=False)
    except KubeflowError:
        raise
    except Exception as err:
        raise KubeflowError(f"Kubeflow Pipelines at {host} refused the run: {_reason(err)}") from None
    return result.run_id, f"{host.rstrip('/')}/#/runs/details/{result.run_id}"


def schedule(host: str, cron: str, arguments: dict, name: str = "newsfeed-training-schedule",
             experiment: str = EXPERIMENT, package: Path | None = None) -> tuple[str, str]:
    """Create a recurring run (one at a time, no catch-up of missed runs); return its id and
    the cron expression KFP was given."""
    expression = cron_six_fields(cron)
    client = connect(host)
    try:
        experiment_id = client.create_experiment(experiment).experiment_id
        job = client.create_recurring_run(experiment_id, name, cron_expression=expression,
                                          pipeline_package_path=_package(package), params=arguments,
                                          max_concurrency=1, no_catchup=True, enable_caching=False)
    except KubeflowError:
        raise
    except Exception as err:
        raise KubeflowError(f"Kubeflow Pipelines at {host} refused the schedule: {_reason(err)}") from None
    return job.recurring_run_id, expression
