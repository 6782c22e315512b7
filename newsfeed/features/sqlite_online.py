"""The embedded online store: Feast's sqlite store, writing each batch in one statement.

Feast's ``SqliteOnlineStore`` upserts one row per feature per entity with its own
``execute`` call, which made loading the demo's online store a Python loop of a
million statements. This subclass writes the same rows into the same tables with one
``executemany`` per batch; reads, table creation and teardown are Feast's own, so the
file stays a plain Feast sqlite online store. Chosen in ``feature_store.yaml`` by its
class path, Feast's way of naming a custom online store.
"""

from __future__ import annotations

from typing import Literal

from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import extract_text_and_num
from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig, _quote_id, _table_id
from feast.utils import to_naive_utc

TYPE = "newsfeed.features.sqlite_online.BatchedSqliteOnlineStore"


class BatchedSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    type: Literal["newsfeed.features.sqlite_online.BatchedSqliteOnlineStore"] = TYPE


class BatchedSqliteOnlineStore(SqliteOnlineStore):
    def online_write_batch(self, config, table, data, progress) -> None:
        store = config.online_store
        if store.vector_enabled or store.enable_openai_compatible_store:
            # Extra columns Feast fills row by row; nothing here turns them on.
            return super().online_write_batch(config, table, data, progress)
        conn = self._get_conn(config)
        name = _quote_id(_table_id(config.project, table, config.registry.enable_online_feature_view_versioning))
        upsert = (f"INSERT INTO {name} (entity_key, feature_name, value, value_text, event_ts, created_ts) "
                  "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
                  "value = excluded.value, value_text = excluded.value_text, event_ts = excluded.event_ts, "
                  "created_ts = excluded.created_ts;")
        version = config.entity_key_serialization_version
        rows = []
        for entity_key, values, timestamp, created_ts in data:
            key = serialize_entity_key(entity_key, entity_key_serialization_version=version)
            stamp = to_naive_utc(timestamp)
            created = to_naive_utc(created_ts) if created_ts is not None else None
            for feature, value in values.items():
                text, _ = extract_text_and_num(value, False)
                rows.append((key, feature, value.SerializeToString(), text, stamp, created))
        with conn:
            conn.executemany(upsert, rows)
        if progress:
            progress(len(data))
