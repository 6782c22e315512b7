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
    from newsfeed.gate import PRIMARY
    from newsfeed.registry import MODEL_NAMES, RegistryError

    reg = open_registry(home, registry)
    from rich import box

    table = Table(title=f"registered models newsfeed-<model> ({reg.kind} registry)", box=box.SIMPLE_HEAD)
    for c in ("model", "v", "aliases", "data", "code", "headline metric"):
        table.add_column(c, justify="right" if c == "v" else "left", no_wrap=True)
    # The first of each model's measures its run has (the ranker's: the gate's primary, in order).
    headline = {"two-tower": ("two_tower.recall_at_500",), "ranker": PRIMARY}
    label = {"two_tower.recall_at_500": "recall@500", "ranker.engagement_vs_oracle": "vs oracle",
             "ranker.engagement_vs_best": "vs best"}
    tuned = []
    try:
        for short, name in MODEL_NAMES.items():
            aliases = reg.aliases(name)
            for v in reg.versions(name):
                run = reg.client.get_run(v.run_id) if v.run_id else None
                found = [(key, run.data.metrics[key]) for key in headline[short] if run and key in run.data.metrics]
                table.add_row(short, str(v.version), ",".join(a for a, n in aliases.items() if n == str(v.version)),
                              v.tags.get("data_fingerprint", "")[:8], v.tags.get("code_version", "")[:8],
                              f"{label[found[0][0]]} {found[0][1]:.3f}" if found else "")
                if "fine_tuned_from" in v.tags:  # below the table, which fills 80 columns already
                    tuned.append(f"{short} v{v.version}: fine-tuned from v{v.tags['fine_tuned_from']}, trained "
                                 f"through {v.tags.get('trained_through', '?')}")
    except RegistryError as err:
        raise fail(str(err)) from None
    console.print(table)
    for line in tuned:
        console.print(line, highlight=False, soft_wrap=True)


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
