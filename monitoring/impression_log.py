"""The impressions an experiment is analysed on: a data folder's canonical table, or what a
home's servers logged (``<home>/serving/impressions``) joined to the reactions that came back
through the event log."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from newsfeed.errors import NewsfeedError


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
    logged for that user and post after that showing (see served_data.labelled)."""
    from newsfeed.feed.served_data import labelled, read_events_or_none, served_records
    from newsfeed.feed.served_log import serving_dir

    records = served_records(home)
    if not records:
        raise NewsfeedError(f"{serving_dir(home) / 'impressions'}: no served impressions (serve traffic first, or "
                            "pass --data-dir)")
    frame = labelled(records, read_events_or_none(data_dir))
    frame["request_id"] = pd.factorize(frame["request_id"])[0].astype(np.int64)
    return frame
