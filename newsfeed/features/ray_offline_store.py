"""Scale-out training-set joins: Feast's DuckDB join, fanned out over a Ray cluster.

A point-in-time join answers each entity row on its own (the latest feature row at or
before that row's time), so the entity rows are cut into partitions, Ray tasks join one
partition each with Feast's DuckDB store (the code that runs on one machine), and the
partitions are put back together in order: the same training set, value for value.

Feast's own Ray store (``type: ray``, 0.67) was tried first and gives wrong training sets
on this data (docs/benchmarks.md, "Offline side", says how); Spark would need a second set of
source definitions (``SparkSource``) and a JVM in every image. Each task reads the
feature tables itself, so on a cluster their paths must be reachable from every node (the
shared home volume, or object storage).

Selected in a Feast YAML with
``offline_store: {type: newsfeed.features.ray_offline_store.RayDuckDBOfflineStore,
ray_address: ..., rows_per_partition: ...}``; everything but ``get_historical_features``
(pulls for the online store, offline writes) is DuckDB's as it is.
"""

from __future__ import annotations

import math
from typing import Optional

import pandas as pd
import pyarrow as pa
from feast.infra.offline_stores.duckdb import DuckDBOfflineStore, DuckDBOfflineStoreConfig
from feast.infra.offline_stores.offline_store import RetrievalJob
from pydantic import Field, StrictStr

from newsfeed.errors import NewsfeedError


class RayDuckDBOfflineStoreConfig(DuckDBOfflineStoreConfig):
    type: StrictStr = "newsfeed.features.ray_offline_store.RayDuckDBOfflineStore"
    ray_address: Optional[str] = Field(None, description="Ray cluster to join [default: start a local one per join]")
    rows_per_partition: int = Field(50_000, ge=1, description="entity rows each Ray task joins")
    cpus_per_task: float = Field(1.0, gt=0, description="CPUs each join task asks for")


class RayDuckDBOfflineStore(DuckDBOfflineStore):
    @staticmethod
    def get_historical_features(config, feature_views, feature_refs, entity_df, registry, project: str,
                                full_feature_names: bool = False, filter_by_created_timestamp: bool = False):
        if not isinstance(entity_df, pd.DataFrame):
            raise NewsfeedError("the Ray-partitioned offline store joins entity rows given as a DataFrame, "
                                "not a SQL query")
        return PartitionedJoin(config, feature_views, feature_refs, entity_df, full_feature_names,
                               filter_by_created_timestamp)


def single_machine(config):
    """``config`` with the plain DuckDB store: what each partition's task runs."""
    settings = config.offline_store
    copy = config.model_copy()
    copy.offline_config = DuckDBOfflineStoreConfig(
        staging_location=settings.staging_location,
        staging_location_endpoint_override=settings.staging_location_endpoint_override)
    copy._offline_store = None
    return copy


def partitions(entity_df: pd.DataFrame, rows_per_partition: int) -> list[pd.DataFrame]:
    """Contiguous slices of about ``rows_per_partition`` rows, in order (at least one, maybe empty)."""
    count = max(1, math.ceil(len(entity_df) / rows_per_partition))
    bounds = [round(i * len(entity_df) / count) for i in range(count + 1)]
    return [entity_df.iloc[start:end] for start, end in zip(bounds, bounds[1:])]


def join_partition(config, feature_views, feature_refs, entities: pd.DataFrame, full_feature_names: bool,
                   filter_by_created_timestamp: bool) -> pa.Table:
    """One partition through Feast's DuckDB join, on-demand features included (runs in a Ray task)."""
    from feast import FeatureStore

    from newsfeed.features.store import quiet_feast

    quiet_feast()
    store = FeatureStore(repo_path=str(config.repo_path), config=config)
    job = DuckDBOfflineStore.get_historical_features(config, feature_views, feature_refs, entities, store.registry,
                                                     store.project, full_feature_names, filter_by_created_timestamp)
    return job.to_arrow()


class PartitionedJoin(RetrievalJob):
    """The partitions' joins, run as Ray tasks when the result is asked for."""

    def __init__(self, config, feature_views, feature_refs, entity_df, full_feature_names: bool,
                 filter_by_created_timestamp: bool):
        self._config = config
        self._job = (feature_views, feature_refs)
        self._entity_df = entity_df
        self._full_feature_names = full_feature_names
        self._filter_by_created_timestamp = filter_by_created_timestamp

    @property
    def full_feature_names(self) -> bool:
        return self._full_feature_names

    @property
    def on_demand_feature_views(self):
        return []  # applied inside each partition's join

    @property
    def metadata(self):
        return None

    def _to_df_internal(self, timeout: Optional[int] = None) -> pd.DataFrame:
        return self._to_arrow_internal(timeout).to_pandas()

    def _to_arrow_internal(self, timeout: Optional[int] = None) -> pa.Table:
        import ray

        from newsfeed.ray_session import ray_session

        settings = self._config.offline_store
        parts = partitions(self._entity_df, settings.rows_per_partition)
        config = single_machine(self._config)
        with ray_session(settings.ray_address, math.ceil(len(parts) * settings.cpus_per_task)):
            task = ray.remote(num_cpus=settings.cpus_per_task)(join_partition)
            shared = [ray.put(value) for value in (config, *self._job)]
            futures = [task.remote(*shared, part, self._full_feature_names, self._filter_by_created_timestamp)
                       for part in parts]
            tables = ray.get(futures, timeout=timeout)
        # A partition where a list feature is never set types it as null: unify the types.
        return pa.concat_tables(tables, promote_options="permissive")
