"""The `newsfeed` command line: one module per command group.

Command modules import only typer (and the small settings models whose defaults their
help shows) at load time, and their heavy libraries (pandas, torch, feast, ...) inside
each command, so `newsfeed --help` is fast.
"""

from __future__ import annotations

import typer

from newsfeed.cli import (data, demo, drift, experiment, features, index, models, ope, package, pipeline, publish,
                          serve, simulate, train)
from newsfeed.cli.common import CommandGroup

app = typer.Typer(
    name="newsfeed",
    cls=CommandGroup,
    help="Newsfeed MLOps platform: data, features, training, serving, experiments and drift.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts hold literal [defaults] in brackets
)
app.add_typer(data.app, name="data")
app.add_typer(features.app, name="features")
app.add_typer(train.app, name="train")
app.command("evaluate")(train.evaluate)
app.add_typer(models.app, name="models")
app.add_typer(index.app, name="index")
app.command("package")(package.package)
app.add_typer(pipeline.app, name="pipeline")
app.add_typer(serve.app, name="serve")
app.command("feed")(serve.feed)
app.command("publish")(publish.publish_command)
app.add_typer(experiment.app, name="experiment")
app.add_typer(drift.app, name="drift")
app.add_typer(ope.app, name="ope")
app.command("simulate")(simulate.simulate)
app.command("demo")(demo.demo)


def main() -> None:
    app()
