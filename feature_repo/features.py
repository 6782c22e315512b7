"""Feast definitions: entities, sources, feature views and feature services.

Column names and types come from ``newsfeed.features.catalog`` (the feature jobs
write exactly those columns), and the request-time logic from
``newsfeed.features.request_time`` (serving computes the same values), so nothing
here is written twice. Offline sources are parquet files relative to the store's
repo path (``<home>/features``), written by ``newsfeed features materialize``.
"""

from datetime import timedelta

import pandas as pd
from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.stream_feature_view import StreamFeatureView
from feast.types import Array, Float32, Int64, String
from feast.value_type import ValueType

from newsfeed.features import catalog

TYPES = {"int64": Int64, "float32": Float32, "string": String,
         "int64_list": Array(Int64), "float32_list": Array(Float32)}
NO_TTL = timedelta(0)  # rows are snapshots with explicit timestamps; the join picks the latest

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64, description="A reader.")
post = Entity(name="post", join_keys=["post_id"], value_type=ValueType.INT64, description="A post.")
author = Entity(name="author", join_keys=["author_id"], value_type=ValueType.INT64,
                description="The user who wrote a post.")
ENTITIES = {"user_id": user, "post_id": post, "author_id": author}


def source(name: str) -> FileSource:
    return FileSource(name=f"{name}_source", path=f"offline/{name}.parquet", timestamp_field=catalog.TIMESTAMP)


def fields(name: str) -> list[Field]:
    return [Field(name=c, dtype=TYPES[t]) for c, t in catalog.TABLES[name].columns.items()]


def batch_view(name: str, online: bool = True) -> FeatureView:
    spec = catalog.TABLES[name]
    return FeatureView(
        name=name, entities=[ENTITIES[k] for k in spec.keys], ttl=NO_TTL, schema=fields(name),
        source=source(name), online=online, description=spec.description,
    )


user_profile = batch_view("user_profile")
user_engagement = batch_view("user_engagement")
user_history = batch_view("user_history")
post_content = batch_view("post_content")
post_engagement = batch_view("post_engagement")
user_author_affinity = batch_view("user_author_affinity")

# Real-time counters: pushed by the event ingestion path, snapshots offline every catalog.POST_SNAPSHOT_HOURS (hourly).
post_engagement_push = PushSource(name="post_engagement_push", batch_source=source("post_engagement_live"))
post_engagement_live = StreamFeatureView(
    name="post_engagement_live", entities=[post], ttl=NO_TTL, schema=fields("post_engagement_live"),
    source=post_engagement_push, online=True, description=catalog.POST_ENGAGEMENT_LIVE.description,
)

request_context = RequestSource(name="request_context", schema=[Field(name="request_unix", dtype=Int64)])


@on_demand_feature_view(
    sources=[post_content[["created_unix", "mentions", "topic_id"]], user_author_affinity[["friends_since_unix"]],
             user_engagement[["topic_interest", "topic_interest_7d", "topic_interest_rate"]], request_context],
    schema=[Field(name="post_age_bucket", dtype=Int64), Field(name="post_age_hours", dtype=Float32),
            Field(name="user_mentioned", dtype=Int64), Field(name="friendship_days", dtype=Float32),
            Field(name="topic_affinity", dtype=Float32), Field(name="topic_affinity_7d", dtype=Float32),
            Field(name="topic_affinity_rate", dtype=Float32)],
    entities=[user],
    mode="pandas",
    description="Request-time features: post age bucket, whether the reader is mentioned, friendship length, "
                "the reader's interest in the post's topic (30 days, 7 days, decayed rate).",
)
def request_features(inputs: pd.DataFrame) -> pd.DataFrame:
    # Feast rebuilds this function from its source text: imports must live inside it.
    from newsfeed.features.request_time import request_features as compute

    return compute(inputs)


two_tower = FeatureService(
    name="two_tower", features=[user_profile, user_engagement, user_history, post_content, post_engagement],
    description="Inputs of the two-tower retrieval model (user tower and post tower).",
)
ranker = FeatureService(
    name="ranker",
    features=[user_profile, user_engagement, user_history, post_content, post_engagement, post_engagement_live,
              user_author_affinity, request_features],
    description="Inputs of the multi-task ranker: user, post, live counters, user-author affinity, request time.",
)
