"""Online reads shaped the way serving makes them: one reader, many candidate posts."""

from __future__ import annotations

import numpy as np
import pandas as pd


def post_authors(store, post_ids: list[int]) -> np.ndarray:
    """Each post's author from the online store (-1: unknown post or no author)."""
    frame = store.get_online_features(features=["post_content:written_by"],
                                      entity_rows=[{"post_id": int(p)} for p in post_ids]).to_df()
    return pd.to_numeric(frame["written_by"], errors="coerce").fillna(-1).to_numpy(np.int64)


def ranker_rows(store, user_id: int, post_ids: list[int], request_time: pd.Timestamp,
                authors: np.ndarray | None = None, service: str = "ranker") -> pd.DataFrame:
    """The ranker's features for (user, post) pairs in one call; ``authors`` saves a lookup
    when the caller already holds them (serving keeps post features in memory)."""
    if authors is None:
        authors = post_authors(store, post_ids)
    request_unix = int(pd.Timestamp(request_time).value // 10**9)
    rows = [{"user_id": int(user_id), "post_id": int(p), "author_id": int(a), "request_unix": request_unix}
            for p, a in zip(post_ids, authors)]
    return store.get_online_features(features=store.get_feature_service(service), entity_rows=rows,
                                     full_feature_names=True).to_df()
