"""The model registry: MLflow tracking and registry in one of two configurations.

``embedded`` (default): sqlite backend at ``<home>/mlflow/mlflow.db``, artifacts under
``<home>/mlflow/artifacts``. ``production``: the PostgreSQL backend
(``NEWSFEED_MLFLOW_URI``, default ``postgresql://postgres@127.0.0.1:5432/test``), artifacts
at ``NEWSFEED_MLFLOW_ARTIFACTS`` (an object store in a cluster; a local folder here).
Choose with ``--registry`` or ``NEWSFEED_REGISTRY``.

Models are registered as ``newsfeed-two-tower`` and ``newsfeed-ranker`` and promoted by
alias: a new version becomes ``challenger``; ``champion`` is what serving loads.
"""

from __future__ import annotations

import os
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

from newsfeed.errors import NewsfeedError, first_line

REGISTRY_KINDS = ("embedded", "production")
REGISTRY_ENV = "NEWSFEED_REGISTRY"
PRODUCTION_URI = "postgresql://postgres@127.0.0.1:5432/test"
TWO_TOWER = "newsfeed-two-tower"
RANKER = "newsfeed-ranker"
MODEL_NAMES = {"two-tower": TWO_TOWER, "ranker": RANKER}
ALIASES = ("challenger", "champion")
INDEX_TAG = "index_run_id"
PRERANK_TAG = "prerank_run_id"
"""A ranker version's tag: the run holding the pre-ranker distilled from it."""


class RegistryError(NewsfeedError, RuntimeError):
    """A registry that cannot be reached, or a model/alias that is not there; the message says which."""


def code_version() -> str:
    """The git commit of this checkout (``+dirty`` with uncommitted changes), else the package version."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import version

        return f"newsfeed=={version('newsfeed')}"


@dataclass
class Registry:
    kind: str
    tracking_uri: str
    artifact_root: str

    @classmethod
    def open(cls, home: Path, kind: str | None = None) -> "Registry":
        kind = kind or os.environ.get(REGISTRY_ENV) or "embedded"
        if kind not in REGISTRY_KINDS:
            raise RegistryError(f"unknown registry {kind!r}: choose one of {', '.join(REGISTRY_KINDS)}")
        root = Path(home).resolve() / "mlflow"
        if kind == "embedded":
            root.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{root / 'mlflow.db'}"
        else:
            from newsfeed.services import check_postgres

            uri = os.environ.get("NEWSFEED_MLFLOW_URI", PRODUCTION_URI)
            if uri.startswith("postgresql"):  # MLflow itself retries for about two minutes
                check_postgres(uri, "the MLflow backend")
        artifacts = os.environ.get("NEWSFEED_MLFLOW_ARTIFACTS") or (root / "artifacts").as_uri()
        registry = cls(kind, uri, artifacts)
        registry.activate()
        return registry

    def activate(self) -> None:
        """Point this process's MLflow at this registry (MLflow's fluent API is global)."""
        import logging

        import mlflow

        # MLflow logs every registration and draws download bars; the commands say what matters.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        logging.getLogger("mlflow").setLevel(logging.ERROR)
        # MLflow's sqlalchemy store uses a loader option sqlalchemy 2.1 deprecates, on every open.
        warnings.filterwarnings("ignore", message="The ``noload`` loader strategy is deprecated")
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)

    @property
    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(self.tracking_uri, self.tracking_uri)

    def experiment_id(self, name: str) -> str:
        """The experiment's id, creating it with its artifacts under this registry's root."""
        try:
            found = self.client.get_experiment_by_name(name)
        except Exception as err:  # backend unreachable: say where
            raise RegistryError(f"cannot reach the MLflow backend at {self.tracking_uri}: {err}") from None
        if found is not None:
            return found.experiment_id
        return self.client.create_experiment(name, artifact_location=f"{self.artifact_root}/{name}")

    def version(self, name: str, ref: str | int) -> "ModelVersion":  # noqa: F821 - mlflow type
        """A model version by alias (``champion``) or number."""
        from mlflow.exceptions import MlflowException

        try:
            if str(ref).isdigit():
                return self.client.get_model_version(name, str(ref))
            return self.client.get_model_version_by_alias(name, str(ref))
        except MlflowException as err:
            raise RegistryError(f"{name}: no version {ref!r} in the registry ({self.kind}): "
                                f"{first_line(err)}") from None

    def set_alias(self, name: str, alias: str, version: str | int) -> None:
        if alias not in ALIASES:
            raise RegistryError(f"unknown alias {alias!r}: use one of {', '.join(ALIASES)}")
        self.client.set_registered_model_alias(name, alias, str(version))

    def versions(self, name: str) -> list:
        """Every version of a registered model, oldest first (none when it does not exist yet)."""
        try:
            found = self.client.search_model_versions(f"name = '{name}'")
        except Exception as err:  # noqa: BLE001 - any backend failure is the registry's, not "no models"
            raise self._unreadable(name, err) from None
        return sorted(found, key=lambda v: int(v.version))

    def aliases(self, name: str) -> dict[str, str]:
        """alias -> version for a registered model (empty when it does not exist yet)."""
        from mlflow.exceptions import MlflowException

        try:
            return {alias: str(v) for alias, v in self.client.get_registered_model(name).aliases.items()}
        except MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise self._unreadable(name, err) from None
        except Exception as err:  # noqa: BLE001
            raise self._unreadable(name, err) from None

    def _unreadable(self, name: str, err: Exception) -> RegistryError:
        reason = first_line(err)
        return RegistryError(f"cannot read {name} from the {self.kind} registry at {self.tracking_uri}: {reason}")
