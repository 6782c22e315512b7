"""How replicas hear of published content: a channel of log parts.

A publish appends its batch to a table's log in the data folder (``data.table_log``) and
announces the part. Every replica follows the channel (``replica.ContentFollower``) and
applies each part once. Two channels over the same logs:

- ``LogChannel`` lists the log folders at each look (the embedded default: any process on
  the machine sees a part as soon as it is renamed into place);
- ``RedisChannel`` reads a Redis stream of announcements (production: a look costs one
  small read, not a listing that grows with the log). Its first look lists the folders, so
  a replica that starts late catches up from the logs: the logs are the truth, the stream
  only says where to look now.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

from newsfeed.data import table_log

ORDER = ("users", "posts", "friendships")
"""Parts found in one look are applied users first: a post or friendship may name a user
published in the same moment."""
STREAM_MAXLEN = 100_000
RELIST_SECONDS = 30.0
"""The Redis channel lists the log folders this often too: a part whose announcement was lost
(Redis down, a publisher that died between logging and announcing) is applied all the same."""


class ContentChannel(Protocol):
    where: str  # for messages

    def announce(self, table: str, part: Path) -> None: ...

    def poll(self) -> list[tuple[str, Path]]:
        """(table, part) of each part not returned before."""
        ...


class LogChannel:
    """The data folder's logs, listed at each look."""

    def __init__(self, data_dir: Path):
        self.data_dir, self.where = Path(data_dir), f"the logs under {data_dir}"
        self._taken: set[str] = set()

    def announce(self, table: str, part: Path) -> None:
        """Nothing to send: the part is in its log folder, where every look finds it."""

    def take(self, part: Path) -> bool:
        """True the first time ``part`` is seen."""
        if part.name in self._taken:
            return False
        self._taken.add(part.name)
        return True

    def poll(self) -> list[tuple[str, Path]]:
        return [(table, part) for table in ORDER for part in table_log.parts(self.data_dir, table) if self.take(part)]


class RedisChannel:
    """A Redis stream (``key``) of ``{table, part}`` announcements beside the logs."""

    def __init__(self, client, key: str, data_dir: Path, where: str):
        self.client, self.key, self.data_dir, self.where = client, key, Path(data_dir), where
        self._logs = LogChannel(data_dir)
        self._last: str | None = None  # the stream position read up to
        self._listed = 0.0  # monotonic time of the last listing

    def announce(self, table: str, part: Path) -> None:
        self.client.xadd(self.key, {"table": table, "part": part.name}, maxlen=STREAM_MAXLEN, approximate=True)

    def poll(self) -> list[tuple[str, Path]]:
        if self._last is None:
            # The stream's position first, then the folders: a part announced in between is
            # found by both and taken once.
            newest = self.client.xrevrange(self.key, count=1)
            self._last = newest[0][0].decode() if newest else "0-0"
            self._listed = time.monotonic()
            return self._logs.poll()
        found = []
        if time.monotonic() - self._listed >= RELIST_SECONDS:
            self._listed = time.monotonic()
            found += self._logs.poll()
        for _, entries in self.client.xread({self.key: self._last}, count=10_000) or []:
            for entry_id, fields in entries:
                self._last = entry_id.decode()
                table = fields[b"table"].decode()
                if table in ORDER:
                    part = table_log.log_dir(self.data_dir, table) / Path(fields[b"part"].decode()).name
                    if self._logs.take(part):
                        found.append((table, part))
        return sorted(found, key=lambda found_part: ORDER.index(found_part[0]))  # stable within a table


def open_channel(state, data_dir: Path) -> ContentChannel:
    """Redis beside a Redis user-state store (production), else the logs (embedded)."""
    from newsfeed.feed.user_state import RedisUserState

    if isinstance(state, RedisUserState):
        return RedisChannel(state.client, state.key("content"), data_dir, state.where)
    return LogChannel(data_dir)
