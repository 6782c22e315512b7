"""What a served feed causes, apart from its answer: its posts become seen (in the shared
user-state store), it is logged as impressions (what monitoring and off-policy evaluation
read), and a shadow arm is scored on the same request off the request's path."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from newsfeed.feed.arms import Arm
from newsfeed.feed.context import FeedContext
from newsfeed.feed.user_state import StateError, UserState

LOGGED_ITEM_FIELDS = ("post_id", "position", "score", "source", "show_probability", "team")


class FeedEffects:
    def __init__(self, state: UserState, log, run: Callable[[Arm, FeedContext], FeedContext]):
        self.state, self.log, self.run = state, log, run
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow")

    def served(self, ctx: FeedContext, response: dict, experiment_version: int) -> None:
        """Mark the page seen (a failure is owned up to in ``response["degraded"]``: the cursor
        still keeps this session's pages apart) and log it."""
        request = ctx.request
        try:
            self.state.mark_seen(request.user_id, ctx.candidates.post_ids, request.now_unix)
        except StateError as err:
            response["degraded"].append(f"user_state: page not marked seen ({str(err)[:200]})")
        self.log.write({"request_id": request.request_id, "ts": request.now_unix, "user_id": request.user_id,
                        "arm": ctx.arm, "experiment_version": experiment_version,
                        "model_versions": ctx.model_versions, "degraded": response["degraded"],
                        "latency_ms": round(sum(ctx.timings_ms.values()), 3),
                        "items": [{k: it[k] for k in LOGGED_ITEM_FIELDS if k in it} for it in response["items"]]})

    def shadow(self, arm: Arm, ctx: FeedContext) -> None:
        """Score ``arm`` on a copy of the request in the background; log what it would have shown."""
        self._background.submit(self._shadow, arm, ctx)

    def drain(self) -> None:
        """Wait for the shadow work queued so far (tests, shutdown)."""
        self._background.submit(lambda: None).result()

    def _shadow(self, arm: Arm, ctx: FeedContext) -> None:
        ctx = self.run(arm, ctx)
        self.log.write({"request_id": ctx.request.request_id, "ts": ctx.request.now_unix,
                        "user_id": ctx.request.user_id, "arm": arm.name, "shadow": True,
                        "model_versions": ctx.model_versions, "degraded": ctx.degraded,
                        "items": [{"post_id": int(p), "position": i, "score": float(s)}
                                  for i, (p, s) in enumerate(zip(ctx.candidates.post_ids,
                                                                 np.asarray(ctx.candidates.score)))]})
