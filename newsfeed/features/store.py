"""Open the Feast store in one of two configurations, chosen without editing files.

``embedded`` (default): parquet joined by DuckDB, sqlite online store, file registry,
all under ``<home>/features``. ``production``: Redis online store, a SQL registry on
PostgreSQL, and training-set joins fanned out over Ray (``ray_offline_store``). The choice
is ``--store`` on the command line or ``NEWSFEED_FEATURE_STORE``; the settings themselves
are the Feast YAML files in ``feature_repo/`` with ``${VAR}`` placeholders filled from the
environment.
"""

from __future__ import annotations

import importlib.util
import os
import re
import string
import threading
import warnings
from pathlib import Path

import yaml

from newsfeed.errors import NewsfeedError

STORE_KINDS = ("embedded", "production")
ONLINE_WRITE_LOCK = threading.Lock()
LOCKED_RETRIES = (0.05, 0.1, 0.2, 0.4, 0.8)  # seconds between tries while another process holds sqlite
"""Feast's sqlite online store writes through one connection per process: two threads writing
at once fail ("cannot start a transaction within a transaction"). Writes only (event counters
mirrored, published posts and users); reads need no lock."""
STORE_ENV = "NEWSFEED_FEATURE_STORE"
CONFIG_FILES = {"embedded": "feature_store.yaml", "production": "feature_store.production.yaml"}
DEFAULTS = {
    "NEWSFEED_FEAST_PROJECT": "newsfeed",
    "NEWSFEED_FEAST_REGISTRY_URL": "postgresql+psycopg2://postgres@127.0.0.1:5432/test",
    "NEWSFEED_REDIS": "127.0.0.1:6379",
    "NEWSFEED_RAY_ADDRESS": "",  # the production store's joins start a local Ray
}


class FeatureStoreError(NewsfeedError, RuntimeError):
    """A feature store that cannot be configured or reached; the message says why."""


def feature_repo_dir() -> Path:
    """The Feast repo's definitions: ``NEWSFEED_FEATURE_REPO``, else ``feature_repo/`` of this checkout."""
    override = os.environ.get("NEWSFEED_FEATURE_REPO")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "feature_repo"


def features_dir(home: Path) -> Path:
    return Path(home).resolve() / "features"


def offline_dir(home: Path) -> Path:
    return features_dir(home) / "offline"


def store_kind(kind: str | None = None) -> str:
    kind = kind or os.environ.get(STORE_ENV) or "embedded"
    if kind not in STORE_KINDS:
        raise FeatureStoreError(f"unknown feature store {kind!r}: choose one of {', '.join(STORE_KINDS)}")
    return kind


def repo_config(home: Path, kind: str | None = None, project: str | None = None, overrides: dict | None = None):
    """The RepoConfig of the chosen configuration, placeholders filled; ``overrides`` replaces
    top-level sections (benchmarks and tests compare one store with another this way)."""
    from feast.repo_config import RepoConfig

    kind = store_kind(kind)
    path = feature_repo_dir() / CONFIG_FILES[kind]
    if not path.exists():
        raise FeatureStoreError(f"{path}: feature store config not found (set NEWSFEED_FEATURE_REPO?)")
    values = {**DEFAULTS, **os.environ, "NEWSFEED_FEATURES_DIR": str(features_dir(home))}
    if project:
        values["NEWSFEED_FEAST_PROJECT"] = project
    text = string.Template(path.read_text()).safe_substitute(values)
    unfilled = re.findall(r"\$\{\w+\}", text)
    if unfilled:
        raise FeatureStoreError(f"{path}: no value for {', '.join(unfilled)} (set it in the environment)")
    config = RepoConfig(**{**yaml.safe_load(text), **(overrides or {})})
    config.repo_path = features_dir(home)
    return config


def quiet_feast() -> None:
    """Silence warnings Feast repeats on every use: stream and on-demand views are
    "experimental", timestamps lose their nanoseconds (Feast keeps microseconds), and a
    DuckDB deprecation inside ibis.
    Feast resets the warning filters when its modules load, so this runs after them."""
    import feast.batch_feature_view  # noqa: F401
    import feast.stream_feature_view  # noqa: F401

    warnings.filterwarnings("ignore", message=".*experimental.*", category=RuntimeWarning)
    warnings.filterwarnings("ignore", message="Discarding nonzero nanoseconds", category=UserWarning)
    # ibis 12 calls a DuckDB method DuckDB 2 renamed, on every join.
    warnings.filterwarnings("ignore", message=r"fetch_arrow_table\(\) is deprecated", category=DeprecationWarning)


def open_store(home: Path, kind: str | None = None, project: str | None = None, check: bool = True,
               overrides: dict | None = None):
    """The Feast store; with ``check``, its Redis and PostgreSQL (when configured) must answer
    within seconds. Paths that degrade without the online store (event ingestion) pass False."""
    from feast import FeatureStore

    quiet_feast()
    config = repo_config(home, kind, project, overrides)
    if check:
        check_services(config)
    directory = features_dir(home)
    directory.mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(directory), config=config)


def check_services(config) -> None:
    """Raise ServiceUnreachable, naming the address, for a configured service that does not answer."""
    from newsfeed.services import check_postgres, check_redis

    registry = config.registry
    if getattr(registry, "registry_type", None) == "sql" and registry.path.startswith("postgresql"):
        check_postgres(registry.path, "the Feast registry")
    if config.online_store.type == "redis":
        check_redis(config.online_store.connection_string, "the Feast online store")


def load_definitions(repo_dir: Path | None = None):
    """Import the repo's definition files and collect their Feast objects, as `feast apply` does."""
    from feast.data_source import DataSource, PushSource
    from feast.entity import Entity
    from feast.feature_service import FeatureService
    from feast.feature_view import FeatureView
    from feast.on_demand_feature_view import OnDemandFeatureView
    from feast.repo_contents import RepoContents
    from feast.stream_feature_view import StreamFeatureView

    repo_dir = Path(repo_dir or feature_repo_dir())
    contents = RepoContents(projects=[], data_sources=[], entities=[], feature_views=[], feature_services=[],
                            on_demand_feature_views=[], stream_feature_views=[], label_views=[], permissions=[])
    buckets = [  # order matters: a StreamFeatureView is also a FeatureView
        (StreamFeatureView, contents.stream_feature_views), (OnDemandFeatureView, contents.on_demand_feature_views),
        (FeatureView, contents.feature_views), (FeatureService, contents.feature_services),
        (Entity, contents.entities), (DataSource, contents.data_sources),
    ]
    for file in sorted(repo_dir.glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"newsfeed_feature_repo_{file.stem}", file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for obj in vars(module).values():
            for kind, bucket in buckets:
                if isinstance(obj, kind):
                    if not any(obj is seen for seen in bucket):
                        bucket.append(obj)
                        batch = obj.batch_source if isinstance(obj, PushSource) else None
                        if batch is not None and not any(batch is seen for seen in contents.data_sources):
                            contents.data_sources.append(batch)
                    break
    return contents


def anchor_sources(contents, root: Path) -> None:
    """Make the file sources' relative paths absolute under ``root`` (the store's repo path).

    Feast's file store resolves a relative path against the repo, but DuckDB and Ray read
    it against the process's working directory: registered absolute, every engine and
    every process reads the same file."""
    from feast.infra.offline_stores.file_source import FileSource

    views = [*contents.feature_views, *contents.stream_feature_views]
    sources = [*contents.data_sources, *(v.batch_source for v in views)]
    for source in sources:
        if isinstance(source, FileSource) and not Path(source.path).is_absolute() and "://" not in source.path:
            source.file_options.uri = str(Path(root) / source.path)


def apply(store, repo_dir: Path | None = None):
    """Register the repo's definitions (and remove ones no longer defined); return the contents."""
    from feast.repo_operations import extract_objects_for_apply_delete

    contents = load_definitions(repo_dir)
    anchor_sources(contents, Path(store.repo_path))
    to_apply, to_delete, _, _ = extract_objects_for_apply_delete(store.project, store.registry, contents)
    store.apply(to_apply, objects_to_delete=to_delete, partial=False)
    return contents


def write_online(write):
    """``write()`` (one online-store write) under ``ONLINE_WRITE_LOCK``, tried again while the
    embedded sqlite store is locked by another process (replicas share the file)."""
    import sqlite3
    import time

    for wait in (*LOCKED_RETRIES, None):
        try:
            with ONLINE_WRITE_LOCK:
                return write()
        except sqlite3.OperationalError as err:
            if wait is None or "locked" not in str(err):
                raise
            time.sleep(wait)
