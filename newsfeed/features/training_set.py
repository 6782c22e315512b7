"""Point-in-time correct training sets: impressions joined to features through Feast."""

from __future__ import annotations

import numpy as np
import pandas as pd

from newsfeed.features import catalog
from newsfeed.schema import ORACLE_COLUMNS, REACTIONS

LABELS: tuple[str, ...] = (*REACTIONS, "dwell_seconds", "skip")
ROW = "entity_row"
"""A column the join carries to put its rows back in the entities' order."""
CONTEXT: tuple[str, ...] = ("request_id", "position")
"""Impression context carried beside the features (not features: the ranker learns position bias from it)."""


def entity_frame(impressions: pd.DataFrame, posts: pd.DataFrame) -> pd.DataFrame:
    """One row per impression: its entity keys, its time (also the request time) and its labels."""
    authors = posts.set_index("post_id")["author_id"].astype("Int64")
    ts = impressions["ts"].astype("datetime64[ns, UTC]")
    frame = pd.DataFrame({
        "impression_id": impressions["impression_id"].to_numpy(np.int64),
        "user_id": impressions["user_id"].to_numpy(np.int64),
        "post_id": impressions["post_id"].to_numpy(np.int64),
        # -1: a catalogue item with no author has no user-author affinity.
        "author_id": authors.reindex(impressions["post_id"].to_numpy()).fillna(-1).to_numpy(np.int64),
        # Feast keeps microseconds; flooring only ever moves the cut-off earlier.
        catalog.TIMESTAMP: ts.dt.floor("us").to_numpy(),
        "request_unix": ts.array.asi8 // 10**9,
    })
    carried = [c for c in (*CONTEXT, *LABELS, *ORACLE_COLUMNS) if c in impressions.columns]
    return pd.concat([frame, impressions[carried].reset_index(drop=True)], axis=1)


def build(store, entities: pd.DataFrame, service: str | list[str] = "ranker") -> pd.DataFrame:
    """Every feature of ``service`` (a feature service name, or a list of ``view:feature``
    references) as of each row's timestamp, one output row per input row."""
    features = store.get_feature_service(service) if isinstance(service, str) else service
    entities = entities.assign(**{ROW: np.arange(len(entities))})
    joined = store.get_historical_features(entity_df=entities, features=features, full_feature_names=True).to_df()
    if len(joined) != len(entities):
        # Some offline stores drop an entity row that has no earlier feature row (Feast's
        # file store does); never hand a model a silently shorter training set.
        missing = len(entities) - len(joined)
        raise RuntimeError(f"the feature join returned {len(joined):,} rows for {len(entities):,} impressions "
                           f"({missing:,} lost); are the feature tables older than the impressions?")
    # Back in the entities' order, with their own timestamps: DuckDB hands them back in
    # microseconds, where the contract (and every `.asi8` that turns them into nanoseconds)
    # has nanoseconds.
    joined = joined.sort_values(ROW, kind="stable").reset_index(drop=True)
    joined[catalog.TIMESTAMP] = entities[catalog.TIMESTAMP].to_numpy()
    return joined.drop(columns=ROW)

