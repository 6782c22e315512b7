"""The Ray Serve config of the feed app: what `newsfeed serve build` writes and a KubeRay
RayService embeds as ``serveConfigV2``. Checked with Ray's own ``ServeDeploySchema``."""

from __future__ import annotations

from pathlib import Path

import yaml

from newsfeed import atomic
from serving.settings import ServingSettings


def serve_config(settings: ServingSettings) -> dict:
    from ray.serve.schema import ServeDeploySchema

    from newsfeed.feed.stages import GROUPS

    names = ["feed-ingress"] + ([f"feed-{g}" for g in GROUPS] if settings.mode == "chained" else [])
    config = {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": 8000},
        "applications": [{
            "name": "newsfeed",
            "route_prefix": "/",
            "import_path": "serving.app:app_builder",
            "args": settings.model_dump(),
            "deployments": [{"name": n, "num_replicas": settings.replicas,
                             "ray_actor_options": {"num_cpus": settings.replica_cpus}} for n in names],
        }],
    }
    ServeDeploySchema.model_validate(config)
    return config


def write_serve_config(settings: ServingSettings, path: Path) -> Path:
    return atomic.write_text(Path(path), yaml.safe_dump(serve_config(settings), sort_keys=False))
