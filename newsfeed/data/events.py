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
    delay = pd.to_timedelta(np.zeros(len(impressions)) if delay_seconds is None else delay_seconds, unit="s")
    ts = impressions["ts"] + delay
    parts = []
    for r in REACTIONS:
        hit = (impressions[r] == 1).to_numpy()
        parts.append(pd.DataFrame({
            "user_id": impressions["user_id"].to_numpy()[hit], "post_id": impressions["post_id"].to_numpy()[hit],
            "event_type": r, "value": 1.0, "ts": ts.to_numpy()[hit],
        }))
    dwell = impressions["dwell_seconds"]
    hit = ((impressions["click"] == 1) & dwell.notna()).to_numpy()
    parts.append(pd.DataFrame({
        "user_id": impressions["user_id"].to_numpy()[hit], "post_id": impressions["post_id"].to_numpy()[hit],
        "event_type": "dwell", "value": dwell.to_numpy()[hit],
        "ts": (impressions["ts"] + pd.to_timedelta(dwell.fillna(0), unit="s")).to_numpy()[hit],
    }))
    events = pd.concat([p for p in parts if len(p)] or parts[:1], ignore_index=True)
    events["ts"] = pd.to_datetime(events["ts"], utc=True)
    return events.sort_values("ts", kind="stable").reset_index(drop=True)
