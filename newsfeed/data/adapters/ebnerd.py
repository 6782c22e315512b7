"""EB-NeRD (Ekstra Bladet News Recommendation Dataset) into canonical tables.

PATH holds ``behaviors.parquet`` and ``history.parquet`` (a split folder such
as ``train/``), with ``articles.parquet`` beside them or one folder up.
Mapping: each behaviors row is a request; each article in
``article_ids_inview`` is an impression at its list position, clicked when it
is in ``article_ids_clicked``. Dwell is known for clicks only: the read time
of the next page (``next_read_time``), else ``read_time``. History rows
(``article_id_fixed`` with ``impression_time_fixed`` and ``read_time_fixed``)
become click and dwell events at their own times. Users keep gender (0 m,
1 f, 2 x) and age; country DK, language da. Articles are posts with no author:
title and subtitle as text, ``category_str`` as topic, ``topics`` as hashtags,
media type video for video articles else text, created when published (or
first shown, if earlier). Without articles.parquet, posts have no text and
topic ``unknown``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from newsfeed.data.adapters.base import AdapterError, finish, first_seen, hashtag, impressions_frame, posts_frame
from newsfeed.data.adapters.base import require_file, users_frame

BEHAVIOR_COLUMNS = ["impression_id", "impression_time", "read_time", "user_id", "article_ids_inview",
                    "article_ids_clicked", "gender", "age"]
HISTORY_COLUMNS = ["user_id", "impression_time_fixed", "article_id_fixed", "read_time_fixed"]
ARTICLE_COLUMNS = ["article_id", "title", "subtitle", "published_time", "category_str", "topics", "article_type"]
GENDER = {0: "m", 1: "f", 2: "x"}


def _read(path: Path, columns: list[str], optional: tuple[str, ...] = ()) -> pd.DataFrame:
    require_file(path)
    try:
        schema = pq.read_schema(path)
    except Exception as err:  # pyarrow raises several types for a file that is not parquet
        raise AdapterError(f"{path}: not a parquet file ({err})") from None
    missing = [c for c in columns if c not in schema.names and c not in optional]
    if missing:
        raise AdapterError(f"{path}: missing columns {missing}")
    return pq.read_table(path, columns=[c for c in columns if c in schema.names]).to_pandas()


def _find(path: Path, name: str) -> Path | None:
    for candidate in (path / name, path.parent / name):
        if candidate.exists():
            return candidate
    return None


def load(path: Path) -> dict[str, pd.DataFrame]:
    path = Path(path)
    behaviors = _read(path / "behaviors.parquet", [*BEHAVIOR_COLUMNS, "next_read_time"], optional=("next_read_time",))
    history = _read(path / "history.parquet", HISTORY_COLUMNS)
    behaviors["impression_time"] = pd.to_datetime(behaviors["impression_time"], utc=True)

    shown = behaviors.explode("article_ids_inview", ignore_index=True).dropna(subset=["article_ids_inview"])
    post = shown["article_ids_inview"].astype(np.int64).to_numpy()
    clicked = np.fromiter(
        (p in set(c) for p, c in zip(post, shown["article_ids_clicked"])), dtype=bool, count=len(shown)
    )
    read = shown["next_read_time"] if "next_read_time" in shown else shown["read_time"]
    read = read.fillna(shown["read_time"]).astype(float).to_numpy()
    impressions = impressions_frame(
        shown["user_id"], post, shown["impression_time"], variant="ebnerd",
        request_id=shown["impression_id"].astype(np.int64), click=clicked,
        position=shown.groupby("impression_id").cumcount().to_numpy(np.int32),
        dwell_seconds=np.where(clicked, read, np.nan),
    )

    read_history = history.explode(["impression_time_fixed", "article_id_fixed", "read_time_fixed"])
    read_history = read_history.dropna(subset=["article_id_fixed"])
    at = pd.to_datetime(read_history["impression_time_fixed"], utc=True)
    base = {"user_id": read_history["user_id"].to_numpy(np.int64),
            "post_id": read_history["article_id_fixed"].to_numpy(np.int64), "ts": at.to_numpy()}
    history_events = pd.concat([
        pd.DataFrame({**base, "event_type": "click", "value": 1.0}),
        pd.DataFrame({**base, "event_type": "dwell",
                      "value": read_history["read_time_fixed"].astype(float).fillna(0.0).to_numpy()}),
    ], ignore_index=True)

    every_post = pd.concat([pd.Series(post), history_events["post_id"]], ignore_index=True)
    every_time = pd.concat([impressions["ts"], history_events["ts"]], ignore_index=True)
    first = first_seen(every_post, every_time)
    articles_file = _find(path, "articles.parquet")
    if articles_file is not None:
        articles = _read(articles_file, ARTICLE_COLUMNS).drop_duplicates("article_id")
        published = pd.to_datetime(articles["published_time"], utc=True)
        shown_first = articles["article_id"].map(first)
        created = pd.concat([published, shown_first], axis=1).min(axis=1)
        text = (articles["title"].fillna("") + " " + articles["subtitle"].fillna("")).str.strip()
        media = np.where(articles["article_type"].fillna("").str.contains("video"), "video", "text")
        posts = posts_frame(articles["article_id"], text, articles["category_str"].fillna("unknown"), created,
                            media_type=media, hashtags=[[hashtag(t) for t in (ts if ts is not None else [])]
                                                         for ts in articles["topics"]])
    else:
        posts = posts_frame(first.index, [""] * len(first), ["unknown"] * len(first), first.to_numpy(),
                            media_type="text")

    people = behaviors.sort_values("impression_time").drop_duplicates("user_id", keep="last")
    people = people.set_index("user_id").reindex(sorted(set(behaviors["user_id"]) | set(history["user_id"])))
    activity_user = pd.concat([impressions["user_id"], history_events["user_id"]], ignore_index=True)
    activity_ts = pd.concat([impressions["ts"], history_events["ts"]], ignore_index=True)
    signup = people.index.map(first_seen(activity_user, activity_ts))
    n = len(people)
    users = users_frame(
        people.index.to_numpy(), signup,
        age=people["age"].astype("Int64"), gender=people["gender"].map(GENDER).astype(object),
        country=pd.Series(["DK"] * n), language=pd.Series(["da"] * n),
        timezone=pd.Series(["Europe/Copenhagen"] * n),
    )
    return finish(users, posts, impressions, extra_events=history_events)
