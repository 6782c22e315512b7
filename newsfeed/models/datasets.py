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
    """Temporal split: the last fractions of the time span are validation, then test."""

    val_fraction: float = Field(1 / 7, gt=0, lt=0.5)
    test_fraction: float = Field(1 / 7, gt=0, lt=0.5)


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
class RetrievalSet:
    """The retrieval evaluation: users as of the test start, every candidate post, what each
    user engaged with in the test period (relevant) and what they had been shown before (seen)."""

    users: pd.DataFrame  # one row per evaluated user, user features as of test start
    posts: pd.DataFrame  # one row per candidate post, content + engagement as of test start
    relevant: list[np.ndarray]
    seen: list[np.ndarray]
    popularity: np.ndarray  # per candidate post: positives before the test start


def retrieval_set(home: Path, store, data: ModelData, user_views: tuple[str, ...], post_views: tuple[str, ...],
                  service: str = "two_tower", max_age_days: float = 3.0) -> RetrievalSet:
    """Candidates are the posts a feed could show during the test period: published before
    its end and no more than ``max_age_days`` before its start (a newsfeed's freshness
    horizon; serving's index keeps the same window)."""
    imp, posts, cut = data.impressions, data.posts, data.bounds.test_start
    ts = pd.to_datetime(imp["ts"], utc=True)
    test = imp[(ts >= cut) & is_positive(imp)]
    before = imp[ts < cut]
    user_ids = np.sort(test["user_id"].unique())
    created = pd.to_datetime(posts["created_ts"], utc=True)
    candidates = posts[(created <= data.bounds.end) & (created >= cut - pd.Timedelta(days=max_age_days))]
    key = {**data.lineage, "service": service, "project": store.project, "max_age_days": max_age_days,
           "features": view_features(store, service)}

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
    by_user = test.groupby("user_id")["post_id"].unique()
    seen_by_user = before.groupby("user_id")["post_id"].unique()
    empty = np.array([], np.int64)
    positives_before = before[is_positive(before)]["post_id"].value_counts()
    return RetrievalSet(
        users=users, posts=post_frame,
        relevant=[np.asarray(by_user.get(u, empty), np.int64) for u in users["user_id"]],
        seen=[np.asarray(seen_by_user.get(u, empty), np.int64) for u in users["user_id"]],
        popularity=positives_before.reindex(post_frame["post_id"].to_numpy()).fillna(0).to_numpy(np.float64),
    )

