"""What every adapter shares: careful file reading and canonical defaults."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from newsfeed.data.events import events_from_impressions
from newsfeed.errors import NewsfeedError
from newsfeed.schema import REACTIONS, conform


class AdapterError(NewsfeedError, ValueError):
    """Input that cannot be imported; the message names the file and, where it can, the line."""


def require_file(path: Path) -> Path:
    if not path.is_file():
        raise AdapterError(f"{path}: file not found")
    return path


def read_delimited(
    path: Path,
    columns: dict[str, str],
    sep: str,
    header: bool = False,
    encoding: str = "utf-8",
    optional: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Read a delimited file whose columns have kinds 'int', 'float' or 'str'.

    A file with a header may hold more columns than asked for; those are not
    kept. A line with the wrong number of fields, or a value of the wrong kind in
    a column that is not optional, raises AdapterError naming the file and line.
    """
    require_file(path)
    if not Path(path).read_bytes().strip():
        raise AdapterError(f"{path}: empty file, no rows to import")
    first_line = 2 if header else 1
    _check_field_counts(path, sep, None if header else len(columns), encoding)
    try:
        raw = pd.read_csv(
            path, sep=sep, header=0 if header else None, names=None if header else list(columns),
            dtype=str, keep_default_na=False, na_values=[], quoting=csv.QUOTE_NONE, encoding=encoding,
            engine="c", index_col=False, usecols=(lambda c: c in columns) if header else None,
        )
    except pd.errors.ParserError as err:
        raise AdapterError(f"{path}: {err}".replace("Error tokenizing data. C error: ", "")) from None
    except UnicodeDecodeError as err:
        raise AdapterError(f"{path}: not {encoding} text ({err.reason} at byte {err.start})") from None
    missing = [c for c in columns if c not in raw.columns]
    if missing:
        raise AdapterError(f"{path}: missing columns {missing}")
    out = {}
    for name, kind in columns.items():
        values = raw[name]
        if kind == "str":
            out[name] = values
            continue
        parsed = pd.to_numeric(values, errors="coerce")
        bad = parsed.isna() & ~((values == "") & (name in optional))
        if kind == "int":
            bad |= parsed.notna() & (parsed != parsed.round())
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise AdapterError(f"{path}:{i + first_line}: column {name!r} should be {kind}, got {values.iloc[i]!r}")
        out[name] = parsed.astype("Int64") if kind == "int" else parsed.astype("float64")
    return pd.DataFrame(out)


def _check_field_counts(path: Path, sep: str, fields: int | None, encoding: str) -> None:
    """Every non-blank line has the same number of fields (the header's, if fields is None)."""
    with path.open(encoding=encoding, errors="replace") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            count = line.count(sep) + 1
            if fields is None:
                fields = count
            elif count != fields:
                raise AdapterError(f"{path}:{number}: expected {fields} fields, found {count}")


def users_frame(user_ids, signup_ts, **columns) -> pd.DataFrame:
    """Users with the demographics a source has; the rest unknown."""
    n = len(user_ids)
    frame = {"user_id": np.asarray(user_ids, dtype=np.int64)}
    for c in ("age", "gender", "country", "language", "timezone"):
        # Positional, whatever index a source's Series carries.
        frame[c] = pd.Series(columns[c]).to_numpy(dtype=object) if c in columns else np.full(n, None, dtype=object)
    frame["age"] = pd.array([None if pd.isna(a) else int(a) for a in frame["age"]], dtype="Int64")
    frame["signup_ts"] = pd.to_datetime(signup_ts, utc=True)
    return pd.DataFrame(frame)


def impressions_frame(user_id, post_id, ts, variant, model_version="", **columns) -> pd.DataFrame:
    """Impressions with the labels a source has; absent labels are 0 and dwell unknown.

    variant and model_version are one string for all rows, or one per row.
    """
    n = len(user_id)
    frame = pd.DataFrame({
        "impression_id": np.arange(n, dtype=np.int64),
        "request_id": columns.pop("request_id", np.arange(n, dtype=np.int64)),
        "user_id": np.asarray(user_id, dtype=np.int64),
        "post_id": np.asarray(post_id, dtype=np.int64),
        "ts": pd.to_datetime(ts, utc=True),
        "position": columns.pop("position", np.zeros(n, dtype=np.int32)),
        "variant": variant,
        "model_version": model_version,
    })
    for r in REACTIONS:
        frame[r] = np.asarray(columns.pop(r, np.zeros(n)), dtype=np.int8)
    dwell = np.asarray(columns.pop("dwell_seconds", np.full(n, np.nan)), dtype=np.float64)
    frame["dwell_seconds"] = dwell
    frame["skip"] = (~np.isnan(dwell) & (dwell < 0.5)).astype(np.int8)
    for name, values in columns.items():  # optional contract columns, e.g. propensity
        frame[name] = values
    return frame


def posts_frame(post_id, text, topic, created_ts, media_type, hashtags=None, author_id=None) -> pd.DataFrame:
    """Posts with no author unless given; media_type is one string for all rows, or one per row."""
    n = len(post_id)
    return pd.DataFrame({
        "post_id": np.asarray(post_id, dtype=np.int64),
        "author_id": pd.array([None] * n if author_id is None else author_id, dtype="Int64"),
        "text": list(text),
        "hashtags": [[] for _ in range(n)] if hashtags is None else list(hashtags),
        "mentions": [[] for _ in range(n)],
        "media_type": media_type,
        "topic": list(topic),
        "created_ts": pd.to_datetime(created_ts, utc=True),
    })


def first_seen(ids: pd.Series, ts: pd.Series) -> pd.Series:
    """The earliest time each id appears, indexed by id."""
    return pd.Series(pd.to_datetime(ts, utc=True).to_numpy(), index=ids.to_numpy()).groupby(level=0).min()


def hashtag(word: str) -> str:
    return "#" + "".join(ch for ch in word.lower().replace(" ", "_") if ch.isalnum() or ch == "_")


def finish(
    users: pd.DataFrame,
    posts: pd.DataFrame,
    impressions: pd.DataFrame,
    friendships: pd.DataFrame | None = None,
    extra_events: pd.DataFrame | None = None,
) -> dict[str, pd.DataFrame]:
    """Derive events from impressions, add a source's extra events, conform every table."""
    if friendships is None:
        friendships = pd.DataFrame({
            "user_id": np.array([], np.int64), "friend_id": np.array([], np.int64),
            "formed_ts": pd.to_datetime([], utc=True), "close_friend": np.array([], bool),
            "family": np.array([], bool),
        })
    events = events_from_impressions(impressions)
    if extra_events is not None and len(extra_events):
        events = pd.concat([extra_events, events], ignore_index=True).sort_values("ts", kind="stable")
    tables = {"users": users, "posts": posts, "friendships": friendships, "impressions": impressions,
              "events": events}
    return {name: conform(name, df) for name, df in tables.items()}
