"""What a replica holds and keeps current while it runs: published content, applied from the
content channel to the replica's posts, loaded models and user directory.

A published part is applied once per replica, in the order the channel gives: users join
the directory (a new user gets a cold-start feed at once), posts join the corpus after
every loaded post tower has embedded them into its index (``ModelCache.extend``),
friendships change the in-network source. Post features come from the online store, where
the publisher wrote them before logging the batch, so every replica serves the same values
the publisher computed. A part that cannot be read is skipped and counted, never raised:
what a client published cannot stop a replica.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from newsfeed.data.io import read_parquet
from newsfeed.errors import NewsfeedError

FOLLOW_SECONDS = 0.2
"""How often a replica looks for published content (the channel's cost per look is a Redis
read, or a listing of the log folders)."""
log = logging.getLogger(__name__)


@dataclass
class FollowStats:
    parts: int = 0
    posts: int = 0
    users: int = 0
    friendships: int = 0
    skipped: int = 0  # parts that could not be read or applied
    last_error: str | None = None
    last_unix: float | None = None  # when the replica last applied a part

    def as_json(self) -> dict:
        return dict(vars(self))


@dataclass
class ContentFollower:
    """Polls ``channel`` every ``FOLLOW_SECONDS`` on a daemon thread (``start``), or when asked
    (``catch_up``: a publisher catches its own replica up before it answers)."""

    channel: object  # content.ContentChannel
    apply: dict[str, Callable[[pd.DataFrame], int]]  # table -> apply its rows, return how many were new
    after: Callable[[], None] = lambda: None  # after each look (the replica keeps its window here)
    stats: FollowStats = field(default_factory=FollowStats)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        threading.Thread(target=self._loop, name="content-follower", daemon=True).start()

    def _loop(self) -> None:
        while True:
            self.catch_up()
            with self._lock:  # never beside an apply: a post added to a corpus being replaced would be lost
                try:
                    self.after()
                except Exception as err:  # noqa: BLE001 - the replica serves on; the next look tries again
                    self.stats.last_error = f"after a look: {type(err).__name__}: {str(err)[:200]}"
            time.sleep(FOLLOW_SECONDS)

    def catch_up(self) -> int:
        """Apply every part the channel has not given before; the rows applied."""
        with self._lock:  # one poll at a time: each part is applied once, in order
            try:
                found = self.channel.poll()
            except Exception as err:  # noqa: BLE001 - a channel that is down: the next poll catches up
                self.stats.last_error = f"content channel ({self.channel.where}): {str(err)[:200]}"
                return 0
            applied = 0
            for table, part in found:
                applied += self._apply(table, part)
            return applied

    def _apply(self, table: str, part: Path) -> int:
        try:
            rows = read_parquet(part)
            count = self.apply[table](rows)
        except (NewsfeedError, OSError, ValueError, KeyError) as err:
            self.stats.skipped += 1
            self.stats.last_error = f"{part.name}: {str(err)[:200]}"
            log.warning("content part %s skipped: %s", part, err)
            return 0
        self.stats.parts += 1
        setattr(self.stats, table, getattr(self.stats, table) + count)
        self.stats.last_unix = time.time()
        return count
