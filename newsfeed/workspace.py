"""One home's state (data, feature store, model registry), opened the same way by every
pipeline step: empty or missing settings fall back to the environment, then the defaults
(see ``config.Paths``, ``features.store``, ``registry``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from newsfeed.config import Paths


@dataclass
class Workspace:
    paths: Paths
    store_kind: str | None = None
    registry_kind: str | None = None

    @classmethod
    def open(cls, home: str | None = None, data_dir: str | None = None, store: str | None = None,
             registry: str | None = None) -> "Workspace":
        paths = Paths.resolve(home or None, data_dir or None)
        return cls(Paths(home=paths.home.resolve(), data_dir=paths.data_dir.resolve()), store or None, registry or None)

    @property
    def home(self):
        return self.paths.home

    @property
    def data_dir(self):
        return self.paths.data_dir

    @cached_property
    def store(self):
        """The Feast store (raises FeatureStoreError with the reason when it cannot be opened)."""
        from newsfeed.features.store import open_store, store_kind

        return open_store(self.home, store_kind(self.store_kind))

    def check_services(self) -> None:
        """Open the chosen stores now: an unreachable one raises ServiceUnreachable naming it."""
        self.store  # noqa: B018 - opening checks Redis and the SQL registry
        self.registry  # noqa: B018 - opening checks the MLflow backend

    @cached_property
    def registry(self):
        from newsfeed.registry import Registry

        return Registry.open(self.home, self.registry_kind)
