"""Model-ready data: point-in-time training sets from Feast, a temporal split, and the
held-out sets retrieval is evaluated on. Joins are slow (minutes at demo scale), so each
result is cached under ``<home>/training`` keyed by the data snapshot and feature build."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from newsfeed.data.io import read_dataset
from newsfeed.features import catalog, training_set
from newsfeed.features.build import offline_manifest

POSITIVE = tuple(catalog.POSITIVE_REACTIONS)


class SplitConfig(BaseModel):
    """Temporal split: the last fractions of the time span are validation, then test; or, with
    ``holdout_days``, the last that many days, half validation then half test.

    A fixed holdout is for a retrain soon after the world changed: with fractions of a
    multi-week span the held-out days are the newest few, so everything since the change
    would be held out and never trained on."""

    val_fraction: float = Field(1 / 7, gt=0, lt=0.5)
    test_fraction: float = Field(1 / 7, gt=0, lt=0.5)
    holdout_days: float | None = Field(None, gt=0, le=365)

    @classmethod
    def of(cls, holdout_days: float) -> "SplitConfig":
        """The pipeline's parameter: 0 is the fractions, a positive number the fixed holdout."""
        return cls(holdout_days=holdout_days or None)


@dataclass(frozen=True)
class Boundaries:
    start: pd.Timestamp
    val_start: pd.Timestamp
    test_start: pd.Timestamp
    end: pd.Timestamp

    def label(self, ts: pd.Series) -> np.ndarray:
        ts = pd.to_datetime(ts, utc=True)
        return np.where(ts < self.val_start, "train", np.where(ts < self.test_start, "val", "test"))

    def to_dict(self) -> dict[str, str]:
        return {k: v.isoformat() for k, v in self.__dict__.items()}


def boundaries(impression_ts: pd.Series, split: SplitConfig) -> Boundaries:
    ts = pd.to_datetime(impression_ts, utc=True)
    start, end = ts.min(), ts.max()
    span = end - start
    if split.holdout_days is not None:
        half = min(pd.Timedelta(days=split.holdout_days), span * 0.8) / 2  # leaves something to train on
        test_start = (end - half).floor("h")
        val_start = (test_start - half).floor("h")
        return Boundaries(start, val_start, test_start, end)
    test_start = (end - span * split.test_fraction).floor("h")
    val_start = (test_start - span * split.val_fraction).floor("h")
    return Boundaries(start, val_start, test_start, end)


def is_positive(frame: pd.DataFrame) -> np.ndarray:
    return frame[list(POSITIVE)].to_numpy().any(axis=1)


@dataclass
class ModelData:
    """Everything one training run reads, with what identifies it (the lineage)."""

    impressions: pd.DataFrame
    posts: pd.DataFrame
    users: pd.DataFrame
    bounds: Boundaries
    lineage: dict


def load(home: Path, data_dir: Path, split: SplitConfig = SplitConfig()) -> ModelData:
    tables = read_dataset(data_dir, ("users", "impressions", "posts"))
    if "impressions" not in tables or tables["impressions"].empty:
        raise FileNotFoundError(f"{data_dir}: no impressions to learn from (run `newsfeed data generate` or `import`)")
    manifest = offline_manifest(home)
    impressions = tables["impressions"]
    bounds = boundaries(impressions["ts"], split)
    lineage = {
        "data_dir": str(Path(data_dir).resolve()),
        "data_fingerprint": manifest["data_fingerprint"],
        "features_end": manifest["end"],
        "split": bounds.to_dict(),
    }
    return ModelData(impressions, tables["posts"], tables["users"], bounds, lineage)


def _cached(home: Path, name: str, key: dict, build) -> pd.DataFrame:
    """``build()``'s frame, joined once per ``key`` and the offline tables it was joined from."""
    key = {**key, "tables": _offline_tables(home)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = Path(home) / "training" / f"{name}-{digest}.parquet"
    if path.exists():
        return pd.read_parquet(path)
    frame = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)  # a crash mid-write never leaves a truncated cache
    return frame


def _offline_tables(home: Path) -> dict[str, list[int]]:
    """Each offline feature table's size and modification time: the same data's features made
    again (by other code, or other settings such as ``catalog.POST_SNAPSHOT_HOURS``) must not
    be answered from a training set joined to the earlier ones."""
    from newsfeed.features.store import offline_dir

    return {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(offline_dir(home).glob("*.parquet"))}


def impression_set(home: Path, store, data: ModelData, service: str, positives_only: bool = False) -> pd.DataFrame:
    """Impressions joined point-in-time to ``service``'s features, labelled train/val/test."""
    impressions = data.impressions
    if positives_only:
        impressions = impressions[is_positive(impressions)]
    key = {**data.lineage, "service": service, "positives_only": positives_only, "project": store.project,
           "features": view_features(store, service)}

    def build() -> pd.DataFrame:
        return training_set.build(store, training_set.entity_frame(impressions, data.posts), service)

    return with_split(_cached(home, f"{service}{'-positives' if positives_only else ''}", key, build), data)


def with_split(frame: pd.DataFrame, data: ModelData) -> pd.DataFrame:
    """``frame`` with each row's part of the temporal split (train / val / test) in ``split``."""
    return frame.assign(split=data.bounds.label(frame[catalog.TIMESTAMP]))


def view_features(store, service: str, views: tuple[str, ...] | None = None) -> list[str]:
    """``view:feature`` references of a feature service, optionally of some of its views only."""
    refs = []
    for projection in store.get_feature_service(service).feature_view_projections:
        if views is None or projection.name in views:
            refs += [f"{projection.name}:{f.name}" for f in projection.features]
    return refs


@dataclass
class RetrievalQueries:
    """Feed requests as retrieval queries, as serving meets them: at the request's time, the
    corpus is the posts published within the freshness horizon, less those the user was
    already shown (serving filters them out); the posts of this feed the user engaged with
    are what retrieval should find."""

    user_ids: np.ndarray  # per query
    request_ns: np.ndarray  # per query: the request's time (ns since the epoch)
    relevant: list[np.ndarray]  # per query: engaged posts serving could return
    seen: list[np.ndarray]  # per query: posts shown to the user before the request
    unretrievable: dict[str, int]  # engaged pairs serving could never return, by why

    @property
    def pairs(self) -> int:
        return int(sum(len(r) for r in self.relevant))

    @property
    def answerable_users(self) -> np.ndarray:
        """The user of each query with a relevant post (the queries recall averages over)."""
        return np.array([u for u, rel in zip(self.user_ids, self.relevant) if len(rel)], np.int64)


def _ns(ts) -> np.ndarray:
    return pd.to_datetime(ts, utc=True).astype("datetime64[ns, UTC]").array.asi8


def retrieval_queries(impressions: pd.DataFrame, created_ns: pd.Series, start: pd.Timestamp, end: pd.Timestamp,
                      horizon_days: float) -> RetrievalQueries:
    """Every request in [start, end] with an engaged post is one query; ``created_ns``: each
    post's publication time by post id."""
    frame = impressions.assign(ns=_ns(impressions["ts"])).sort_values(["user_id", "ns"], kind="stable")
    in_window = frame[(frame["ns"] >= start.value) & (frame["ns"] <= end.value)]
    engaged = in_window[is_positive(in_window)]
    requests = engaged.groupby("request_id").agg(user_id=("user_id", "first"), ns=("ns", "min"))
    engaged_by_request = engaged.groupby("request_id")["post_id"].unique()
    shown = {user: (rows["ns"].to_numpy(), rows["post_id"].to_numpy(np.int64))
             for user, rows in frame[frame["user_id"].isin(requests["user_id"])].groupby("user_id")}
    horizon_ns = int(horizon_days * 86_400 * 10**9)
    relevant, seen, unretrievable = [], [], {"shown_before": 0, "older_than_horizon": 0}
    for request_id, user_id, request_ns in requests[["user_id", "ns"]].itertuples():
        times, posts = shown[user_id]
        before = np.unique(posts[: np.searchsorted(times, request_ns, side="left")])
        engaged_posts = np.asarray(engaged_by_request[request_id], np.int64)
        shown_before = np.isin(engaged_posts, before)
        too_old = ~shown_before & (request_ns - created_ns.reindex(engaged_posts).to_numpy() > horizon_ns)
        unretrievable["shown_before"] += int(shown_before.sum())
        unretrievable["older_than_horizon"] += int(too_old.sum())
        relevant.append(engaged_posts[~shown_before & ~too_old])
        seen.append(before)
    return RetrievalQueries(requests["user_id"].to_numpy(np.int64), requests["ns"].to_numpy(np.int64),
                            relevant, seen, unretrievable)


@dataclass
class RetrievalSet:
    """The retrieval evaluation: the test period's requests as queries over the corpus serving
    searches (each request: the posts published within the freshness horizon before it)."""

    users: pd.DataFrame  # one row per user with a query, user features as of test start
    posts: pd.DataFrame  # every post some request can search, features as of test start or publication
    created_ns: np.ndarray  # per post row: its publication time
    queries: RetrievalQueries
    horizon_days: float
    engagements: pd.DataFrame  # engaged (post_id, ns) up to the period's end, oldest first

    @property
    def query_user_rows(self) -> np.ndarray:
        return pd.Index(self.users["user_id"]).get_indexer(self.queries.user_ids)


def engagement_events(impressions: pd.DataFrame, before: pd.Timestamp) -> pd.DataFrame:
    """(post_id, ns) of every engaged impression up to ``before``, oldest first."""
    engaged = impressions[is_positive(impressions)]
    frame = pd.DataFrame({"post_id": engaged["post_id"].to_numpy(np.int64), "ns": _ns(engaged["ts"])})
    return frame[frame["ns"] <= before.value].sort_values("ns", kind="stable").reset_index(drop=True)


def created_by_post(posts: pd.DataFrame) -> pd.Series:
    return pd.Series(_ns(posts["created_ts"]), index=posts["post_id"].to_numpy(np.int64))


def retrieval_set(home: Path, store, data: ModelData, user_views: tuple[str, ...], post_views: tuple[str, ...],
                  horizon_days: float, service: str = "two_tower") -> RetrievalSet:
    """Queries are the test period's requests (``retrieval_queries``); the posts are those
    some request can search: published by the period's end and within ``horizon_days``
    before its start."""
    imp, posts, cut = data.impressions, data.posts, data.bounds.test_start
    created = created_by_post(posts)
    queries = retrieval_queries(imp, created, cut, data.bounds.end, horizon_days)
    user_ids = np.unique(queries.user_ids)
    searchable = (created.to_numpy() <= data.bounds.end.value) & (
        created.to_numpy() >= (cut - pd.Timedelta(days=horizon_days)).value)
    candidates = posts[searchable]
    key = {**data.lineage, "service": service, "project": store.project, "max_age_days": horizon_days,
           "features": view_features(store, service), "views": [*user_views, *post_views]}

    def users_frame() -> pd.DataFrame:
        signup = pd.to_datetime(data.users.set_index("user_id")["signup_ts"], utc=True).reindex(user_ids)
        # A user who signs up during the test period is embedded from what they had at sign-up.
        stamp = np.maximum(signup.fillna(cut) + pd.Timedelta(seconds=1), cut)
        entities = pd.DataFrame({"user_id": user_ids.astype(np.int64),
                                 catalog.TIMESTAMP: stamp.dt.floor("us").to_numpy()})
        return training_set.build(store, entities, view_features(store, service, user_views))

    def posts_frame() -> pd.DataFrame:
        created = pd.to_datetime(candidates["created_ts"], utc=True)
        # A post published during the test period is embedded from what it had at publication.
        stamp = np.maximum(created + pd.Timedelta(seconds=1), cut)
        entities = pd.DataFrame({"post_id": candidates["post_id"].to_numpy(np.int64),
                                 catalog.TIMESTAMP: stamp.dt.floor("us").to_numpy()})
        frame = training_set.build(store, entities, view_features(store, service, post_views))
        authors = posts.set_index("post_id")["author_id"].astype("Int64")
        frame["author_id"] = authors.reindex(frame["post_id"].to_numpy()).fillna(-1).to_numpy(np.int64)
        return frame

    users = _cached(home, "retrieval-users", key, users_frame)
    post_frame = _cached(home, "retrieval-posts", key, posts_frame)
    return RetrievalSet(users=users, posts=post_frame, created_ns=created.reindex(post_frame["post_id"]).to_numpy(),
                        queries=queries, horizon_days=horizon_days,
                        engagements=engagement_events(imp, data.bounds.end))
