"""The two windows drift compares, as frames of impressions with the features they were
served with (joined point-in-time through Feast), the champion ranker's predictions and the
realised reactions.

Reference: by default the champion's training window, read from its registry lineage (the
data folder and the split it was trained on). Current: the most recent impressions.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from newsfeed.errors import NewsfeedError
from newsfeed.features import catalog
from newsfeed.schema import REACTIONS

SAMPLE = 5_000
"""Impressions compared per window (seeded sample): enough for the distance tests Evidently
picks above 1,000 rows, small enough to join and score in seconds."""
PREDICTIONS = (*(f"p_{r}" for r in REACTIONS), "engagement_score")
TARGETS = REACTIONS


class DriftError(NewsfeedError, ValueError):
    """Windows that cannot be compared: no champion, empty windows, unreadable data."""


@dataclass(frozen=True)
class Window:
    name: str
    source: str  # where its impressions came from
    start: pd.Timestamp
    end: pd.Timestamp
    impressions: int  # in the window, before sampling
    frame: pd.DataFrame  # features, predictions and labels of the sampled impressions
    data_start: pd.Timestamp  # the first day of its data: how mature its trailing features are

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "start": self.start.isoformat(),
                "end": self.end.isoformat(), "impressions": self.impressions, "compared": len(self.frame),
                "data_start": self.data_start.isoformat()}


def champion_lineage(registry, name: str = "newsfeed-ranker") -> dict:
    """The champion's version, data folder and training window (from its registry tags)."""
    version = registry.version(name, "champion")
    split = version.tags.get("split")
    if not split or "data_dir" not in version.tags:
        raise DriftError(f"{name} version {version.version} has no lineage (data_dir, split) to find its training "
                         "window; pass --reference")
    bounds = ast.literal_eval(split)  # logged as a Python dict's text
    return {"version": str(version.version), "data_dir": Path(version.tags["data_dir"]),
            "start": pd.Timestamp(bounds["start"]), "end": pd.Timestamp(bounds["val_start"])}


# -- feature columns compared, by kind --------------------------------------------------------

CATEGORICAL = ("user_profile__age_bucket", "user_profile__gender", "user_profile__country", "user_profile__language",
               "post_content__topic", "post_content__media_type", "user_top_interest_7d")
DERIVED_NUMERIC = ("post_age_hours", "interest_7d_in_post_topic")


def maturity_days(column: str) -> float:
    """Days of history a trailing feature needs before its distribution settles: its window
    (``_7d``: 7), or two half-lives for the decayed topic-interest rates; 0 for the rest."""
    for window, days in catalog.WINDOWS.items():
        if column.endswith(f"_{window}"):
            return float(days)
    if column.endswith(("topic_interest_rate", "topic_affinity_rate")):
        return 2 * catalog.INTEREST_HALF_LIFE_DAYS
    return 0.0


IMMATURE_SHARE = 0.05
"""A trailing feature is compared when at most this share of a window's rows came before it
had its full history."""


def mature(window: "Window", column: str) -> bool:
    filled = window.data_start + pd.Timedelta(days=maturity_days(column))
    return float((window.frame["event_timestamp"] < filled).mean()) <= IMMATURE_SHARE


def compared_numeric(frame: pd.DataFrame, windows: tuple["Window", ...] = ()) -> list[str]:
    """Numeric served features compared: rates, means and derived values, mature in every
    one of ``windows``.
    Counts (and log counts) are left out, and so are trailing features still filling up:
    both grow with the platform's history, so an older window differs from a newer one
    whatever users do."""
    return [c for c in frame.columns if "__" in c and pd.api.types.is_numeric_dtype(frame[c])
            and c not in CATEGORICAL and ("_rate" in c or "dwell_mean" in c)
            and all(mature(w, c) for w in windows)] + list(DERIVED_NUMERIC)


def with_derived(frame: pd.DataFrame) -> pd.DataFrame:
    """Scalars from the served list features: the user's strongest topic over the last 7 days,
    their 7-day interest in the shown post's topic, and the post's age when shown."""
    vectors = frame["user_engagement__topic_interest_7d"].to_numpy()
    topic = frame["post_content__topic_id"].to_numpy(np.int64)
    top = np.full(len(frame), -1)
    match = np.zeros(len(frame))
    for i, vector in enumerate(vectors):  # one short vector per row; 5,000 rows take ~10 ms
        if vector is not None and len(vector) and np.max(vector) > 0:
            top[i] = int(np.argmax(vector))
            if 0 <= topic[i] < len(vector):
                match[i] = float(vector[topic[i]])
    return frame.assign(user_top_interest_7d=top.astype(str), interest_7d_in_post_topic=match,
                        post_age_hours=(frame["request_unix"] - frame["post_content__created_unix"]) / 3600.0,
                        user_profile__age_bucket=frame["user_profile__age_bucket"].astype(str))


# -- building a window ------------------------------------------------------------------------

def _joined(store, tables: dict[str, pd.DataFrame], start, end, seed: int) -> tuple[pd.DataFrame, int, pd.Timestamp]:
    """A sample of the impressions in [start, end) with their point-in-time features (the
    home's feature store: they must be impressions it has features for)."""
    from newsfeed.features import training_set

    impressions = tables["impressions"]
    ts = pd.to_datetime(impressions["ts"], utc=True)
    inside = impressions[(ts >= start) & (ts < end)]
    if inside.empty:
        raise DriftError(f"no impressions between {start} and {end}")
    picked = inside.sample(min(SAMPLE, len(inside)), random_state=seed)
    entities = training_set.entity_frame(picked, tables["posts"])
    joined = training_set.build(store, entities.sort_values("event_timestamp", kind="stable"), "ranker")
    # Trailing features are daily snapshots: their history counts from the first day's start.
    return joined.reset_index(drop=True), len(inside), ts.min().floor("D")


def _tables(folder: Path) -> dict[str, pd.DataFrame]:
    from newsfeed.data.io import read_dataset

    try:
        tables = read_dataset(folder, ("impressions", "posts"))
    except FileNotFoundError as err:
        raise DriftError(str(err)) from None
    if "impressions" not in tables or tables["impressions"].empty:
        raise DriftError(f"{folder}: no impressions")
    return tables


def _score(frame: pd.DataFrame, model, weights: dict) -> pd.DataFrame:
    from newsfeed.scoring import engagement_score

    predicted = model.predict(frame, logged_position=True)
    columns = {f"p_{r}": predicted[f"p_{r}"].to_numpy() for r in REACTIONS}
    return frame.assign(**columns, engagement_score=engagement_score(columns, weights))


AGAINST = ("training", "previous")


def build(store, registry, data_dir: Path, reference: Path | None = None, current: Path | None = None,
          current_days: float = 1.0, reference_days: float = 3.0, seed: int = 0,
          against: str = "training") -> tuple[Window, Window, dict]:
    """(reference, current, champion lineage). By default the reference is the last
    ``reference_days`` of the champion's training window (0: all of it) and the current window
    the last ``current_days`` of ``data_dir``; ``reference`` / ``current`` name data folders
    whose impressions are compared whole instead. ``against="previous"``: the reference is the
    ``reference_days`` of ``data_dir`` just before the current window (traffic against its own
    recent past: a new serving policy is no drift of the world, the training window's logging
    policy would make it look like one)."""
    if against not in AGAINST:
        raise DriftError(f"against {against!r}: expected one of {', '.join(AGAINST)}")
    if against == "previous" and (reference is not None or current is not None or reference_days <= 0):
        raise DriftError("against the previous days: no --reference or --current folder, and --reference-days > 0")
    from newsfeed.models.registered import load_registered

    lineage = champion_lineage(registry)
    model, weights, _ = load_registered(registry, "newsfeed-ranker", lineage["version"])
    whole = (pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC"))
    ref_dir, cur_dir = Path(reference or lineage["data_dir"]), Path(current or data_dir)
    tables = {folder: _tables(folder) for folder in {ref_dir, cur_dir}}  # each folder read once
    if reference is None:
        start = lineage["start"] if reference_days <= 0 else max(
            lineage["start"], lineage["end"] - pd.Timedelta(days=reference_days))
        ref_span = (start, lineage["end"])
    else:
        ref_span = whole
    if current is None:
        last = pd.to_datetime(tables[cur_dir]["impressions"]["ts"], utc=True).max()
        cur_span = (last - pd.Timedelta(days=current_days), last + pd.Timedelta(seconds=1))
    else:
        cur_span = whole
    if against == "previous":
        ref_dir, ref_span = cur_dir, (cur_span[0] - pd.Timedelta(days=reference_days), cur_span[0])
    windows = []
    for name, folder, span in (("reference", ref_dir, ref_span), ("current", cur_dir, cur_span)):
        try:
            frame, count, data_start = _joined(store, tables[folder], *span, seed)
        except DriftError as err:
            raise DriftError(f"{folder}: {err}") from None
        frame = _score(with_derived(frame), model, weights)
        ts = frame["event_timestamp"]
        windows.append(Window(name, str(folder), ts.min(), ts.max(), count, frame, data_start))
    return windows[0], windows[1], lineage
