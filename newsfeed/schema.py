"""The data contracts: canonical tables, the same whatever the source.

Each table is a pandera schema (types, ranges, required columns, row-level
rules). Rules that span tables (referential integrity) live in
``newsfeed.data.validation``, which applies these schemas.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.pandas as pa

REACTIONS: tuple[str, ...] = ("click", "like", "comment", "share", "friend_request", "hide", "block")
"""The seven reaction labels of an impression, in the order of the engagement weights."""

TABLES: tuple[str, ...] = ("users", "posts", "friendships", "impressions", "events")
"""Canonical tables, in dependency order (a table may reference those before it)."""

EVENT_TYPES: tuple[str, ...] = (*REACTIONS, "dwell")
MEDIA_TYPES: tuple[str, ...] = ("text", "image", "video", "link")
GENDERS: tuple[str, ...] = ("f", "m", "x")
SKIP_DWELL_SECONDS = 0.5
"""An impression is a skip when the post was on screen for less than this."""

TS = pd.DatetimeTZDtype("ns", "UTC")
# Timestamps may run slightly ahead of this machine's clock (clock skew), no more.
FUTURE_TOLERANCE = pd.Timedelta(minutes=5)


def _not_in_future(s: pd.Series) -> pd.Series:
    return s.isna() | (s <= pd.Timestamp.now(tz="UTC") + FUTURE_TOLERANCE)


def _timestamp(nullable: bool = False) -> pa.Column:
    return pa.Column(
        TS, pa.Check(_not_in_future, element_wise=False, error="timestamp is in the future"), nullable=nullable
    )


def _id(unique: bool = False, nullable: bool = False) -> pa.Column:
    dtype = "Int64" if nullable else "int64"
    return pa.Column(
        dtype, pa.Check.ge(0, error="id must be >= 0"), unique=unique, nullable=nullable,
        report_duplicates="exclude_first",  # the first of duplicates stays, later ones are bad
    )


def _label() -> pa.Column:
    return pa.Column("int8", pa.Check.isin([0, 1], error="label must be 0 or 1"))


def _probability(nullable: bool = True) -> pa.Column:
    return pa.Column(
        "float64", pa.Check.in_range(0.0, 1.0, error="probability must be in [0, 1]"), nullable=nullable,
        required=False,
    )


def _list_of(kinds: tuple[type, ...], name: str) -> pa.Column:
    def is_list(s: pd.Series) -> pd.Series:
        return s.map(lambda v: isinstance(v, (list, np.ndarray)) and all(isinstance(x, kinds) for x in v))

    return pa.Column(object, pa.Check(is_list, error=f"must be a list of {name}"))


def _skip_matches_dwell(df: pd.DataFrame) -> pd.Series:
    # Unknown dwell (sources without it) carries no skip; known dwell decides it.
    expected = (df["dwell_seconds"] < SKIP_DWELL_SECONDS).astype("int8")
    known = df["dwell_seconds"].notna()
    return (known & (df["skip"] == expected)) | (~known & (df["skip"] == 0))


USERS = pa.DataFrameSchema(
    {
        "user_id": _id(unique=True),
        "age": pa.Column("Int64", pa.Check.in_range(0, 120, error="age must be in [0, 120]"), nullable=True),
        "gender": pa.Column(str, pa.Check.isin(GENDERS, error=f"gender must be one of {GENDERS}"), nullable=True),
        "country": pa.Column(str, pa.Check.str_length(2, 2, error="country must be ISO 3166 alpha-2"), nullable=True),
        "language": pa.Column(str, nullable=True),
        "timezone": pa.Column(str, nullable=True),
        "signup_ts": _timestamp(),
    },
    name="users", strict=True, coerce=True,
)

POSTS = pa.DataFrameSchema(
    {
        "post_id": _id(unique=True),
        # Nullable: catalogue items (films, products) have no author.
        "author_id": _id(nullable=True),
        "text": pa.Column(str),
        "hashtags": _list_of((str,), "strings"),
        "mentions": _list_of((int, np.integer), "user ids"),
        "media_type": pa.Column(str, pa.Check.isin(MEDIA_TYPES, error=f"media_type must be one of {MEDIA_TYPES}")),
        "topic": pa.Column(str),
        "created_ts": _timestamp(),
    },
    name="posts", strict=True, coerce=True,
)

FRIENDSHIPS = pa.DataFrameSchema(
    {
        "user_id": _id(),
        "friend_id": _id(),
        "formed_ts": _timestamp(),
        "close_friend": pa.Column(bool),
        "family": pa.Column(bool),
    },
    checks=[pa.Check(lambda df: df["user_id"] != df["friend_id"], error="a user cannot befriend themself")],
    unique=["user_id", "friend_id"],
    report_duplicates="exclude_first",
    name="friendships", strict=True, coerce=True,
)

IMPRESSIONS = pa.DataFrameSchema(
    {
        "impression_id": _id(unique=True),
        "request_id": _id(),
        "user_id": _id(),
        "post_id": _id(),
        "ts": _timestamp(),
        "position": pa.Column("int32", pa.Check.ge(0, error="position must be >= 0")),
        "variant": pa.Column(str),
        "model_version": pa.Column(str),
        **{r: _label() for r in REACTIONS},
        "dwell_seconds": pa.Column(
            "float64", pa.Check.in_range(0.0, 86_400.0, error="dwell must be in [0, 1 day]"), nullable=True
        ),
        "skip": _label(),
        # Optional: the logging policy's probability of showing this post (off-policy evaluation).
        "propensity": pa.Column(
            "float64", pa.Check.in_range(0.0, 1.0, include_min=False, error="propensity must be in (0, 1]"),
            nullable=True, required=False,
        ),
        # Optional, simulator only: the true reaction probabilities (the oracle).
        **{f"p_{r}": _probability() for r in (*REACTIONS, "skip")},
    },
    checks=[pa.Check(_skip_matches_dwell, error="skip must be 1 exactly when dwell_seconds < 0.5")],
    name="impressions", strict=True, coerce=True,
)

EVENTS = pa.DataFrameSchema(
    {
        "user_id": _id(),
        "post_id": _id(),
        "event_type": pa.Column(str, pa.Check.isin(EVENT_TYPES, error=f"event_type must be one of {EVENT_TYPES}")),
        "value": pa.Column("float64", pa.Check.ge(0.0, error="value must be >= 0")),
        "ts": _timestamp(),
    },
    name="events", strict=True, coerce=True,
)

SCHEMAS: dict[str, pa.DataFrameSchema] = {
    "users": USERS,
    "posts": POSTS,
    "friendships": FRIENDSHIPS,
    "impressions": IMPRESSIONS,
    "events": EVENTS,
}

ORACLE_COLUMNS: tuple[str, ...] = tuple(f"p_{r}" for r in (*REACTIONS, "skip"))


def conform(table: str, df: pd.DataFrame) -> pd.DataFrame:
    """Order columns as the contract does and cast to its dtypes (no row checks).

    Producers (simulator, adapters) call this before writing so every source
    yields byte-compatible parquet; validation then checks the rows.
    """
    schema = SCHEMAS[table]
    missing = [c for c, col in schema.columns.items() if col.required and c not in df.columns]
    if missing:
        raise ValueError(f"{table}: missing required columns {missing}")
    extra = [c for c in df.columns if c not in schema.columns]
    if extra:
        raise ValueError(f"{table}: columns not in the contract {extra}")
    cols = [c for c in schema.columns if c in df.columns]
    out = df[cols].copy()
    for c in cols:
        dtype = schema.columns[c].dtype
        if dtype is not None and str(dtype) not in ("object", "str"):
            out[c] = out[c].astype(dtype.type)
    return out.reset_index(drop=True)
