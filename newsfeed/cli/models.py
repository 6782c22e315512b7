"""`newsfeed models list | promote`: the registered versions and their aliases."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from newsfeed.cli.common import HomeOption, RegistryOption, console, fail, open_registry

app = typer.Typer(help="Registered models: list versions, promote by alias.", no_args_is_help=True)
ModelArg = Annotated[str, typer.Argument(help="two-tower | ranker.")]


@app.command("list")
def list_models(home: HomeOption = None, registry: RegistryOption = None) -> None:
    """Every registered version with its aliases, lineage and headline metrics."""
    from newsfeed.registry import MODEL_NAMES, RegistryError

    reg = open_registry(home, registry)
    from rich import box

    table = Table(title=f"registered models newsfeed-<model> ({reg.kind} registry)", box=box.SIMPLE_HEAD)
    for c in ("model", "v", "aliases", "data", "code", "headline metric"):
        table.add_column(c, justify="right" if c == "v" else "left", no_wrap=True)
    headline = {"two-tower": ("two_tower.recall_at_500", "recall@500"), "ranker": ("ranker.ndcg_at_10", "ndcg@10")}
    try:
        for short, name in MODEL_NAMES.items():
            aliases = reg.aliases(name)
            key, label = headline[short]
            for v in reg.versions(name):
                run = reg.client.get_run(v.run_id) if v.run_id else None
                metric = run.data.metrics.get(key) if run else None
                table.add_row(short, str(v.version), ",".join(a for a, n in aliases.items() if n == str(v.version)),
                              v.tags.get("data_fingerprint", "")[:8],
                              v.tags.get("code_version", "")[:8], f"{label} {metric:.3f}" if metric is not None else "")
    except RegistryError as err:
        raise fail(str(err)) from None
    console.print(table)


@app.command()
def promote(
    model: ModelArg,
    version: Annotated[str, typer.Option(help="Version number, or the alias whose version to promote.")] = "challenger",
    alias: Annotated[str, typer.Option(help="Alias to point at it.")] = "champion",
    home: HomeOption = None, registry: RegistryOption = None,
) -> None:
    """Point an alias (default champion) at a version (default: the challenger's)."""
    from newsfeed.registry import MODEL_NAMES, RegistryError

    if model not in MODEL_NAMES:
        raise fail(f"unknown model {model!r}: choose {' or '.join(MODEL_NAMES)}")
    reg = open_registry(home, registry)
    name = MODEL_NAMES[model]
    try:
        target = reg.version(name, version)
        before = reg.aliases(name).get(alias)
        reg.set_alias(name, alias, str(target.version))
    except RegistryError as err:
        raise fail(str(err)) from None
    was = f" (was version {before})" if before and before != str(target.version) else ""
    console.print(f"{name}: {alias} -> version {target.version}{was}")
