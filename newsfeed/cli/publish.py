"""`newsfeed publish posts|users|friendships FILE.jsonl`: content into the running platform,
through a service (``--url``, the ingest token from ``NEWSFEED_INGEST_TOKEN``) or straight
into the home (its logs, online store and content channel, which every replica follows)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from newsfeed.cli.common import (DataDirOption, HomeOption, StateOption, StoreOption, console, escape, fail,
                                 open_feature_store)

BATCH = 1_000  # items per request: the service's own bound (serving.app.MAX_ITEMS)
TOKEN_ENV = "NEWSFEED_INGEST_TOKEN"


class Table(str, Enum):
    posts = "posts"
    users = "users"
    friendships = "friendships"


def read_items(path: Path) -> list[dict]:
    """One JSON object per line; a blank line is skipped, anything else is an error naming its line."""
    if path.suffix != ".jsonl":
        raise fail(f"{path}: expected a .jsonl file (one JSON object per line)")
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise fail(f"{path}: cannot read: {err}") from None
    items = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as err:
            raise fail(f"{path}:{number}: not JSON ({err})") from None
        if not isinstance(item, dict):
            raise fail(f"{path}:{number}: expected a JSON object, got {type(item).__name__}")
        items.append(item)
    if not items:
        raise fail(f"{path}: no items")
    return items


def through_service(url: str, table: str, items: list[dict], token: str | None) -> dict:
    """POST the items in batches; the answers summed (rejected indexes into ``items``)."""
    total = {"accepted": 0, "duplicates": 0, "rejected": [], "notes": []}
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    for start in range(0, len(items), BATCH):
        request = urllib.request.Request(f"{url}/v1/{table}", json.dumps({table: items[start:start + BATCH]}).encode(),
                                         headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as reply:
                answer = json.loads(reply.read())
        except urllib.error.HTTPError as err:
            raise fail(f"{url}/v1/{table} answered {err.code}: {err.read().decode()[:300]}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            raise fail(f"cannot reach the feed service at {url}: {getattr(err, 'reason', err)}") from None
        total["accepted"] += answer["accepted"]
        total["duplicates"] += answer["duplicates"]
        total["rejected"] += [{**r, "index": r["index"] + start} for r in answer["rejected"]]
        total["notes"] += answer.get("notes", [])
    return total


def into_home(home: Path | None, data_dir: Path | None, store: str | None, state: str | None, table: str,
              items: list[dict]) -> dict:
    from newsfeed.config import Paths
    from newsfeed.feed.activity import UserDirectory
    from newsfeed.feed.content import open_channel
    from newsfeed.feed.clock import open_clock
    from newsfeed.feed.user_state import open_user_state
    from newsfeed.features.publish import known_of, online_writer, publish

    import pandas as pd

    paths = Paths.resolve(home, data_dir)
    user_state = open_user_state(paths.home, state, check=True)
    feast_store, _ = open_feature_store(home, store)
    directory = UserDirectory.from_data(paths.data_dir)
    clock = open_clock(None, directory.latest_unix, user_state, paths.data_dir)
    result = publish(table, items, paths.data_dir, known_of(directory), user_state,
                     pd.Timestamp(clock.now(), unit="s", tz="UTC"), online_writer(feast_store, paths.home))
    if result.log_file is not None:
        open_channel(user_state, paths.data_dir).announce(table, result.log_file)
    return result.as_json()


def publish_command(
    table: Annotated[Table, typer.Argument(help="What the file holds.")],
    items_file: Annotated[Path, typer.Argument(help="One JSON object per line, with the table's contract columns.")],
    url: Annotated[str | None, typer.Option(help="A running feed service [default: write into the home].")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    home: HomeOption = None,
    data_dir: DataDirOption = None,
    store: StoreOption = None,
    state: StateOption = None,
) -> None:
    """Publish posts, users or friendships: checked, stored once (idempotent by id), in every
    replica's feeds within seconds and in the next training run. Exits 1 when nothing was
    accepted and something was rejected."""
    from newsfeed.errors import NewsfeedError
    from newsfeed.features.publish import PublishUnavailable
    from newsfeed.feed.user_state import state_kind

    try:
        state_kind(state)  # options first, before any work
    except NewsfeedError as err:
        raise fail(str(err)) from None
    items = read_items(items_file)
    try:
        result = (through_service(url.rstrip("/"), table.value, items, os.environ.get(TOKEN_ENV)) if url
                  else into_home(home, data_dir, store, state, table.value, items))
    except PublishUnavailable as err:
        raise fail(f"{err}; nothing was published, run it again") from None
    if as_json:
        console.print_json(json.dumps(result))
    else:
        console.print(f"published {result['accepted']:,} {table.value}; {result['duplicates']:,} already there; "
                      f"{len(result['rejected']):,} rejected", highlight=False)
        for r in result["rejected"]:
            console.print(f"  rejected #{r['index']}: {escape(r['reason'])}", highlight=False)
        for note in result["notes"]:
            console.print(f"  note: {escape(note)}", highlight=False)
    if result["accepted"] == 0 and result["rejected"]:
        raise typer.Exit(1)
