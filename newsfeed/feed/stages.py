"""The Stage protocol and the executor that runs a feed pipeline.

A stage takes the request context and changes it (adds, drops, scores or reorders
candidates). The executor times each one and turns a stage that raises into a recorded
degradation, so one broken stage costs its own contribution, never the request. A stage
that reads a service (the user's online features) is a ``Loader``: its read runs with a
deadline on a worker thread and, when late or failing, its ``fallback`` applies instead;
the late read can no longer touch the context, because only ``apply`` does.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from enum import Enum, IntEnum
from typing import Any, Protocol, runtime_checkable

from newsfeed.feed.context import FeedContext


class Slot(IntEnum):
    """Where a stage sits in the pipeline; a pipeline's stages come in slot order."""

    HYDRATE = 0  # read the user
    SOURCES = 1  # candidates
    FILTERS = 2  # what must never be shown
    BACKFILL = 3  # too few left: more
    PRERANK = 4  # cut to the ranker's budget
    RANK = 5  # the heavy ranker
    RERANK = 6  # order, boosts, diversity, exploration
    SELECT = 7  # the page


class Group(str, Enum):
    """What a chained deployment runs: a range of slots (one Ray Serve deployment each)."""

    RETRIEVAL = "retrieval"
    RANKING = "ranking"
    RERANKING = "reranking"

    @property
    def slots(self) -> range:
        first, last = GROUP_SLOTS[self]
        return range(first, last + 1)


GROUP_SLOTS = {Group.RETRIEVAL: (Slot.HYDRATE, Slot.PRERANK), Group.RANKING: (Slot.RANK, Slot.RANK),
               Group.RERANKING: (Slot.RERANK, Slot.SELECT)}
GROUPS: tuple[Group, ...] = tuple(Group)


def in_groups(stage, groups: tuple[Group, ...]) -> bool:
    return any(stage.slot in g.slots for g in groups)


@runtime_checkable
class Stage(Protocol):
    name: str  # a label for timings, metrics and degradations
    slot: Slot

    def __call__(self, ctx: FeedContext) -> None: ...


@runtime_checkable
class Loader(Protocol):
    name: str
    slot: Slot
    timeout_ms: float

    def load(self, ctx: FeedContext) -> Any: ...

    def apply(self, ctx: FeedContext, value: Any) -> None: ...

    def fallback(self, ctx: FeedContext) -> None: ...


_io = ThreadPoolExecutor(max_workers=4, thread_name_prefix="feed-io")


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160]}" if text else type(err).__name__


def run_stage(stage, ctx: FeedContext) -> None:
    t0 = time.perf_counter()
    if isinstance(stage, Loader):
        future = _io.submit(stage.load, ctx)
        try:
            value = future.result(timeout=stage.timeout_ms / 1000.0)
        except FutureTimeout:
            ctx.degrade(stage.name, f"no answer within {stage.timeout_ms:g} ms; defaults used")
            stage.fallback(ctx)
        except Exception as err:  # noqa: BLE001 - a failing read degrades to the fallback
            ctx.degrade(stage.name, f"{_short(err)}; defaults used")
            stage.fallback(ctx)
        else:
            stage.apply(ctx, value)
    else:
        try:
            stage(ctx)
        except Exception as err:  # noqa: BLE001 - a failing stage is skipped, the request goes on
            ctx.degrade(stage.name, _short(err))
    ctx.timings_ms[stage.name] = ctx.timings_ms.get(stage.name, 0.0) + (time.perf_counter() - t0) * 1000.0


def run_pipeline(stages, ctx: FeedContext) -> FeedContext:
    """Run ``stages`` in order on ``ctx`` and return it (a remote stage returns a new one)."""
    for stage in stages:
        returned = _remote_result(stage, ctx)
        if returned is not None:
            ctx = returned
        else:
            run_stage(stage, ctx)
    return ctx


def _remote_result(stage, ctx: FeedContext) -> FeedContext | None:
    """A stage group behind a handle (chained mode) gives back the context it changed."""
    call = getattr(stage, "call_remote", None)
    if call is None:
        return None
    t0 = time.perf_counter()
    try:
        out = call(ctx)
    except Exception as err:  # noqa: BLE001 - a failed hop degrades like a failed stage
        ctx.degrade(stage.name, _short(err))
        out = ctx
    # The hop's own cost: its wall time less the stages it ran (transport, queueing, pickling).
    out.timings_ms[stage.name] = (time.perf_counter() - t0) * 1000.0 - sum(
        v for k, v in out.timings_ms.items() if k not in ctx.timings_ms)
    return out


class RemoteGroup:
    """A stage group run elsewhere (chained mode: a deployment, through its handle), placed in
    a pipeline like a stage: ``call(ctx)`` returns the context the group changed."""

    def __init__(self, call, group: Group):
        self.call, self.group, self.name = call, group, f"hop:{group.value}"

    def call_remote(self, ctx: FeedContext) -> FeedContext:
        return self.call(ctx)
