"""Request time, the same on every replica: the wall clock (production), a replayed dataset's
time, or the time a simulator sets.

``replayed``: a dataset that ended in the past (the simulator's) served as if it ended when
the service started, so the freshness horizon finds its newest posts. It starts when the
dataset was first served (``replay_started``, kept in the shared store; `newsfeed serve`
restarts it), so every replica and publisher tells the same time, and a post published on
one replica is not in another's future.

``simulated``: the closed loop (`newsfeed simulate`) drives time: it sets it through
``PUT /v1/clock`` (kept in the shared store; every replica reads it at most
``SIMULATED_CHECK_SECONDS`` old), and it only moves forward. Before the first setting it
stands at the data's end.

``auto`` (``NEWSFEED_CLOCK``, the default) replays data that ended more than a day ago; the
production overlay sets ``wall``.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from newsfeed.errors import NewsfeedError
from newsfeed.feed.user_state import StateError

CLOCK_KINDS = ("auto", "wall", "replayed", "simulated")
CLOCK_ENV = "NEWSFEED_CLOCK"
SIMULATED_CHECK_SECONDS = 0.02
"""How stale a replica's reading of the simulated time may be: a simulator that set the time
waits this long before the next request counts on it."""


class ClockError(NewsfeedError, ValueError):
    """A time that cannot be set: not a simulated clock, or a step back."""


def clock_kind(kind: str | None = None) -> str:
    kind = kind or os.environ.get(CLOCK_ENV) or "auto"
    if kind not in CLOCK_KINDS:
        raise NewsfeedError(f"{CLOCK_ENV}={kind!r}: expected one of {', '.join(CLOCK_KINDS)}")
    return kind


def iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, timezone.utc).isoformat()


@dataclass
class Clock:
    """The wall clock, or a replayed one (the wall clock shifted by ``offset``)."""

    kind: str = "wall"
    offset: float = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def describe(self) -> dict:
        return {"kind": self.kind, "now": iso(self.now())}

    def set(self, unix: float) -> float:
        raise ClockError(f"this service runs on the {self.kind} clock; only a simulated clock "
                         f"({CLOCK_ENV}=simulated) can be set")


@dataclass
class SimulatedClock:
    """The time a simulator set, read from the shared store (see the module's docstring). While
    the store cannot be read, the last time read stands still."""

    state: object  # the user-state store: stored(name), anchor(name, value, replace)
    name: str
    start: float  # before the first setting: the data's end
    kind: str = "simulated"
    _value: float | None = None
    _checked: float = float("-inf")
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> float:
        if time.monotonic() - self._checked >= SIMULATED_CHECK_SECONDS:
            with self._lock:
                try:
                    stored = self.state.stored(self.name)
                except StateError:
                    stored = None
                self._value = max(v for v in (stored, self._value, self.start) if v is not None)
                self._checked = time.monotonic()
        return self._value

    def set(self, unix: float) -> float:
        """Move the time to ``unix`` for every replica; a step back is refused."""
        current = self.now()
        if unix < current:
            raise ClockError(f"the simulated clock only moves forward: it is {iso(current)}, asked {iso(unix)}")
        with self._lock:
            self._value = self.state.anchor(self.name, float(unix), replace=True)
            self._checked = time.monotonic()
        return self._value

    def describe(self) -> dict:
        return {"kind": self.kind, "now": iso(self.now())}


def replay_started(state, data_dir: Path, restart: bool = False) -> float:
    """When the replayed clock of ``data_dir``'s dataset started (now, for the first to ask, or
    with ``restart``); this process's own now while the store cannot be reached."""
    from newsfeed.feed.activity import dataset_mark

    try:
        return state.anchor(f"clock:{dataset_mark(data_dir)}", time.time(), replace=restart)
    except StateError:
        return time.time()


def open_clock(kind: str | None, data_end_unix: float | None, state, data_dir: Path) -> Clock | SimulatedClock:
    """The clock of ``kind`` (see the module's docstring) for a dataset that ended at
    ``data_end_unix``; ``state``: the shared store its time is kept in."""
    from newsfeed.feed.activity import dataset_mark

    kind = clock_kind(kind)
    now = time.time()
    end = data_end_unix if data_end_unix is not None else now
    if kind == "simulated":
        return SimulatedClock(state, f"clock:simulated:{dataset_mark(data_dir)}", end)
    old = data_end_unix is not None and data_end_unix < now - 86_400
    if kind == "wall" or (kind == "auto" and not old):
        return Clock("wall")
    return Clock("replayed", end - replay_started(state, data_dir))
