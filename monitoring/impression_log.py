"""The impressions an experiment is analysed on: a data folder's canonical table, or what a
home's servers logged (``<home>/serving/impressions``) joined to the reactions that came back
through the event log."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from newsfeed.errors import NewsfeedError
from newsfeed.schema import REACTIONS


def from_data_dir(data_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(impressions, posts) of a data folder."""
    from newsfeed.data.io import read_dataset

    try:
        tables = read_dataset(Path(data_dir), ("impressions", "posts"))
    except FileNotFoundError as err:
        raise NewsfeedError(str(err)) from None
    if "impressions" not in tables:
        raise NewsfeedError(f"{data_dir}: no impressions table")
    return tables["impressions"], tables.get("posts")


def from_served_log(home: Path, data_dir: Path) -> pd.DataFrame:
    """One row per post a server showed (shadow arms left out), labelled by the reactions
    logged for that user and post after it was shown."""
    from newsfeed.data.event_log import read_events
    from newsfeed.feed.served_log import ServedLog

    log = ServedLog(home)
    records = [r for r in log.read() if not r.get("shadow")]
    if not records:
        raise NewsfeedError(f"{log.directory}: no served impressions (serve traffic first, or pass --data-dir)")
    rows = [{"request_id": r["request_id"], "user_id": r["user_id"], "ts": r["ts"], "variant": r["arm"],
             "model_version": (r.get("model_versions") or {}).get("ranker", ""), "degraded": bool(r.get("degraded")),
             "latency_ms": r.get("latency_ms", np.nan), "post_id": item["post_id"], "position": item["position"],
             "propensity": item.get("show_probability", np.nan)}
            for r in records for item in r["items"]]
    frame = pd.DataFrame(rows)
    frame["ts"] = pd.to_datetime(frame["ts"], unit="s", utc=True)
    frame["request_id"] = pd.factorize(frame["request_id"])[0].astype(np.int64)
    try:
        events = read_events(data_dir)
    except FileNotFoundError:
        events = pd.DataFrame(columns=["user_id", "post_id", "event_type", "value", "ts"])
    events = events.assign(ts=pd.to_datetime(events["ts"], utc=True))
    first_shown = frame.groupby(["user_id", "post_id"])["ts"].min().rename("shown").reset_index()
    after = events.merge(first_shown, on=["user_id", "post_id"])
    after = after[after["ts"] >= after["shown"]]  # a reaction counts for what it followed
    reacted = after[after["event_type"].isin(REACTIONS)].assign(value=1).pivot_table(
        index=["user_id", "post_id"], columns="event_type", values="value", aggfunc="max")
    dwell = after[after["event_type"] == "dwell"].groupby(["user_id", "post_id"])["value"].sum()
    labels = reacted.reindex(columns=list(REACTIONS)).join(dwell.rename("dwell_seconds"), how="outer")
    frame = frame.merge(labels.reset_index(), on=["user_id", "post_id"], how="left")
    frame[list(REACTIONS)] = frame[list(REACTIONS)].apply(pd.to_numeric).fillna(0).astype(np.int8)
    frame["dwell_seconds"] = pd.to_numeric(frame["dwell_seconds"]).fillna(0.0)
    return frame
