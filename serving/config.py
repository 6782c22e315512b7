"""The Ray Serve config of the feed app: what `newsfeed serve build` writes and a KubeRay
RayService embeds as ``serveConfigV2``. Checked with Ray's own ``ServeDeploySchema``."""

from __future__ import annotations

from pathlib import Path

import yaml

from newsfeed import atomic
from newsfeed.errors import NewsfeedError
from serving.settings import ServingSettings


def serve_config(settings: ServingSettings) -> dict:
    from newsfeed.feed.stages import GROUPS

    names = ["feed-ingress"] + ([f"feed-{g.value}" for g in GROUPS] if settings.mode == "chained" else [])
    config = {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": 8000},
        "applications": [{
            "name": "newsfeed",
            "route_prefix": "/",
            "import_path": "serving.app:app_builder",
            "args": settings.model_dump(),
            "deployments": [{"name": n, **settings.deployment_options()} for n in names],
        }],
    }
    check(config)
    return config


class ServeConfigError(NewsfeedError, ValueError):
    """A Serve config Ray would reject, or would accept while ignoring a key."""


def unknown_keys(value, model, where: str = "") -> list[str]:
    """Keys of ``value`` that ``model`` (a pydantic model of Ray's schema) does not declare,
    at any depth: Ray's own schema accepts and silently drops them (a typo'd option)."""
    if not isinstance(value, dict):
        return []
    fields = model.model_fields
    known = set(fields) | {f.alias for f in fields.values() if f.alias}
    found = [f"{where}{key}" for key in value if key not in known]
    for key, item in value.items():
        if key not in fields:
            continue
        for inner in _models(fields[key].annotation):
            items = item if isinstance(item, list) else [item]
            for i, element in enumerate(items):
                label = f"{where}{key}[{i}]." if isinstance(item, list) else f"{where}{key}."
                found += unknown_keys(element, inner, label)
    return found


def _models(annotation) -> list:
    """The pydantic models inside a field's type (List[...], Optional[...], Union[...])."""
    from typing import get_args

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models(arg)]


def check(config: dict) -> None:
    """Ray's ``ServeDeploySchema``, with unknown keys rejected too."""
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    unknown = unknown_keys(config, ServeDeploySchema)
    if unknown:
        raise ServeConfigError(f"unknown keys in the Serve config: {', '.join(unknown)}")
    try:
        ServeDeploySchema.model_validate(config)
    except ValidationError as err:
        first = err.errors()[0]
        raise ServeConfigError(f"invalid Serve config at {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def write_serve_config(settings: ServingSettings, path: Path) -> Path:
    return atomic.write_text(Path(path), yaml.safe_dump(serve_config(settings), sort_keys=False))
