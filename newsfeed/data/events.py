"""The raw reaction log (events) derived from labelled impressions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from newsfeed.schema import REACTIONS


def events_from_impressions(impressions: pd.DataFrame, delay_seconds: np.ndarray | None = None) -> pd.DataFrame:
    """One event per reaction label set, plus a dwell event for each click with a known dwell.

    ``delay_seconds`` (one per impression) places reactions after the impression;
    without it they carry the impression's time. Dwell ends after the dwell.
    """
    # int64 nanoseconds throughout: tz-aware timestamps as numpy objects are ~100x slower.
    ts = impressions["ts"].astype("datetime64[ns, UTC]").array.asi8
    delay = np.zeros(len(ts), np.int64) if delay_seconds is None else (np.asarray(delay_seconds) * 1e9).astype(np.int64)
    dwell = impressions["dwell_seconds"].to_numpy(np.float64)
    rows, kinds, values, times = [], [], [], []
    for r in REACTIONS:
        hit = np.flatnonzero(impressions[r].to_numpy() == 1)
        rows.append(hit), kinds.append(np.full(len(hit), r, dtype=object))
        values.append(np.ones(len(hit))), times.append(ts[hit] + delay[hit])
    hit = np.flatnonzero((impressions["click"].to_numpy() == 1) & ~np.isnan(dwell))
    rows.append(hit), kinds.append(np.full(len(hit), "dwell", dtype=object))
    values.append(dwell[hit]), times.append(ts[hit] + (dwell[hit] * 1e9).astype(np.int64))
    row = np.concatenate(rows)
    events = pd.DataFrame({
        "user_id": impressions["user_id"].to_numpy()[row],
        "post_id": impressions["post_id"].to_numpy()[row],
        "event_type": np.concatenate(kinds),
        "value": np.concatenate(values),
        "ts": pd.to_datetime(np.concatenate(times), utc=True),
    })
    return events.sort_values("ts", kind="stable").reset_index(drop=True)
