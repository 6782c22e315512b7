"""Registered models and their index, loaded by alias or version: what serving imports.

Nothing here trains or evaluates (that is ``runs``), so the request path does not drag in
training sets, Feast joins or the evaluation code."""

from __future__ import annotations

import json
from pathlib import Path

from newsfeed.registry import INDEX_TAG, PRERANK_TAG, RANKER, TWO_TOWER, Registry, RegistryError


def load_registered(registry: Registry, name: str, ref: str | int = "champion"):
    """(model, weights or None, version) of a registered version, rebuilt from its artifacts."""
    import mlflow

    version = registry.version(name, ref)
    wrapper = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}").unwrap_python_model()
    return wrapper.model, getattr(wrapper, "weights", None), version


def load_index(registry: Registry, ref: str | int = "champion", folder: Path | None = None):
    """(index, two-tower version) registered together; refuses an index built by another version."""
    import mlflow

    from newsfeed.index import PostIndex

    version = registry.version(TWO_TOWER, ref)
    run_id = version.tags.get(INDEX_TAG)
    if not run_id:
        raise RegistryError(f"{TWO_TOWER} version {version.version} has no index: run `newsfeed index build "
                            f"--model {version.version}`")
    path = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="index",
                                                    dst_path=str(folder) if folder else None))
    manifest = json.loads((path / "manifest.json").read_text())
    if manifest["model_version"] != str(version.version):
        raise RegistryError(f"index of run {run_id} was built by version {manifest['model_version']}, "
                            f"not {version.version}")
    return PostIndex.load(path), version


def load_prerank(registry: Registry, version: str | int):
    """The pre-ranker distilled from a ranker version (``newsfeed.feed.distilled.StudentNet``),
    or None where the version has none (distilled later, or never)."""
    import mlflow

    from newsfeed.feed import distilled

    run_id = registry.version(RANKER, version).tags.get(PRERANK_TAG)
    if not run_id:
        return None
    return distilled.load(Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="prerank")))
