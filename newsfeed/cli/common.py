"""Options and helpers shared by every command group."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

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
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True, highlight=False)  # paths stay whole
    return typer.Exit(code)
