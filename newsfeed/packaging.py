"""BentoML packaging of a registered ranker: MLflow version -> Bento store -> a Bento with a
standalone scoring endpoint (``newsfeed/bento_service.py``) -> its containerfile.

The image itself is built elsewhere (``bentoml containerize`` needs Docker). The Bento store
is ``BENTOML_HOME``; the command line points it at ``<home>/bentoml`` before BentoML loads,
as BentoML reads it once per process.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from newsfeed.bento_service import MODEL_NAME
from newsfeed.registry import RANKER, Registry

SERVICE = "newsfeed.bento_service:RankerService"
CONTAINERFILE = "Containerfile"


@dataclass
class PackageResult:
    model_version: str
    bento_model: str
    bento: str
    bento_path: Path
    containerfile: Path


def package_ranker(registry: Registry, ref: str, out_dir: Path) -> PackageResult:
    """Import the ranker version ``ref`` (alias or number) into the Bento store, build its Bento
    and write the Bento's containerfile to ``out_dir``."""
    import bentoml

    import newsfeed
    from newsfeed.models.runs import runtime_requirements

    version = registry.version(RANKER, ref)
    lineage = {"mlflow_model": RANKER, "mlflow_version": str(version.version), "mlflow_run_id": version.run_id}
    model = bentoml.mlflow.import_model(MODEL_NAME, f"models:/{RANKER}/{version.version}", labels=lineage,
                                        metadata={**lineage, **version.tags})
    source_root = Path(newsfeed.__file__).resolve().parents[1]
    bento = bentoml.bentos.build(
        SERVICE, name=MODEL_NAME, labels=lineage, build_ctx=str(source_root),
        include=["newsfeed/**/*.py", "newsfeed/*.yaml"],
        # Already pinned to this environment: no re-resolution (it would reach for an index).
        python={"packages": runtime_requirements(), "lock_packages": False},
        description=f"{RANKER} version {version.version}: P(reaction) per head and the engagement score",
    )
    bento_path = Path(bento.path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    containerfile = out_dir / CONTAINERFILE
    shutil.copyfile(bento_path / "env" / "docker" / "Dockerfile", containerfile)
    return PackageResult(str(version.version), str(model.tag), str(bento.tag), bento_path, containerfile)
