"""MIND (Microsoft News Dataset) into canonical tables.

PATH holds ``news.tsv`` and ``behaviors.tsv`` (tab-separated, no header).
Mapping: each behaviors row is a request; each ``NewsID-label`` of its
impressions list is an impression at its list position, clicked when the
label is 1. The history column (earlier clicks, undated in MIND) becomes click
events one second before the user's first request. News are posts with no
author: title and abstract as text, category as topic, subcategory as a
hashtag, media type link, created when first seen. IDs drop their letter
prefix (``U123`` -> 123, ``N45`` -> 45).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from newsfeed.data.adapters.base import AdapterError, finish, first_seen, hashtag, impressions_frame, posts_frame
from newsfeed.data.adapters.base import read_delimited, users_frame

NEWS_COLUMNS = {c: "str" for c in
                ("news_id", "category", "subcategory", "title", "abstract", "url", "title_entities",
                 "abstract_entities")}
BEHAVIOR_COLUMNS = {"impression_id": "int", "user_id": "str", "time": "str", "history": "str",
                    "impressions": "str"}


def _ids(values: pd.Series, prefix: str, path: Path, first_line: int = 1) -> np.ndarray:
    """'U123' -> 123; anything else is an error naming the line."""
    digits = values.str[len(prefix):]
    ok = values.str.startswith(prefix) & digits.str.fullmatch(r"\d+")
    if not ok.all():
        i = int(np.flatnonzero(~ok.to_numpy())[0])
        raise AdapterError(f"{path}:{i + first_line}: expected an id like {prefix}123, got {values.iloc[i]!r}")
    return digits.astype(np.int64).to_numpy()


def load(path: Path) -> dict[str, pd.DataFrame]:
    path = Path(path)
    news_file, behaviors_file = path / "news.tsv", path / "behaviors.tsv"
    news = read_delimited(news_file, NEWS_COLUMNS, sep="\t")
    behaviors = read_delimited(behaviors_file, BEHAVIOR_COLUMNS, sep="\t")
    time = pd.to_datetime(behaviors["time"], format="%m/%d/%Y %I:%M:%S %p", errors="coerce", utc=True)
    if time.isna().any():
        i = int(np.flatnonzero(time.isna().to_numpy())[0])
        raise AdapterError(f"{behaviors_file}:{i + 1}: time {behaviors['time'].iloc[i]!r} is not m/d/Y h:m:s AM")
    behaviors = behaviors.assign(time=time, user=_ids(behaviors["user_id"], "U", behaviors_file))

    # One impression per "NewsID-label" token, at its position in the list.
    shown = behaviors[["impression_id", "user", "time", "impressions"]].assign(
        token=behaviors["impressions"].str.split()
    ).explode("token", ignore_index=False)
    line = shown.index.to_numpy() + 1
    shown = shown.reset_index(drop=True)
    parts = shown["token"].fillna("").str.rsplit("-", n=1, expand=True).reindex(columns=[0, 1])
    ok = parts[1].isin(["0", "1"])
    if not ok.all():
        i = int(np.flatnonzero(~ok.to_numpy())[0])
        raise AdapterError(f"{behaviors_file}:{line[i]}: impression {shown['token'].iloc[i]!r} is not NewsID-0/1")
    post = _ids(parts[0], "N", behaviors_file)
    position = shown.groupby("impression_id").cumcount().to_numpy(np.int32)
    impressions = impressions_frame(
        shown["user"], post, shown["time"], variant="mind", request_id=shown["impression_id"].astype(np.int64),
        position=position, click=parts[1].astype(int),
    )

    # History: undated earlier clicks, placed just before the user's first request.
    first_request = first_seen(behaviors["user"], behaviors["time"])
    history = behaviors[["user", "history"]].assign(news=behaviors["history"].str.split()).explode("news")
    history = history.dropna(subset=["news"]).drop_duplicates(["user", "news"])
    history_events = pd.DataFrame({
        "user_id": history["user"].to_numpy(np.int64),
        "post_id": _ids(history["news"], "N", behaviors_file),
        "event_type": "click", "value": 1.0,
        "ts": history["user"].map(first_request - pd.Timedelta(seconds=1)).to_numpy(),
    })

    news_id = _ids(news["news_id"], "N", news_file)
    seen = first_seen(pd.concat([pd.Series(post), history_events["post_id"]]),
                      pd.concat([impressions["ts"], pd.Series(history_events["ts"])]))
    created = pd.Series(news_id).map(seen).fillna(behaviors["time"].min() - pd.Timedelta(seconds=1))
    text = (news["title"] + " " + news["abstract"]).str.strip()
    posts = posts_frame(news_id, text, news["category"], created, media_type="link",
                        hashtags=[[hashtag(s)] if s else [] for s in news["subcategory"]])

    signup = first_request - pd.Timedelta(seconds=1)
    users = users_frame(signup.index.to_numpy(), signup.to_numpy())
    return finish(users, posts, impressions, extra_events=history_events)
