"""The experiment's lifecycle: a versioned store changed only by compare-and-swap, what each
replica follows, and the rules of rolling a challenger back or promoting it. The command
line, the admin API and monitoring's guardrails all change the experiment through here.

A change names the version it was based on; if another writer saved a newer one first, the
change is refused with ``VersionConflict`` (HTTP 409, the current version in its ``ETag``)
instead of silently overwriting it. Embedded: ``<home>/serving/experiment.yaml`` under an
exclusive file lock, every version also kept as ``experiments/v<N>.yaml``. Production: one
Redis key, changed in a WATCH/MULTI transaction, versions kept in a Redis list.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import yaml

from newsfeed import atomic
from newsfeed.errors import first_line, NewsfeedError
from newsfeed.feed.arms import Experiment
from newsfeed.feed.user_state import (DEFAULT_PREFIX, DEFAULT_REDIS, PREFIX_ENV, REDIS_ENV, StateError, no_retry,
                                      state_kind)

CHECK_SECONDS = 0.5
"""How often a replica looks for a newer version: every replica follows a change within a second."""


class VersionConflict(NewsfeedError):
    """A change based on a version that is no longer the current one."""

    def __init__(self, expected: int, current: Experiment):
        super().__init__(f"the experiment changed: this change was based on version {expected}, the current "
                         f"version is {current.version}; read it again and retry")
        self.expected, self.current = expected, current


class ExperimentBackend(Protocol):
    where: str

    def load(self) -> Experiment: ...

    def swap(self, experiment: Experiment, expected: int | None) -> Experiment: ...


class FileExperiments:
    def __init__(self, home: Path):
        self.path = Path(home).resolve() / "serving" / "experiment.yaml"
        self.where = str(self.path)

    def load(self) -> Experiment:
        try:
            return Experiment.model_validate(yaml.safe_load(self.path.read_text()) or {})
        except FileNotFoundError:
            return Experiment()
        except (ValueError, yaml.YAMLError) as err:
            raise NewsfeedError(f"{self.path}: not a valid experiment: {first_line(err)}") from None

    @contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(".experiment.lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def swap(self, experiment: Experiment, expected: int | None) -> Experiment:
        with self._locked():
            current = self.load()
            if expected is not None and expected != current.version:
                raise VersionConflict(expected, current)
            saved = experiment.model_copy(update={"version": current.version + 1})
            text = yaml.safe_dump(saved.model_dump(mode="json"), sort_keys=False)
            atomic.write_text(self.path.parent / "experiments" / f"v{saved.version}.yaml", text)
            atomic.write_text(self.path, text)
        return saved


class RedisExperiments:
    def __init__(self, address: str = DEFAULT_REDIS, prefix: str = DEFAULT_PREFIX, timeout: float = 2.0):
        import redis

        host, _, port = address.partition(":")
        self.client = redis.Redis(host=host or "127.0.0.1", port=int(port or 6379), socket_timeout=timeout,
                                  socket_connect_timeout=timeout, retry=no_retry())
        self.key, self.where = f"{prefix}:experiment", f"Redis at {address}"
        self._errors = (redis.RedisError, OSError)

    def load(self) -> Experiment:
        try:
            raw = self.client.get(self.key)
        except self._errors as err:
            raise StateError(f"the experiment store ({self.where}) cannot be reached: {err}") from None
        return Experiment.model_validate_json(raw) if raw else Experiment()

    def swap(self, experiment: Experiment, expected: int | None) -> Experiment:
        import redis

        try:
            with self.client.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(self.key)
                        raw = pipe.get(self.key)
                        current = Experiment.model_validate_json(raw) if raw else Experiment()
                        if expected is not None and expected != current.version:
                            raise VersionConflict(expected, current)
                        saved = experiment.model_copy(update={"version": current.version + 1})
                        text = saved.model_dump_json()
                        pipe.multi()
                        pipe.set(self.key, text)
                        pipe.rpush(f"{self.key}:history", text)
                        pipe.execute()
                        return saved
                    except redis.WatchError:
                        continue  # another writer got in between: look again (it may now conflict)
        except self._errors as err:
            raise StateError(f"the experiment store ({self.where}) cannot be reached: {err}") from None


class ExperimentStore:
    """The experiment as every replica sees it: ``current()`` (cached, re-read at most every
    ``CHECK_SECONDS``), ``read()`` (now), ``save(experiment, expected)`` (compare-and-swap)."""

    def __init__(self, backend: ExperimentBackend):
        self.backend = backend
        self._lock = threading.Lock()
        self._cached, self._checked = None, 0.0

    @classmethod
    def open(cls, home: Path, kind: str | None = None) -> "ExperimentStore":
        if state_kind(kind) == "embedded":
            return cls(FileExperiments(home))
        return cls(RedisExperiments(os.environ.get(REDIS_ENV) or DEFAULT_REDIS,
                                    os.environ.get(PREFIX_ENV) or DEFAULT_PREFIX))

    def read(self) -> Experiment:
        return self.backend.load()

    def current(self) -> Experiment:
        """The cached experiment; when the store cannot be read, the last one read keeps serving."""
        now = time.monotonic()
        if self._cached is not None and now - self._checked < CHECK_SECONDS:
            return self._cached
        with self._lock:
            if self._cached is None or now - self._checked >= CHECK_SECONDS:
                self._checked = now
                try:
                    self._cached = self.backend.load()
                except NewsfeedError:  # unreachable (StateError) or unreadable
                    if self._cached is None:
                        self._cached = Experiment()
        return self._cached

    def save(self, experiment: Experiment, expected: int | None = None) -> Experiment:
        """Store ``experiment`` as the next version. ``expected``: the version it was based on
        (None: whatever is current, for a whole new experiment)."""
        saved = self.backend.swap(experiment, expected)
        with self._lock:
            self._cached, self._checked = saved, time.monotonic()
        return saved

    def update(self, change, attempts: int = 5) -> Experiment:
        """Read, ``change(experiment) -> experiment``, save based on what was read; retried when
        another writer got in between (``change`` sees their version)."""
        for _ in range(attempts - 1):
            current = self.read()
            try:
                return self.save(change(current), current.version)
            except VersionConflict:
                continue
        current = self.read()
        return self.save(change(current), current.version)


# -- the rules: rollback and promotion --------------------------------------------------------------

def control_arm(experiment: Experiment) -> str:
    """The arm serving the champions (by name ``champion`` or by its models), else the first."""
    if experiment.arm("champion"):
        return "champion"
    return next((a.name for a in experiment.arms if a.ranker == "champion"), experiment.arms[0].name)


def rolled_back(experiment: Experiment, arms: list[str]) -> Experiment:
    """``arms`` at share 0, the control taking their traffic."""
    control = control_arm(experiment)
    if control in arms or any(experiment.arm(a) is None for a in arms):
        raise NewsfeedError(f"cannot roll back {arms}: arms are {[a.name for a in experiment.arms]}, "
                            f"control {control!r}")
    shares = {a: 0.0 for a in arms}
    shares[control] = experiment.arm(control).share + sum(experiment.arm(a).share for a in arms)
    return experiment.with_shares(shares)


def all_to_control(experiment: Experiment) -> Experiment:
    """After a promotion: the control arm (now serving the promoted models) takes all traffic."""
    control = control_arm(experiment)
    return experiment.with_shares({a.name: (100.0 if a.name == control else 0.0) for a in experiment.arms})


def challengers(experiment: Experiment) -> list[str]:
    """Arms with traffic that serve other models than the control (baselines are not challengers)."""
    control = experiment.arm(control_arm(experiment))
    return [a.name for a in experiment.arms if a.name != control.name and a.share > 0 and a.policy == "model"
            and (a.two_tower, a.ranker) != (control.two_tower, control.ranker)]


def promote(store: "ExperimentStore", registry, arm: str) -> tuple[dict[str, str], Experiment]:
    """Make ``arm``'s models the champions (registry aliases) and give the control arm, which
    serves the champions, all traffic; (versions by model name, the saved experiment)."""
    from newsfeed.registry import RANKER, TWO_TOWER

    experiment = store.read()
    chosen = experiment.arm(arm)
    if chosen is None:
        raise NewsfeedError(f"no arm {arm!r}: arms are {[a.name for a in experiment.arms]}")
    versions = {name: str(registry.version(name, ref).version) for name, ref in ((TWO_TOWER, chosen.two_tower),
                                                                                 (RANKER, chosen.ranker))}
    for name, version in versions.items():
        registry.set_alias(name, "champion", version)
    return versions, store.save(all_to_control(experiment), experiment.version)


def etag(experiment: Experiment) -> str:
    return f'"{experiment.version}"'


def parse_if_match(header: str | None) -> int | None:
    """The version an ``If-Match`` header names (``"7"``, ``W/"7"`` or ``7``); None when absent
    or ``*``. A value that is no version of ours raises ValueError."""
    if header is None or header.strip() in ("", "*"):
        return None
    value = header.strip().removeprefix("W/").strip('"')
    if not value.isdigit() or len(value) > 18:
        raise ValueError(f"If-Match: expected an ETag this service sent (a quoted version), got {header[:40]!r}")
    return int(value)

