"""`newsfeed data`: generate, import, validate and summarise canonical datasets."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from newsfeed.cli.common import DataDirOption, HomeOption, console, fail

app = typer.Typer(help="Generate, import, validate and summarise datasets.", no_args_is_help=True)

@app.command()
def generate(
    users: Annotated[int, typer.Option(help="Number of users.")] = 2_000,
    posts: Annotated[int, typer.Option(help="Number of posts.")] = 8_000,
    days: Annotated[int, typer.Option(help="Days of activity.")] = 14,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same data.")] = 7,
    start: Annotated[datetime, typer.Option(help="First day (UTC).")] = datetime(2026, 10, 1),
    sessions_per_day: Annotated[float, typer.Option(help="Mean feed sessions per user per day.")] = 0.8,
    feed_size: Annotated[int, typer.Option(help="Posts shown per session.")] = 10,
    drift_day: Annotated[float | None, typer.Option(help="Day interests drift [default: 2/3 in; <0: never].")] = None,
    drift_strength: Annotated[float, typer.Option(help="How far interests move at the drift (0-1).")] = 0.6,
    force: Annotated[bool, typer.Option("--force", help="Replace a different dataset already there.")] = False,
    home: HomeOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Simulate a social network with ground truth and write its canonical tables."""
    from pydantic import ValidationError

    from newsfeed.config import Paths
    from newsfeed.data.io import has_dataset, read_manifest, replace_dataset
    from newsfeed.data.simulator import SimConfig, simulate_to
    from newsfeed.data.world import WORLD_FILE
    from newsfeed.errors import option_message

    out = Paths.resolve(home, data_dir).data_dir
    try:
        config = SimConfig(
            seed=seed, users=users, posts=posts, days=days, start=start, sessions_per_day=sessions_per_day,
            feed_size=feed_size, drift_day=drift_day, drift_strength=drift_strength,
        )
    except ValidationError as err:
        raise fail(option_message(err)) from None
    if not force and has_dataset(out):
        existing = read_manifest(out)
        if existing.get("config") == config.model_dump(mode="json") and (out / WORLD_FILE).exists():
            console.print(f"{out}: already holds this dataset (seed {seed}); nothing to do")
            return
        raise fail(f"{out} already holds a different dataset ({existing.get('source', 'no manifest')}); "
                   "pass --force to replace it, or choose --data-dir")
    with console.status("simulating") as status:
        manifest = replace_dataset(out, lambda folder: simulate_to(
            folder, config, progress=lambda step: status.update(f"simulating {step}")))
    rows = ", ".join(f"{n:,} {t}" for t, n in manifest["rows"].items())
    console.print(f"wrote {out}: {rows}")


@app.command("import")
def import_(
    format: Annotated[str, typer.Argument(help="movielens | open-bandit | mind | ebnerd")],
    path: Annotated[Path, typer.Argument(help="The dataset's folder, as distributed.")],
    out: Annotated[Path | None, typer.Option("--out", help="Where to write [default: the data dir].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a dataset already there.")] = False,
    home: HomeOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Import a public dataset into canonical tables (mappings: docs/data.md)."""
    from newsfeed.config import Paths
    from newsfeed.data.adapters import import_dataset
    from newsfeed.data.io import has_dataset, replace_dataset, write_dataset

    target = out or Paths.resolve(home, data_dir).data_dir
    if has_dataset(target) and not force:
        raise fail(f"{target} already holds a dataset; pass --force to replace it, or choose --out")
    with console.status(f"reading {format} from {path}"):
        tables = import_dataset(format, path)
    manifest = replace_dataset(target, lambda folder: write_dataset(folder, tables, source=format,
                                                                  imported_from=str(path.resolve())))
    rows = ", ".join(f"{n:,} {t}" for t, n in manifest["rows"].items())
    console.print(f"wrote {target}: {rows}")


@app.command()
def validate(
    directory: Annotated[Path | None, typer.Argument(help="Dataset folder [default: the data dir].")] = None,
    max_bad_rate: Annotated[float, typer.Option(help="Fail when any table has more bad rows than this.")] = 0.01,
    quarantine_dir: Annotated[Path | None, typer.Option(help="[default: DIRECTORY/quarantine]")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    home: HomeOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Check every table against its contract; quarantine bad rows with reasons.

    Exits 1 when a table is missing or unusable, or any table's bad-row rate is
    above --max-bad-rate.
    """
    from newsfeed.config import Paths
    from newsfeed.data.validation import QUARANTINE_DIR, DataError, validate_dataset

    target = directory or Paths.resolve(home, data_dir).data_dir
    try:
        result = validate_dataset(target, quarantine_dir)
    except FileNotFoundError as err:
        raise fail(str(err)) from None
    if as_json:
        console.print_json(json.dumps(result.to_json()))
    else:
        table = Table(title=f"validation of {target}")
        for col in ("table", "rows", "bad rows", "bad rate", "top reasons"):
            table.add_column(col, justify="right" if col in ("rows", "bad rows", "bad rate") else "left")
        for r in result.reports.values():
            reasons = "; ".join(f"{why} x{n}" for why, n in r.reasons.most_common(3))
            table.add_row(r.table, f"{r.rows:,}", f"{r.bad_rows:,}", f"{r.bad_rate:.2%}", reasons)
        console.print(table)
        if result.bad_rows:
            console.print(f"quarantined {result.bad_rows:,} rows with reasons in "
                          f"{quarantine_dir or target / QUARANTINE_DIR}")
    try:
        result.require_usable(max_bad_rate)
    except DataError as err:
        raise fail(str(err)) from None


@app.command()
def summary(
    directory: Annotated[Path | None, typer.Argument(help="Dataset folder [default: the data dir].")] = None,
    home: HomeOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Print a dataset's sizes, time span, reaction rates (and the oracle's) and top topics."""
    from newsfeed.config import Paths
    from newsfeed.data import summary as s
    from newsfeed.data.io import read_dataset, read_manifest

    target = directory or Paths.resolve(home, data_dir).data_dir
    try:
        tables = read_dataset(target)
    except FileNotFoundError as err:
        raise fail(str(err)) from None
    source = read_manifest(target).get("source", "unknown source")
    sizes = Table(title=f"{target} ({source})")
    for col in ("table", "rows", "from", "to"):
        sizes.add_column(col, justify="right" if col == "rows" else "left")
    for name, rows, first, last in s.table_sizes(tables):
        sizes.add_row(name, f"{rows:,}", first, last)
    console.print(sizes)
    if "impressions" in tables:
        rates = Table(title="reactions per impression")
        for col in ("label", "observed", "true mean p"):
            rates.add_column(col, justify="left" if col == "label" else "right")
        for label, observed, truth in s.reaction_rates(tables["impressions"]):
            rates.add_row(label, f"{observed:.4f}", "" if truth is None else f"{truth:.4f}")
        console.print(rates)
    if "posts" in tables and "impressions" in tables:
        topics = Table(title="top topics")
        for col in ("topic", "posts", "click rate"):
            topics.add_column(col, justify="left" if col == "topic" else "right")
        for topic, count, ctr in s.top_topics(tables["posts"], tables["impressions"]):
            topics.add_row(topic, f"{count:,}", f"{ctr:.4f}")
        console.print(topics)
