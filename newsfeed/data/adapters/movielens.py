"""MovieLens 100K (GroupLens) into canonical tables.

Mapping: each rating is an impression of the film to the user at the rating
time (position 0, its own request); any rating is a click, a rating >= 4 a
like, a rating <= 2 a hide. Films are posts with no author: title as text,
first listed genre as topic, all genres as hashtags, media type video, created
at the release date or the first rating if earlier or missing. Users keep age
and gender; country US, language en. Signup is the first rating.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from newsfeed.data.adapters.base import AdapterError, finish, first_seen, hashtag, impressions_frame, posts_frame
from newsfeed.data.adapters.base import read_delimited, require_file, users_frame

GENRES_FALLBACK = (
    "unknown Action Adventure Animation Children's Comedy Crime Documentary Drama Fantasy Film-Noir Horror "
    "Musical Mystery Romance Sci-Fi Thriller War Western"
).split()


def _genres(path: Path) -> list[str]:
    genre_file = path / "u.genre"
    if not genre_file.exists():
        return GENRES_FALLBACK
    names = read_delimited(genre_file, {"name": "str", "id": "int"}, sep="|", encoding="latin-1")
    return list(names.sort_values("id")["name"])


def load(path: Path) -> dict[str, pd.DataFrame]:
    path = Path(path)
    genres = _genres(path)
    ratings = read_delimited(
        path / "u.data", {"user_id": "int", "item_id": "int", "rating": "int", "ts": "int"}, sep="\t"
    )
    bad = ~ratings["rating"].between(1, 5)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise AdapterError(f"{path / 'u.data'}:{i + 1}: rating must be 1-5, got {ratings['rating'].iloc[i]}")
    items = read_delimited(
        path / "u.item",
        {"item_id": "int", "title": "str", "release": "str", "video_release": "str", "url": "str",
         **{f"g{i}": "int" for i in range(len(genres))}},
        sep="|", encoding="latin-1",
    )
    people = read_delimited(
        require_file(path / "u.user"),
        {"user_id": "int", "age": "int", "gender": "str", "occupation": "str", "zip": "str"},
        sep="|", encoding="latin-1",
    )

    ts = pd.to_datetime(ratings["ts"].astype("int64"), unit="s", utc=True)
    ratings = ratings.assign(ts=ts).sort_values(["ts", "user_id", "item_id"], kind="stable").reset_index(drop=True)
    rating = ratings["rating"].to_numpy()
    impressions = impressions_frame(
        ratings["user_id"], ratings["item_id"], ratings["ts"], variant="movielens",
        click=np.ones(len(rating)), like=rating >= 4, hide=rating <= 2,
    )

    flags = items[[f"g{i}" for i in range(len(genres))]].to_numpy().astype(bool)
    named = [[g for g, on in zip(genres, row) if on] for row in flags]
    topic = [next((g for g in n if g != "unknown"), "unknown").lower() for n in named]
    release = pd.to_datetime(items["release"], format="%d-%b-%Y", errors="coerce", utc=True)
    first_rating = items["item_id"].map(first_seen(ratings["item_id"], ratings["ts"]))
    created = pd.concat([release, first_rating], axis=1).min(axis=1)
    created = created.fillna(ratings["ts"].min())
    posts = posts_frame(
        items["item_id"], items["title"], topic, created, media_type="video",
        hashtags=[[hashtag(g) for g in n] for n in named],
    )

    signup = people["user_id"].map(first_seen(ratings["user_id"], ratings["ts"])).fillna(ratings["ts"].min())
    users = users_frame(
        people["user_id"], signup,
        age=people["age"], gender=people["gender"].str.lower().where(people["gender"].isin(["M", "F"])),
        country=pd.Series(["US"] * len(people)), language=pd.Series(["en"] * len(people)),
    )
    return finish(users, posts, impressions)
