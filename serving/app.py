"""The Ray Serve application: one ingress deployment (FastAPI) that runs the feed pipeline
in process (``fused``), or calls one deployment per stage group through handles
(``chained``: retrieval, ranking, re-ranking, each scalable on its own). Both run the
stages ``newsfeed.feed.build`` wires; the executor does not know which mode it runs in.

Routes: ``POST /v1/feed``; ``POST /v1/events``, ``/v1/posts``, ``/v1/users``,
``/v1/friendships`` (bearer token ``NEWSFEED_INGEST_TOKEN`` when set); ``GET|PUT /v1/experiments`` and ``PUT /v1/clock`` (bearer token ``NEWSFEED_ADMIN_TOKEN``), ``GET /healthz``,
``GET /metrics``. Every field is bounded (ids fit int64, bodies at most ``MAX_BODY_BYTES``,
cursors signed and capped); what a client sends can degrade its own answer, never a replica.
"""


import json
import os
import secrets
import socket
import time
from typing import Annotated, Any

from fastapi import Body, FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from newsfeed.errors import first_line
from newsfeed.feed.cursor import MAX_CURSOR_CHARS
from serving.limits import INT64_MAX, BodyLimit
from serving.settings import ServingSettings

ADMIN_TOKEN_ENV = "NEWSFEED_ADMIN_TOKEN"
INGEST_TOKEN_ENV = "NEWSFEED_INGEST_TOKEN"
MAX_EVENTS = 10_000
MAX_ITEMS = 1_000  # posts, users or friendships per request
MAX_TEXT = 20_000  # characters of a post


class FeedBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: int = Field(ge=0, le=INT64_MAX)
    limit: int = Field(20, ge=1, le=200)
    cursor: str | None = Field(None, max_length=MAX_CURSOR_CHARS)
    context: dict[str, str | int | float | bool | None] = Field(default_factory=dict, max_length=32)
    explain: bool = Field(False, description="list each candidate source's posts in the answer (debugging)")


class EventItem(BaseModel):
    """One reaction. Types are checked here (422 for the request); whether the user and post
    exist and the time makes sense is checked per event (its index in ``rejected``)."""
    model_config = ConfigDict(extra="forbid")
    user_id: int = Field(ge=0, le=INT64_MAX)
    post_id: int = Field(ge=0, le=INT64_MAX)
    event_type: str = Field(min_length=1, max_length=32)
    value: float | None = Field(None, allow_inf_nan=False, ge=-1e9, le=1e9)
    ts: str | None = Field(None, max_length=64, description="ISO 8601; default: when it arrives")
    event_id: str | None = Field(None, min_length=1, max_length=128, description="makes a retry idempotent")


class EventsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[EventItem] = Field(min_length=1, max_length=MAX_EVENTS)


class PostItem(BaseModel):
    """A post as the canonical contract has it; whether its author exists and its time makes
    sense is checked per item (its index in ``rejected``)."""
    model_config = ConfigDict(extra="forbid")
    post_id: int = Field(ge=0, le=INT64_MAX)
    author_id: int | None = Field(None, ge=0, le=INT64_MAX)
    text: str = Field(max_length=MAX_TEXT)
    hashtags: list[Annotated[str, Field(max_length=100)]] = Field(default_factory=list, max_length=64)
    mentions: list[Annotated[int, Field(ge=0, le=INT64_MAX)]] = Field(default_factory=list, max_length=64)
    media_type: str = Field("text", max_length=16)
    topic: str = Field(min_length=1, max_length=64)
    created_ts: str | None = Field(None, max_length=64, description="ISO 8601; default: the service's now")


class UserItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: int = Field(ge=0, le=INT64_MAX)
    age: int | None = Field(None, ge=0, le=200)
    gender: str | None = Field(None, max_length=8)
    country: str | None = Field(None, max_length=8)
    language: str | None = Field(None, max_length=16)
    timezone: str | None = Field(None, max_length=64)
    signup_ts: str | None = Field(None, max_length=64, description="ISO 8601; default: the service's now")


class FriendshipItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: int = Field(ge=0, le=INT64_MAX)
    friend_id: int = Field(ge=0, le=INT64_MAX)
    close_friend: bool = False
    family: bool = False
    formed_ts: str | None = Field(None, max_length=64, description="ISO 8601; default: the service's now")
    ended: bool = Field(False, description="true: the friendship ends")


class PostsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    posts: list[PostItem] = Field(min_length=1, max_length=MAX_ITEMS)


class UsersBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    users: list[UserItem] = Field(min_length=1, max_length=MAX_ITEMS)


class FriendshipsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    friendships: list[FriendshipItem] = Field(min_length=1, max_length=MAX_ITEMS)


class ClockBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    now: str = Field(min_length=1, max_length=64, description="ISO 8601: the simulated time from now on")


class SharesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shares: dict[str, float] = Field(max_length=64)


def open_service(settings: ServingSettings):
    import torch

    from newsfeed.feed.service import FeedService

    # One thread per replica: replicas and concurrent requests share the cores, and a
    # second thread slows a 500-candidate forward pass down on a busy 2-core machine.
    torch.set_num_threads(1)
    # A registry server that is down must be noticed in seconds, not after MLflow's minutes of
    # retries (aliases are re-resolved off the request path, and the last versions serve).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

    return FeedService.open(settings.home, settings.data_dir, settings.store, settings.registry,
                            replicate_posts=settings.replicate_posts, state_kind=settings.state,
                            clock=settings.clock, window_days=settings.window_days)


api = FastAPI(title="newsfeed", description="Ranked feeds, events and experiments.")
api.add_middleware(BodyLimit)


def bearer_matches(authorization: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time as bytes (a header may hold
    any byte: Starlette decodes it as latin-1)."""
    if not token or not authorization or not authorization.startswith("Bearer "):
        return False
    given = authorization[len("Bearer "):].strip().encode("latin-1", "replace")
    return secrets.compare_digest(given, token.encode())


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
        self.ingest_token = os.environ.get(INGEST_TOKEN_ENV, "")
        self.replica = f"{socket.gethostname()}:{os.getpid()}"  # which replica answered (X-Replica, /healthz)
        if groups is None:
            self.service.warm_up()
        # The text model a published post is embedded with, loaded now: not by the first publisher (~4 s).
        from newsfeed.features.text import encode

        encode(["warm up"])

    def _run_chained(self, arm, ctx):
        from newsfeed.feed.stages import GROUPS, RemoteGroup, run_pipeline

        return run_pipeline([RemoteGroup(lambda c, g=g: self.groups[g].run_group.remote(c, g).result(), g)
                             for g in GROUPS], ctx)

    @api.post("/v1/feed")
    def feed(self, body: FeedBody):
        from newsfeed.feed.cursor import CursorError

        t0 = time.perf_counter()
        try:
            response = self.service.feed(body.user_id, body.limit, body.cursor, body.context,
                                         run=self._run_chained if self.groups else None, explain=body.explain)
        except CursorError as err:
            raise HTTPException(422, detail=str(err)) from None
        self.metrics.observe_feed(response, time.perf_counter() - t0)
        # Plain values already: serialised directly, not through FastAPI's generic encoder.
        return Response(json.dumps(response, separators=(",", ":")), media_type="application/json",
                        headers={"X-Replica": self.replica})

    def _ingest(self, authorization: str | None) -> None:
        if self.ingest_token and not bearer_matches(authorization, self.ingest_token):
            raise HTTPException(401, detail="unauthorized: the ingest token is required",
                                headers={"WWW-Authenticate": "Bearer"})

    @api.post("/v1/events")
    def events(self, body: EventsBody, authorization: str | None = Header(None)):
        """Reactions (ingest token, when ``NEWSFEED_INGEST_TOKEN`` is set): durable, idempotent by
        ``event_id``, counted once on every replica."""
        self._ingest(authorization)
        result = self.service.ingest([e.model_dump(exclude_none=True) for e in body.events])
        self.metrics.events.labels("accepted").inc(result["accepted"])
        self.metrics.events.labels("duplicate").inc(result["duplicates"])
        self.metrics.events.labels("rejected").inc(len(result["rejected"]))
        return result

    def _publish(self, table: str, items: list, authorization: str | None) -> dict:
        from newsfeed.features.publish import PublishUnavailable

        self._ingest(authorization)
        try:
            result = self.service.publish(table, [i.model_dump(exclude_none=True) for i in items])
        except PublishUnavailable as err:  # nothing was logged: the same batch may be sent again
            raise HTTPException(503, detail=str(err)) from None
        for outcome in ("accepted", "duplicates"):
            self.metrics.published.labels(table, outcome).inc(result[outcome])
        self.metrics.published.labels(table, "rejected").inc(len(result["rejected"]))
        return result

    @api.post("/v1/posts")
    def posts(self, body: PostsBody, authorization: str | None = Header(None)):
        """New posts (ingest token): in every replica's feeds within seconds, and in the next
        training run. Idempotent by ``post_id``."""
        return self._publish("posts", body.posts, authorization)

    @api.post("/v1/users")
    def users(self, body: UsersBody, authorization: str | None = Header(None)):
        """New users (ingest token): a cold-start feed at once. Idempotent by ``user_id``."""
        return self._publish("users", body.users, authorization)

    @api.post("/v1/friendships")
    def friendships(self, body: FriendshipsBody, authorization: str | None = Header(None)):
        """Friendships formed, or ended (``"ended": true``) (ingest token): the in-network
        source follows at once."""
        return self._publish("friendships", body.friendships, authorization)

    def _admin(self, authorization: str | None) -> None:
        if not bearer_matches(authorization, self.token):
            why = "set NEWSFEED_ADMIN_TOKEN on the server" if not self.token else "the admin token is required"
            raise HTTPException(401, detail=f"unauthorized: {why}", headers={"WWW-Authenticate": "Bearer"})

    @staticmethod
    def _versioned(experiment, status: int = 200) -> JSONResponse:
        from newsfeed.feed.experiments import etag

        return JSONResponse(experiment.model_dump(mode="json"), status, headers={"ETag": etag(experiment)})

    @api.get("/v1/experiments")
    def get_experiment(self, authorization: str | None = Header(None)):
        """The experiment; its version is the ``ETag`` a ``PUT`` names in ``If-Match``."""
        from newsfeed.feed.user_state import StateError

        self._admin(authorization)
        try:
            return self._versioned(self.service.experiments.read())
        except StateError as err:
            raise HTTPException(503, detail=str(err)) from None

    @api.put("/v1/experiments")
    def put_experiment(self, body: dict[str, Any] = Body(..., max_length=64),
                       authorization: str | None = Header(None), if_match: str | None = Header(None)):
        """The whole experiment, or ``{"shares": {arm: percent}}`` to change shares only. With
        ``If-Match: "<version>"`` the change is refused (409, the current version in ``ETag``)
        when another writer changed the experiment since that version."""
        from pydantic import ValidationError

        from newsfeed.feed.arms import Experiment
        from newsfeed.feed.experiments import VersionConflict, etag, parse_if_match
        from newsfeed.feed.user_state import StateError

        self._admin(authorization)
        try:
            expected = parse_if_match(if_match)
            current = self.service.experiments.read()
            if expected is None and "shares" in body:
                expected = current.version  # a relative change: based on what was read
            updated = (current.with_shares(SharesBody.model_validate(body).shares) if "shares" in body
                       else Experiment.model_validate(body))
            return self._versioned(self.service.experiments.save(updated, expected))
        except VersionConflict as err:
            return JSONResponse({"detail": str(err), "current_version": err.current.version}, 409,
                                headers={"ETag": etag(err.current)})
        except StateError as err:  # the store is down: nothing changed, try again later
            raise HTTPException(503, detail=str(err)) from None
        except ValidationError as err:
            raise HTTPException(422, detail=[{k: e[k] for k in ("loc", "msg")} for e in err.errors()]) from None
        except ValueError as err:
            raise HTTPException(422, detail=first_line(err)) from None

    @api.put("/v1/clock")
    def put_clock(self, body: ClockBody, authorization: str | None = Header(None)):
        """The simulated time (admin token; a service on ``NEWSFEED_CLOCK=simulated``): every
        replica follows within ``SIMULATED_CHECK_SECONDS``. Only forward; 409 on any other clock."""
        from newsfeed.feed.clock import ClockError
        from newsfeed.feed.user_state import StateError

        self._admin(authorization)
        try:
            return self.service.set_time(body.now)
        except ClockError as err:
            raise HTTPException(409 if self.service.clock.kind != "simulated" else 422, detail=str(err)) from None
        except StateError as err:
            raise HTTPException(503, detail=str(err)) from None

    @api.get("/healthz")
    def healthz(self):
        return {**self.service.health(), "mode": self.settings.mode, "replica": self.replica}

    @api.get("/metrics")
    def metrics(self):
        self.metrics.served_log_skipped.set(self.service.log.skipped)  # the log's last read (start or catch-up)
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4",
                        headers={"X-Replica": self.replica})  # each replica counts its own


@serve.deployment(name="feed-stages")
class StageGroup:
    """One stage group (retrieval, ranking or re-ranking) of every arm's pipeline."""

    def __init__(self, settings: dict, group):
        self.service = open_service(ServingSettings.model_validate(settings))
        self.group = group
        self.service.warm_up()

    def run_group(self, ctx, group):
        return self.service.run_group(ctx, group)


def build_app(settings: ServingSettings):
    """The bound application for ``serve.run`` (or a Serve config's import path)."""
    from newsfeed.feed.stages import GROUPS

    options = settings.deployment_options()
    payload = settings.model_dump()
    if settings.mode == "fused":
        return FeedIngress.options(**options).bind(payload, None)
    groups = {g: StageGroup.options(name=f"feed-{g.value}", **options).bind(payload, g) for g in GROUPS}
    return FeedIngress.options(**options).bind(payload, groups)


def app_builder(args: dict):
    """Entry point of a Serve config (``import_path: serving.app:app_builder``, ``args``: the settings)."""
    return build_app(ServingSettings.model_validate(args))
