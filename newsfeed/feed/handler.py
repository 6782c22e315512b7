"""A feed response from a run pipeline: the page's items and the next cursor. No side
effects (``effects.py`` marks the page seen and logs it)."""

from __future__ import annotations

import numpy as np

from newsfeed.feed.context import SOURCES, FeedContext
from newsfeed.feed.corpus import PostCorpus
from newsfeed.feed.cursor import CursorCodec


def page_items(ctx: FeedContext, corpus: PostCorpus) -> list[dict]:
    c = ctx.candidates
    return [{"post_id": int(p), "score": round(float(s), 4) if np.isfinite(s) else None, "source": SOURCES[src],
             "author_id": int(corpus.author_ids[r]), "topic_id": int(corpus.topic_ids[r]),
             "topic": str(corpus.topic_names[r]), "position": i, "show_probability": round(float(q), 6),
             "reason": "new_comments" if int(p) in ctx.user.new_comments else "new",
             **({"team": ctx.teams[i]} if ctx.teams else {})}
            for i, (p, s, src, r, q) in enumerate(zip(c.post_ids, c.score, c.sources, c.rows, c.show_probability))]


def response(ctx: FeedContext, corpus: PostCorpus, cursors: CursorCodec) -> dict:
    """``POST /v1/feed``'s answer; the next cursor holds this page and every earlier one."""
    request, items = ctx.request, page_items(ctx, corpus)
    shown = np.concatenate([request.exclude, ctx.candidates.post_ids])
    return {"request_id": request.request_id, "user_id": request.user_id, "arm": ctx.arm,
            "model_versions": ctx.model_versions, "items": items, "degraded": ctx.degraded,
            "next_cursor": cursors.encode(request.user_id, shown) if items else None,
            "timings_ms": {k: round(v, 3) for k, v in ctx.timings_ms.items()},
            **({"explain": ctx.explain} if request.explain else {})}
