"""`newsfeed features`: register, compute and materialise features; training sets; event pushes."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from newsfeed.cli.common import DataDirOption, HomeOption, StateOption, StoreOption, console, fail, open_feature_store as _open, require_applied as _require_applied

app = typer.Typer(help="Feature store: apply, materialize, training-set, push, get.", no_args_is_help=True)

@app.command()
def apply(home: HomeOption = None, store: StoreOption = None) -> None:
    """Register the feature repo's entities, views and services in the store's registry."""
    from newsfeed.features.store import apply as apply_definitions

    feast_store, kind = _open(home, store)
    try:
        contents = apply_definitions(feast_store)
    except Exception as err:  # registry or online store unreachable, bad definitions
        raise fail(f"apply failed on the {kind} store: {type(err).__name__}: {err}") from None
    console.print(
        f"applied to project [bold]{feast_store.project}[/] ({kind}): {len(contents.entities)} entities, "
        f"{len(contents.feature_views) + len(contents.stream_feature_views)} feature views "
        f"({len(contents.stream_feature_views)} stream), {len(contents.on_demand_feature_views)} on-demand, "
        f"{len(contents.feature_services)} feature services"
    )


@app.command()
def materialize(
    as_of: Annotated[datetime | None, typer.Option(help="No snapshot after this time (UTC) [default: now].")] = None,
    offline_only: Annotated[bool, typer.Option("--offline-only", help="Write the offline tables only.")] = False,
    full: Annotated[bool, typer.Option("--full", help="Empty the online store and load every key, not only "
                                                      "the keys that changed since the last load.")] = False,
    home: HomeOption = None,
    data_dir: DataDirOption = None,
    store: StoreOption = None,
) -> None:
    """Compute the feature tables from the data and the event log, then load them into the online store."""
    import pandas as pd

    from newsfeed.config import Paths
    from newsfeed.features.build import build_offline
    from newsfeed.features.online_load import load as load_online

    paths = Paths.resolve(home, data_dir)
    feast_store = None
    if not offline_only:
        feast_store, kind = _open(home, store)
        _require_applied(feast_store)
    try:
        with console.status("computing features") as status:
            manifest = build_offline(paths.data_dir, paths.home, pd.Timestamp(as_of, tz="UTC") if as_of else None,
                                     progress=lambda step: status.update(f"computing {step}"))
    except (FileNotFoundError, ValueError) as err:
        raise fail(str(err)) from None
    table = Table(title=f"feature tables ({manifest['start'][:10]} .. {manifest['end'][:10]})")
    for col in ("table", "rows", "keys", "seconds"):
        table.add_column(col, justify="left" if col == "table" else "right")
    for name, rows in manifest["rows"].items():
        table.add_row(name, f"{rows:,}", f"{manifest['keys'][name]:,}", f"{manifest['seconds'].get(name, 0.0):.2f}")
    console.print(table)
    if feast_store is None:
        return
    loaded = load_online(feast_store, paths.home, manifest, full=full)
    console.print(loaded.describe(kind), highlight=False)


@app.command("training-set")
def training_set(
    out: Annotated[Path, typer.Option("--out", help="Parquet file to write.")],
    service: Annotated[str, typer.Option(help="Feature service: two_tower | ranker.")] = "ranker",
    sample: Annotated[int | None, typer.Option(help="Use a random sample of this many impressions.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sample.")] = 0,
    home: HomeOption = None,
    data_dir: DataDirOption = None,
    store: StoreOption = None,
) -> None:
    """Impressions joined point-in-time to their features (as of each impression) through Feast."""
    import time

    from newsfeed import atomic
    from newsfeed.config import Paths
    from newsfeed.data.io import read_table
    from newsfeed.features import training_set as ts
    from newsfeed.features.build import offline_manifest

    paths = Paths.resolve(home, data_dir)
    feast_store, _ = _open(home, store)
    _require_applied(feast_store)
    try:
        offline_manifest(paths.home)
        impressions, posts = read_table(paths.data_dir, "impressions"), read_table(paths.data_dir, "posts")
        feast_store.get_feature_service(service)
    except FileNotFoundError as err:
        raise fail(str(err)) from None
    except Exception as err:  # an unknown service
        raise fail(f"feature service {service!r}: {err}") from None
    if sample is not None and sample < len(impressions):
        impressions = impressions.sample(sample, random_state=seed)
    t0 = time.perf_counter()
    with console.status(f"joining {len(impressions):,} impressions to {service} features"):
        frame = ts.build(feast_store, ts.entity_frame(impressions, posts), service)
    atomic.write_parquet(frame, out)
    console.print(f"wrote {out}: {len(frame):,} rows x {frame.shape[1]} columns in {time.perf_counter() - t0:.1f} s")


@app.command()
def push(
    events_file: Annotated[Path, typer.Argument(help="Events as .jsonl, .json (a list), .csv or .parquet.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    home: HomeOption = None,
    data_dir: DataDirOption = None,
    store: StoreOption = None,
    state: StateOption = None,
) -> None:
    """Ingest reaction events: validate, append to the event log, update the live counters.

    Each event has user_id, post_id, event_type and optionally value (default 1) and
    ts (default now). Bad events are rejected with a reason; the rest go through.
    Exits 1 when no event was accepted.
    """
    import pandas as pd

    from newsfeed.config import Paths
    from newsfeed.errors import NewsfeedError
    from newsfeed.features.ingest import ingest_events
    from newsfeed.feed.activity import UserDirectory, apply_ingested
    from newsfeed.feed.user_state import open_user_state, state_kind

    try:
        state_kind(state)  # checked before any work
    except NewsfeedError as err:
        raise fail(str(err)) from None
    readers = {".jsonl": lambda p: pd.read_json(p, lines=True, dtype=False),
               ".json": lambda p: pd.DataFrame(json.loads(p.read_text())),
               ".csv": lambda p: pd.read_csv(p, dtype=str), ".parquet": pd.read_parquet}
    if events_file.suffix not in readers:
        raise fail(f"{events_file}: unknown format (use {', '.join(readers)})")
    try:
        events = readers[events_file.suffix](events_file)
    except (OSError, ValueError) as err:
        raise fail(f"{events_file}: cannot read: {err}") from None
    paths = Paths.resolve(home, data_dir)
    try:  # the store serving reads: ids, counters, hides and blocks are shared with it
        user_state = open_user_state(paths.home, state, check=True)
    except NewsfeedError as err:
        raise fail(str(err)) from None
    feast_store, kind = _open(home, store, check=False)  # events stay durable without the online store
    result = ingest_events(events, paths.data_dir, feast_store, user_state)
    if result.events is not None:
        result.state_error = apply_ingested(user_state, result, UserDirectory.from_data(paths.data_dir))
    if as_json:
        console.print_json(json.dumps({
            "accepted": result.accepted, "duplicates": result.duplicates, "counters_updated": result.counters_updated,
            "online_error": result.online_error, "state_error": result.state_error,
            "log_file": str(result.log_file) if result.log_file else None,
            "rejected": [{"index": r.index, "reason": r.reason, "event": r.event} for r in result.rejected],
        }, default=str))
    else:
        parts = [f"accepted {result.accepted:,} events" + (f" (durable in {result.log_file})" if result.log_file else "")]
        if result.duplicates:
            parts.append(f"{result.duplicates:,} already logged, not counted again")
        parts.append(f"updated counters of {result.counters_updated:,} posts in the {kind} online store")
        console.print("; ".join(parts))
        for r in result.rejected:
            console.print(f"  rejected #{r.index}: {r.reason}", highlight=False)
        if result.online_error:
            console.print(f"[yellow]online counters not updated:[/] {result.online_error}")
    if result.accepted == 0 and result.rejected:
        raise typer.Exit(1)


@app.command()
def get(
    user_id: Annotated[int, typer.Option(help="The reader.")],
    post_id: Annotated[list[int], typer.Option(help="A post (repeat for several).")],
    home: HomeOption = None,
    store: StoreOption = None,
) -> None:
    """Read the ranker's online features for one user and some posts, as serving would."""
    import time

    import pandas as pd

    from newsfeed.features.online import ranker_rows

    feast_store, kind = _open(home, store)
    _require_applied(feast_store)
    t0 = time.perf_counter()
    frame = ranker_rows(feast_store, user_id, post_id, request_time=pd.Timestamp.now(tz="UTC"))
    ms = (time.perf_counter() - t0) * 1000
    shown = {"post_id": "post", "post_content__topic": "topic", "post_engagement_live__like_count": "likes",
             "post_engagement__click_rate": "post CTR", "user_author_affinity__click_rate": "user->author CTR",
             "request_features__post_age_bucket": "age bucket", "user_engagement__click_rate_7d": "user CTR 7d"}
    stored = [c for c in frame.columns if "__" in c and not c.startswith("request_features__")]
    if frame[stored].isna().all().all():
        console.print(f"[yellow]warning:[/] the {kind} online store has no values for user {user_id} or these "
                      "posts: has `newsfeed features materialize` run since `apply`?", soft_wrap=True)
    table = Table(title=f"online features, user {user_id} ({kind}, {ms:.1f} ms)")
    for header in shown.values():
        table.add_column(header, justify="right")
    for _, row in frame[list(shown)].iterrows():
        table.add_row(*("-" if pd.isna(v) else f"{v:.3f}" if isinstance(v, float) else str(v) for v in row))
    console.print(table)
