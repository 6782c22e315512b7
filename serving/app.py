"""The Ray Serve application: one ingress deployment (FastAPI) that runs the feed pipeline
in process (``fused``), or calls one deployment per stage group through handles
(``chained``: retrieval, ranking, re-ranking, each scalable on its own). Both run the
stages ``newsfeed.feed.build`` wires; the executor does not know which mode it runs in.

Routes: ``POST /v1/feed``, ``POST /v1/events``, ``GET|PUT /v1/experiments`` (bearer token
``NEWSFEED_ADMIN_TOKEN``), ``GET /healthz``, ``GET /metrics``.
"""


import json
import os
import secrets
import time

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from serving.settings import ServingSettings

ADMIN_TOKEN_ENV = "NEWSFEED_ADMIN_TOKEN"


class FeedBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: int = Field(ge=0)
    limit: int = Field(20, ge=1, le=200)
    cursor: str | None = None
    context: dict = Field(default_factory=dict)


class EventsBody(BaseModel):
    events: list[dict] = Field(min_length=1, max_length=10_000)


class SharesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shares: dict[str, float]


def open_service(settings: ServingSettings):
    import torch

    from newsfeed.feed.service import FeedService

    # One thread per replica: replicas and concurrent requests share the cores, and a
    # second thread slows a 500-candidate forward pass down on a busy 2-core machine.
    torch.set_num_threads(1)

    return FeedService.open(settings.home, settings.data_dir, settings.store, settings.registry,
                            replicate_posts=settings.replicate_posts)


api = FastAPI(title="newsfeed", description="Ranked feeds, events and experiments.")


@serve.deployment(name="feed-ingress")
@serve.ingress(api)
class FeedIngress:
    def __init__(self, settings: dict, groups: dict | None = None):
        from serving.metrics import FeedMetrics

        self.settings = ServingSettings.model_validate(settings)
        self.service = open_service(self.settings)
        self.groups = groups  # stage group -> handle (chained mode)
        self.metrics = FeedMetrics()
        self.token = os.environ.get(ADMIN_TOKEN_ENV, "")
        if groups is None:
            self.service.warm_up()

    def _run_chained(self, arm, ctx):
        from newsfeed.feed.stages import GROUPS, RemoteGroup, run_pipeline

        return run_pipeline([RemoteGroup(lambda c, g=g: self.groups[g].run_group.remote(c, g).result(), g)
                             for g in GROUPS], ctx)

    @api.post("/v1/feed")
    def feed(self, body: FeedBody):
        from newsfeed.feed.service import FeedRequestError

        t0 = time.perf_counter()
        try:
            response = self.service.feed(body.user_id, body.limit, body.cursor, body.context,
                                         run=self._run_chained if self.groups else None)
        except FeedRequestError as err:
            raise HTTPException(422, detail=str(err)) from None
        self.metrics.observe_feed(response, time.perf_counter() - t0)
        # Plain values already: serialised directly, not through FastAPI's generic encoder.
        return Response(json.dumps(response, separators=(",", ":")), media_type="application/json")

    @api.post("/v1/events")
    def events(self, body: EventsBody):
        result = self.service.ingest(body.events)
        self.metrics.events.labels("accepted").inc(result["accepted"])
        self.metrics.events.labels("duplicate").inc(result["duplicates"])
        self.metrics.events.labels("rejected").inc(len(result["rejected"]))
        return result

    def _admin(self, authorization: str | None) -> None:
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not self.token or not secrets.compare_digest(given, self.token):
            why = "set NEWSFEED_ADMIN_TOKEN on the server" if not self.token else "bearer token required"
            raise HTTPException(401, detail=f"unauthorized: {why}", headers={"WWW-Authenticate": "Bearer"})

    @api.get("/v1/experiments")
    def get_experiment(self, authorization: str | None = Header(None)):
        self._admin(authorization)
        return self.service.experiments.read().model_dump(mode="json")

    @api.put("/v1/experiments")
    async def put_experiment(self, request: Request, authorization: str | None = Header(None)):
        """The whole experiment, or ``{"shares": {arm: percent}}`` to change shares only."""
        from pydantic import ValidationError

        from newsfeed.feed.arms import Experiment

        self._admin(authorization)
        try:
            body = await request.json()
            current = self.service.experiments.read()
            updated = (current.with_shares(SharesBody.model_validate(body).shares) if "shares" in body
                       else Experiment.model_validate(body))
        except ValidationError as err:
            raise HTTPException(422, detail=[{k: e[k] for k in ("loc", "msg")} for e in err.errors()]) from None
        except ValueError as err:
            raise HTTPException(422, detail=str(err).splitlines()[0]) from None
        return self.service.experiments.save(updated).model_dump(mode="json")

    @api.get("/healthz")
    def healthz(self):
        return {**self.service.health(), "mode": self.settings.mode}

    @api.get("/metrics")
    def metrics(self):
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4")


@serve.deployment(name="feed-stages")
class StageGroup:
    """One stage group (retrieval, ranking or re-ranking) of every arm's pipeline."""

    def __init__(self, settings: dict, group: str):
        self.service = open_service(ServingSettings.model_validate(settings))
        self.group = group
        self.service.warm_up()

    def run_group(self, ctx, group: str):
        return self.service.run_group(ctx, group)


def build_app(settings: ServingSettings):
    """The bound application for ``serve.run`` (or a Serve config's import path)."""
    from newsfeed.feed.stages import GROUPS

    options = {**settings.scaling(), "ray_actor_options": {"num_cpus": settings.replica_cpus}}
    payload = settings.model_dump()
    if settings.mode == "fused":
        return FeedIngress.options(**options).bind(payload, None)
    groups = {g: StageGroup.options(name=f"feed-{g}", **options).bind(payload, g) for g in GROUPS}
    return FeedIngress.options(**options).bind(payload, groups)


def app_builder(args: dict):
    """Entry point of a Serve config (``import_path: serving.app:app_builder``, ``args``: the settings)."""
    return build_app(ServingSettings.model_validate(args))
