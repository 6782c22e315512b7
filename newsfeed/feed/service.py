"""The feed as a plain Python service: what a Ray Serve replica wraps, and what tests,
benchmarks and the command line call in-process.

One ``FeedService`` holds the replica's state (posts, user activity, loaded models, the
experiment) and answers feed requests and event batches. Models are resolved by alias at
most every ``ALIAS_TTL_SECONDS`` and a new version is loaded before it replaces the old
one, so moving an alias (``newsfeed models promote``) changes what is served without a
restart or a failed request. The experiment is a YAML file under the home, re-read when it
changes, so every replica follows a share change within a second.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from newsfeed import atomic
from newsfeed.errors import NewsfeedError
from newsfeed.feed.activity import UserActivity
from newsfeed.feed.arms import Arm, Experiment
from newsfeed.feed.build import Resources, build_pipeline
from newsfeed.feed.context import SOURCES, FeedContext, FeedRequest
from newsfeed.feed.corpus import PostCorpus
from newsfeed.feed.models import RankingModel, RetrievalModel
from newsfeed.feed.ranker_inputs import USER_VIEWS, affinity_tables
from newsfeed.feed.stages import GROUPS, run_pipeline

ALIAS_TTL_SECONDS = 5.0
EXPERIMENT_CHECK_SECONDS = 0.5
LIVE_COUNTER_TTL_SECONDS = 30.0
MAX_CURSOR_POSTS = 1_000


class FeedRequestError(NewsfeedError, ValueError):
    """A request that cannot be served as asked (a malformed cursor, say): a 422, not a 500."""


def serving_dir(home: Path) -> Path:
    return Path(home).resolve() / "serving"


# -- cursors: the posts of earlier pages, so the next page never repeats one -------------

def encode_cursor(post_ids: np.ndarray) -> str:
    ids = np.asarray(post_ids, np.int64)[-MAX_CURSOR_POSTS:]
    return base64.urlsafe_b64encode(zlib.compress(ids.astype("<i8").tobytes())).decode()


def decode_cursor(cursor: str | None) -> np.ndarray:
    if not cursor:
        return np.zeros(0, np.int64)
    try:
        raw = zlib.decompress(base64.urlsafe_b64decode(cursor.encode()))
        if len(raw) % 8:
            raise ValueError("length")
        return np.frombuffer(raw, "<i8").astype(np.int64)
    except (ValueError, zlib.error, TypeError) as err:
        raise FeedRequestError(f"cursor: not a cursor this service issued ({err})") from None


# -- the experiment, versioned on disk -------------------------------------------------------

class ExperimentStore:
    """``<home>/serving/experiment.yaml``; every saved version also kept as ``experiments/v<N>.yaml``."""

    def __init__(self, home: Path):
        self.path = serving_dir(home) / "experiment.yaml"
        self._lock = threading.Lock()
        self._cached, self._stamp, self._checked = Experiment(), None, 0.0

    def current(self) -> Experiment:
        now = time.monotonic()
        if now - self._checked < EXPERIMENT_CHECK_SECONDS:
            return self._cached
        with self._lock:
            self._checked = now
            try:
                stat = self.path.stat()
            except FileNotFoundError:
                self._cached, self._stamp = Experiment(), None
                return self._cached
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp != self._stamp:
                self._cached, self._stamp = self.read(), stamp
            return self._cached

    def read(self) -> Experiment:
        try:
            return Experiment.model_validate(yaml.safe_load(self.path.read_text()) or {})
        except FileNotFoundError:
            return Experiment()
        except (ValueError, yaml.YAMLError) as err:
            raise NewsfeedError(f"{self.path}: not a valid experiment: {str(err).splitlines()[0]}") from None

    def save(self, experiment: Experiment) -> Experiment:
        """Store ``experiment`` as the next version (after the one on disk)."""
        with self._lock:
            saved = experiment.model_copy(update={"version": self.read().version + 1})
            text = yaml.safe_dump(saved.model_dump(mode="json"), sort_keys=False)
            atomic.write_text(self.path.parent / "experiments" / f"v{saved.version}.yaml", text)
            atomic.write_text(self.path, text)
            self._checked = 0.0
        return saved


# -- what was served: the impression log monitoring and off-policy evaluation read ----------

class ServedLog:
    """One JSON line per request, in a file per process and day (replicas never interleave)."""

    def __init__(self, home: Path):
        self.directory = serving_dir(home) / "impressions"
        self._lock = threading.Lock()

    def write(self, record: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{time.strftime('%Y%m%d', time.gmtime())}-{os.getpid()}.jsonl"
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock, open(path, "a") as f:
            f.write(line)

    def read(self) -> list[dict]:
        """Every record; a line cut short by a crash mid-write is skipped."""
        records = []
        for path in sorted(self.directory.glob("*.jsonl")):
            for line in path.read_text().splitlines():
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
        return records


@dataclass
class Clock:
    """Request time. A dataset that ended in the past (the simulator's) is served as if it
    ended when the service started, so the freshness horizon finds its newest posts."""

    offset: float = 0.0

    @classmethod
    def for_data(cls, data_end_unix: float) -> "Clock":
        now = time.time()
        return cls(data_end_unix - now if data_end_unix < now - 86_400 else 0.0)

    def now(self) -> float:
        return time.time() + self.offset


# -- models by alias ---------------------------------------------------------------------------

@dataclass
class ModelCache:
    registry: object
    corpus: PostCorpus
    _resolved: dict = field(default_factory=dict)  # (name, ref) -> (version, when)
    _loaded: dict = field(default_factory=dict)  # (name, version) -> RetrievalModel | RankingModel
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def version(self, name: str, ref: str) -> str:
        if str(ref).isdigit():
            self._resolved[(name, str(ref))] = (str(ref), float("inf"))
            return str(ref)
        hit = self._resolved.get((name, ref))
        if hit and time.monotonic() - hit[1] < ALIAS_TTL_SECONDS:
            return hit[0]
        version = str(self.registry.version(name, ref).version)
        self._resolved[(name, ref)] = (version, time.monotonic())
        return version

    def get(self, name: str, ref: str):
        from newsfeed.registry import TWO_TOWER

        version = self.version(name, ref)
        key = (name, version)
        if key not in self._loaded:
            with self._lock:  # one load per version, however many requests wait for it
                if key not in self._loaded:
                    self._loaded[key] = self._load(name, version, name == TWO_TOWER)
                    # Versions no alias or arm points at any more are let go (memory).
                    current = {(n, v) for (n, _), (v, _) in self._resolved.items()}
                    for stale in [k for k in self._loaded if k not in current]:
                        del self._loaded[stale]
        return self._loaded[key]

    def _load(self, name: str, version: str, two_tower: bool):
        from newsfeed.models.registered import load_index, load_registered

        model, weights, _ = load_registered(self.registry, name, version)
        if two_tower:
            index, _ = load_index(self.registry, version)
            return RetrievalModel.prepare(version, model, index, self.corpus)
        return RankingModel.prepare(version, model, weights, self.corpus)


# -- the service -------------------------------------------------------------------------------

class FeedService:
    def __init__(self, home: Path, data_dir: Path, store, registry, corpus: PostCorpus | None = None,
                 replicate_posts: int = 1):
        """``corpus``: share another replica's (tests); ``replicate_posts``: see
        ``PostCorpus.replicated`` (load benchmarks)."""
        from newsfeed.data.io import read_table
        from newsfeed.features.online_load import latest_rows
        from newsfeed.models.datasets import view_features
        from newsfeed.scoring import load_weights

        self.home, self.data_dir, self.store, self.registry = Path(home), Path(data_dir), store, registry
        self.corpus = corpus or PostCorpus.from_store(
            store, read_table(data_dir, "posts")["post_id"].to_numpy(np.int64)).replicated(replicate_posts)
        self.activity = UserActivity.from_data(data_dir)
        self.affinity = affinity_tables(latest_rows(home, "user_author_affinity"))
        self.user_refs = view_features(store, "ranker", USER_VIEWS)
        self.resources = Resources(self.corpus, self.corpus.popularity(load_weights()), self.read_user,
                                   self.affinity.get)
        self.models = ModelCache(registry, self.corpus)
        self.experiments = ExperimentStore(home)
        self.clock = Clock.for_data(self.activity.latest_unix or time.time())
        self.log = ServedLog(home)
        self.activity.record_served(self.log.read())  # what earlier runs served counts as seen
        self._pipelines: dict = {}
        self._refreshing = threading.Lock()
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow")

    @classmethod
    def open(cls, home: Path, data_dir: Path | None = None, store_kind: str | None = None,
             registry_kind: str | None = None, replicate_posts: int = 1) -> "FeedService":
        from newsfeed.features.store import open_store
        from newsfeed.registry import Registry

        home = Path(home)
        return cls(home, Path(data_dir) if data_dir else home / "data", open_store(home, store_kind),
                   Registry.open(home, registry_kind), replicate_posts=replicate_posts)

    # reading a user: one online-store read of one entity
    def read_user(self, user_id: int) -> dict | None:
        row = self.store.get_online_features(features=self.user_refs, entity_rows=[{"user_id": int(user_id)}],
                                             full_feature_names=True).to_dict()
        values = {k: v[0] for k, v in row.items() if k != "user_id"}
        known = int(user_id) in self.activity.known_users or any(
            v is not None for k, v in values.items() if k.startswith("user_profile__"))
        return values if known else None

    def warm_up(self) -> None:
        """Load every arm's models and run one request through each, so the first user does not wait."""
        import gc

        experiment = self.experiments.current()
        some_user = next(iter(self.activity.known_users), 0)
        for arm in experiment.arms:
            self.run(arm, self.new_context(arm, FeedRequest(some_user, 5, self.clock.now())))
        gc.collect()
        gc.freeze()  # Feast and torch leave ~300k objects: out of the collector's way (NOTES.md)

    def pipeline(self, arm: Arm) -> tuple[list, dict[str, str], list[str]]:
        """(stages, model versions, notes) for ``arm``; an arm whose models cannot be loaded is
        served by the champions, and the notes say so."""
        from newsfeed.registry import RANKER, TWO_TOWER

        notes = []
        try:
            retrieval, ranking = self.models.get(TWO_TOWER, arm.two_tower), self.models.get(RANKER, arm.ranker)
        except Exception as err:  # noqa: BLE001 - any load failure: the champion serves this arm
            notes.append(f"models: arm {arm.name!r} cannot load its models ({str(err).splitlines()[0][:160]}); "
                         "champion served")
            retrieval, ranking = self.models.get(TWO_TOWER, "champion"), self.models.get(RANKER, "champion")
        key = (arm.model_dump_json(), retrieval.version, ranking.version)
        cached = self._pipelines.get(arm.name)
        if cached is None or cached[0] != key:  # one pipeline per arm: a changed arm replaces its own
            cached = self._pipelines[arm.name] = (key, build_pipeline(arm, retrieval, ranking, self.resources))
        return cached[1], {"two_tower": retrieval.version, "ranker": ranking.version}, notes

    def new_context(self, arm: Arm, request: FeedRequest) -> FeedContext:
        return FeedContext(request, self.activity.view(request.user_id), arm=arm.name)

    def run(self, arm: Arm, ctx: FeedContext, groups: tuple[str, ...] = GROUPS) -> FeedContext:
        """``arm``'s stages of ``groups`` on ``ctx``, in process."""
        self._refresh_live()
        stages, versions, notes = self.pipeline(arm)
        ctx.model_versions = versions
        ctx.degraded.extend(n for n in notes if n not in ctx.degraded)
        return run_pipeline([s for s in stages if s.group in groups], ctx)

    def run_group(self, ctx: FeedContext, group: str) -> FeedContext:
        """One stage group on a context (what a chained deployment does per hop)."""
        experiment = self.experiments.current()
        return self.run(experiment.arm(ctx.arm) or experiment.arms[0], ctx, groups=(group,))

    def feed(self, user_id: int, limit: int = 20, cursor: str | None = None, context: dict | None = None,
             run=None) -> dict:
        """The response of ``POST /v1/feed``. ``run(arm, ctx) -> ctx`` replaces the in-process
        pipeline (chained mode calls the stage groups through handles)."""
        exclude = decode_cursor(cursor)
        experiment = self.experiments.current()
        arm = experiment.assign(user_id)
        request = FeedRequest(int(user_id), int(limit), self.clock.now(), uuid.uuid4().hex, exclude, context or {})
        ctx = (run or self.run)(arm, self.new_context(arm, request))
        versions = ctx.model_versions
        c = ctx.candidates
        items = [{"post_id": int(p), "score": round(float(s), 4) if np.isfinite(s) else None, "source": SOURCES[src],
                  "author_id": int(self.corpus.author_ids[r]), "topic_id": int(self.corpus.topic_ids[r]),
                  "topic": str(self.corpus.topic_names[r]),
                  "position": i, "show_probability": round(float(q), 6)}
                 for i, (p, s, src, r, q) in enumerate(zip(c.post_ids, c.score, c.sources, c.rows,
                                                           c.show_probability))]
        shown = np.concatenate([exclude, c.post_ids])
        response = {"request_id": request.request_id, "user_id": int(user_id), "arm": arm.name,
                    "model_versions": versions, "items": items, "degraded": ctx.degraded,
                    "next_cursor": encode_cursor(shown) if items else None,
                    "timings_ms": {k: round(v, 3) for k, v in ctx.timings_ms.items()}}
        if experiment.shadow and experiment.shadow != arm.name:  # its view is taken before this page counts as seen
            shadow = experiment.arm(experiment.shadow)
            self._background.submit(self._shadow, shadow, self.new_context(shadow, request))
        self.activity.mark_seen(user_id, c.post_ids)
        self.log.write({"request_id": request.request_id, "ts": request.now_unix, "user_id": int(user_id),
                        "arm": arm.name, "experiment_version": experiment.version, "model_versions": versions,
                        "degraded": ctx.degraded, "latency_ms": round(sum(ctx.timings_ms.values()), 3),
                        "items": [{k: it[k] for k in ("post_id", "position", "score", "source", "show_probability")}
                                  for it in items]})
        return response

    def _shadow(self, arm: Arm, ctx: FeedContext) -> None:
        """Score the shadow arm on the same request (off the request's path) and log what it
        would have shown."""
        ctx = self.run(arm, ctx)
        self.log.write({"request_id": ctx.request.request_id, "ts": ctx.request.now_unix,
                        "user_id": ctx.request.user_id, "arm": arm.name, "shadow": True,
                        "model_versions": ctx.model_versions, "degraded": ctx.degraded,
                        "items": [{"post_id": int(p), "position": i, "score": float(s)}
                                  for i, (p, s) in enumerate(zip(ctx.candidates.post_ids, ctx.candidates.score))]})

    def ingest(self, events: list[dict]) -> dict:
        """``POST /v1/events``: through the feature store's ingestion path (durable, idempotent,
        counters pushed); hides and blocks take effect in this replica's filters at once."""
        from newsfeed.features.ingest import ingest_events

        result = ingest_events(events, self.data_dir, self.store)
        rejected = {r.index for r in result.rejected}
        accepted = [e for i, e in enumerate(events) if i not in rejected]
        if accepted:
            self.activity.record_events(pd.DataFrame(accepted))
        return {"accepted": result.accepted, "duplicates": result.duplicates,
                "rejected": [{"index": r.index, "reason": r.reason} for r in result.rejected],
                "counters_updated": result.counters_updated, "online_error": result.online_error}

    def _refresh_live(self) -> None:
        """Once the live counters are older than the TTL, re-read them on a background thread."""
        if time.time() - self.corpus.live_read_unix > LIVE_COUNTER_TTL_SECONDS and not self._refreshing.locked():
            self.corpus.live_read_unix = time.time()  # requests go on with the current values meanwhile
            threading.Thread(target=self._refresh_now, name="live-counters", daemon=True).start()

    def _refresh_now(self) -> None:
        with self._refreshing:
            try:
                self.corpus.refresh_live(self.store)
                for model in list(self.models._loaded.values()):
                    if isinstance(model, RankingModel):  # its post-side inputs hold the counters
                        model.encode_corpus(self.corpus.frame)
            except Exception:  # noqa: BLE001 - stale counters are better than a failed refresh loop
                pass

    def health(self) -> dict:
        experiment = self.experiments.current()
        return {"status": "ok", "posts": len(self.corpus), "users": len(self.activity.known_users),
                "experiment": {"name": experiment.name, "version": experiment.version,
                               "arms": {a.name: a.share for a in experiment.arms}},
                "models_loaded": sorted(f"{n} v{v}" for n, v in self.models._loaded)}
