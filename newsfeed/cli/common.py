"""Options and helpers shared by every command group."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from typer.core import TyperGroup

from newsfeed.errors import NewsfeedError

console = Console()
err_console = Console(stderr=True)

HomeOption = Annotated[
    Path | None, typer.Option("--home", help="Local state folder [env NEWSFEED_HOME, default ./.newsfeed].")
]
DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="Data folder [env NEWSFEED_DATA_DIR, default <home>/data].")
]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a clear error and return the exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True, highlight=False, markup=True)
    return typer.Exit(code)


class CommandGroup(TyperGroup):
    """The one place the project's own errors become a message and exit code 1, for every
    command below it; any other exception is a bug and keeps its traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except NewsfeedError as err:
            raise fail(escape(str(err))) from None


def escape(text: str) -> str:
    """``text`` shown as is by rich (brackets in messages are not markup)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)

StoreOption = Annotated[
    str | None,
    typer.Option("--store", help="embedded (sqlite, file registry) | production (Redis, SQL registry on "
                                 "PostgreSQL) [env NEWSFEED_FEATURE_STORE, default embedded]."),
]
StateOption = Annotated[
    str | None,
    typer.Option("--state", help="Where the experiment and user state live: embedded (files under the home) | "
                                 "production (Redis at NEWSFEED_REDIS) [env NEWSFEED_STATE, default embedded]."),
]
RegistryOption = Annotated[
    str | None,
    typer.Option("--registry", help="embedded (sqlite + local artifacts) | production (PostgreSQL backend) "
                                    "[env NEWSFEED_REGISTRY, default embedded]."),
]


def open_feature_store(home: Path | None, store: str | None, check: bool = True):
    """(Feast store, kind) of the chosen configuration, or a clear exit."""
    from newsfeed.config import Paths
    from newsfeed.features.store import FeatureStoreError, open_store, store_kind

    paths = Paths.resolve(home)
    try:
        kind = store_kind(store)
        return open_store(paths.home, kind, check=check), kind
    except FeatureStoreError as err:
        raise fail(str(err)) from None


def require_applied(feast_store) -> None:
    if not feast_store.list_feature_views():
        raise fail(f"no feature views registered in project {feast_store.project!r}: "
                   "run `newsfeed features apply` first")


def open_registry(home: Path | None, registry: str | None):
    from newsfeed.config import Paths
    from newsfeed.registry import Registry, RegistryError

    try:
        return Registry.open(Paths.resolve(home).home, registry)
    except RegistryError as err:
        raise fail(str(err)) from None
