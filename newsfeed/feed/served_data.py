"""What was served, as data: the served log's impressions labelled by the reactions that came
back through the event log (what experiment reports read), and absorbed into the data
folder's impression log (what the next training run and the drift check read), so a model is
retrained on the traffic it and its rivals served."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from newsfeed import atomic
from newsfeed.data import table_log
from newsfeed.feed.served_log import ServedLog
from newsfeed.schema import REACTIONS, SKIP_DWELL_SECONDS, conform

ATTRIBUTION_SECONDS = 600.0
"""A served impression joins the data once the service's time has moved this far past it: the
reactions it draws come within (a simulator's at once, a person's within minutes)."""
WATERMARK = "absorbed.json"


def served_records(home: Path) -> list[dict]:
    """The shown requests of the served log (shadow arms left out)."""
    return [r for r in ServedLog(home).read() if not r.get("shadow")]


def labelled(records: list[dict], events: pd.DataFrame) -> pd.DataFrame:
    """One row per post shown, labelled by the reactions logged for that user and post after it
    was shown and before it was shown to them again (``events``: the event log, any order).

    A seen post can come back (a comment revives it): each reaction counts once, for the
    showing it followed, not for every showing of the pair."""
    rows = [{"request_id": r["request_id"], "user_id": r["user_id"], "ts": r["ts"], "variant": r["arm"],
             "experiment_version": r.get("experiment_version", 0),
             "model_version": (r.get("model_versions") or {}).get("ranker", ""), "degraded": bool(r.get("degraded")),
             "latency_ms": r.get("latency_ms", np.nan), "post_id": item["post_id"], "position": item["position"],
             "propensity": item.get("show_probability", np.nan), "team": item.get("team")}
            for r in records for item in r["items"]]
    frame = pd.DataFrame(rows)
    frame["ts"] = pd.to_datetime(frame["ts"], unit="s", utc=True).astype("datetime64[ns, UTC]")
    frame["row"] = np.arange(len(frame))
    events = events[events["event_type"].isin([*REACTIONS, "dwell"])]
    events = events.assign(ts=pd.to_datetime(events["ts"], utc=True).astype("datetime64[ns, UTC]"),
                           user_id=events["user_id"].astype(np.int64), post_id=events["post_id"].astype(np.int64))
    shown = frame[["ts", "user_id", "post_id", "row"]].astype({"user_id": np.int64, "post_id": np.int64})
    # Each event goes to the latest showing of its user and post at or before it.
    after = pd.merge_asof(events.sort_values("ts"), shown.sort_values("ts"), on="ts", by=["user_id", "post_id"],
                          direction="backward").dropna(subset=["row"])
    after["row"] = after["row"].astype(np.int64)
    reacted = after[after["event_type"].isin(REACTIONS)].assign(value=1).pivot_table(
        index="row", columns="event_type", values="value", aggfunc="max")
    dwell = after[after["event_type"] == "dwell"].groupby("row")["value"].sum()
    labels = reacted.reindex(columns=list(REACTIONS)).join(dwell.rename("dwell_seconds"), how="outer")
    frame = frame.join(labels, on="row").drop(columns="row")
    frame[list(REACTIONS)] = frame[list(REACTIONS)].apply(pd.to_numeric).fillna(0).astype(np.int8)
    frame["dwell_seconds"] = pd.to_numeric(frame["dwell_seconds"]).fillna(0.0)
    return frame


def read_events_or_none(data_dir: Path) -> pd.DataFrame:
    from newsfeed.data.event_log import read_events

    try:
        return read_events(data_dir)
    except FileNotFoundError:
        return pd.DataFrame(columns=["user_id", "post_id", "event_type", "value", "ts"])


def _id64(keys: list[str]) -> np.ndarray:
    """Stable non-negative int64 ids (the canonical tables' ids are small counters: no clash)."""
    return np.array([int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "big") >> 1 for k in keys],
                    dtype=np.int64)


def as_impressions(frame: pd.DataFrame) -> pd.DataFrame:
    """Labelled served rows in the canonical impressions contract."""
    request = frame["request_id"].astype(str)
    return conform("impressions", pd.DataFrame({
        "impression_id": _id64((request + ":" + frame["position"].astype(str)).tolist()),
        "request_id": _id64(request.tolist()),
        "user_id": frame["user_id"].astype(np.int64), "post_id": frame["post_id"].astype(np.int64),
        "ts": frame["ts"], "position": frame["position"].astype(np.int32),
        "variant": frame["variant"].astype(str), "model_version": frame["model_version"].astype(str),
        **{r: frame[r] for r in REACTIONS},
        "dwell_seconds": frame["dwell_seconds"].clip(0, 86_400),
        "skip": (frame["dwell_seconds"] < SKIP_DWELL_SECONDS).astype(np.int8),
    }))


def absorb(home: Path, data_dir: Path) -> int:
    """Append the served impressions not yet absorbed, up to ``ATTRIBUTION_SECONDS`` before the
    newest, to ``data_dir``'s impression log; return how many rows. Run by the training
    pipeline and the drift check before they read; a watermark beside the log keeps each
    impression to one absorb (and a repeated one is dropped by its id when read)."""
    records = served_records(home)
    if not records:
        return 0
    folder = table_log.log_dir(data_dir, "impressions")
    mark = folder / WATERMARK
    try:
        done = float(json.loads(mark.read_text())["until"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        done = float("-inf")
    cutoff = max(r["ts"] for r in records) - ATTRIBUTION_SECONDS
    chosen = [r for r in records if done < r["ts"] <= cutoff and r["items"]]
    if not chosen:
        return 0
    frame = as_impressions(labelled(chosen, read_events_or_none(data_dir)))
    table_log.append(data_dir, "impressions", frame)
    atomic.write_text(mark, json.dumps({"until": cutoff}))
    return len(frame)
