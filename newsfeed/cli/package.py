"""`newsfeed package`: the registered ranker as a Bento (standalone scoring endpoint) and its containerfile."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from newsfeed.cli.common import HomeOption, RegistryOption, console, fail, open_registry


def package(
    model: Annotated[str, typer.Option("--model", help="Ranker alias (champion, challenger) or version.")] = "champion",
    out: Annotated[Path | None, typer.Option("--out", help="Where to write the containerfile [default: <home>/bento].")] = None,
    home: HomeOption = None, registry: RegistryOption = None,
) -> None:
    """Import a registered ranker version from MLflow into the Bento store (BENTOML_HOME, default
    <home>/bentoml), build a Bento serving POST /score, and write its containerfile."""
    from newsfeed.config import Paths

    paths = Paths.resolve(home)
    # BentoML reads its home once, when it loads: set it first.
    os.environ.setdefault("BENTOML_HOME", str(paths.home / "bentoml"))
    reg = open_registry(home, registry)
    from newsfeed.packaging import package_ranker
    from newsfeed.registry import RegistryError

    try:
        with console.status("importing the model and building the Bento"):
            result = package_ranker(reg, model, out or paths.home / "bento")
    except RegistryError as err:
        raise fail(str(err)) from None
    console.print(f"newsfeed-ranker version {result.model_version} -> Bento model {result.bento_model}\n"
                  f"built Bento {result.bento} at {result.bento_path}\n"
                  f"containerfile: {result.containerfile} (build the image where Docker runs: "
                  f"`bentoml containerize {result.bento}`)\n"
                  f"serve it here: BENTOML_HOME={os.environ['BENTOML_HOME']} bentoml serve {result.bento}",
                  soft_wrap=True, highlight=False)
