"""The feed as a plain Python service: what a Ray Serve replica wraps, and what tests,
benchmarks and the command line call in-process.

``FeedService`` answers feed requests and event batches from its parts: the replica's own
state (posts, user directory, loaded models: caches it can rebuild), the user-state store
every replica shares (seen, hidden, blocked, counters, event ids), the experiment store
(compare-and-swap, followed within a second), the cursor codec, the response a run
pipeline makes (``handler.py``) and the effects a served request has (``effects.py``).
Published content reaches the replica through the content follower (``replica.py``: posts
into the corpus and every loaded model, users and friendships into the directory), and
posts older than the window leave in a new corpus swapped in whole (``slide_window``).
Models are resolved by alias at most every ``ALIAS_TTL_SECONDS``, off the request path, and
a new version is loaded before it replaces the old one, so moving an alias changes what is
served without a restart; while the registry cannot be reached, the last resolved versions
keep serving and the response says so.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from newsfeed.feed import handler
from newsfeed.feed.activity import UserDirectory, apply_ingested, load_history
from newsfeed.feed.arms import Arm
from newsfeed.feed.build import Resources, build_pipeline
from newsfeed.feed.clock import clock_kind, open_clock
from newsfeed.feed.context import FeedContext, FeedRequest, UserView
from newsfeed.feed.content import open_channel
from newsfeed.feed.corpus import WINDOW_DAYS, PostCorpus, read_posts
from newsfeed.feed.cursor import CursorCodec
from newsfeed.feed.effects import FeedEffects
from newsfeed.feed.experiments import ExperimentStore
from newsfeed.feed.models import RankingModel, RetrievalModel
from newsfeed.feed.ranker_inputs import USER_VIEWS, affinity_tables
from newsfeed.feed.replica import ContentFollower
from newsfeed.feed.served_log import ServedLog
from newsfeed.feed.stages import GROUPS, Group, in_groups, run_pipeline
from newsfeed.feed.user_state import StateError, UserSnapshot, open_user_state
from newsfeed.schema import REACTIONS

ALIAS_TTL_SECONDS = 5.0
LIVE_COUNTER_TTL_SECONDS = 30.0
WINDOW_CHECK_SECONDS = 60.0

# -- models by alias ---------------------------------------------------------------------------

def _why(err: Exception, limit: int = 160) -> str:
    """An error's first line, bounded: what a response's ``degraded`` note carries."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:limit]


@dataclass
class ModelCache:
    """Registered models by alias. An alias is resolved inline only the first time; after that
    it is re-resolved at most every ``ALIAS_TTL_SECONDS`` on a background thread, which loads a
    new version before publishing it, so a request never waits on the registry: while the
    registry cannot be reached, the last resolved versions serve and ``registry_error`` says why."""

    registry: object
    corpus: PostCorpus
    registry_error: str | None = None
    _resolved: dict = field(default_factory=dict)  # (name, ref) -> (version, when)
    _loaded: dict = field(default_factory=dict)  # (name, version) -> RetrievalModel | RankingModel
    _refreshing: set = field(default_factory=set)
    _student_looked: dict = field(default_factory=dict)  # ranker version -> when its pre-ranker was last looked for

    def version(self, name: str, ref: str) -> str:
        if str(ref).isdigit():
            self._resolved[(name, str(ref))] = (str(ref), float("inf"))
            return str(ref)
        hit = self._resolved.get((name, ref))
        if hit is None:  # first use (warm-up): nothing to serve meanwhile
            return self._resolve(name, ref)
        if time.monotonic() - hit[1] >= ALIAS_TTL_SECONDS and (name, ref) not in self._refreshing:
            self._refreshing.add((name, ref))
            threading.Thread(target=self._refresh, args=(name, ref), name="alias-refresh", daemon=True).start()
        return hit[0]

    def _resolve(self, name: str, ref: str) -> str:
        version = str(self.registry.version(name, ref).version)
        self._resolved[(name, ref)] = (version, time.monotonic())
        return version

    def _refresh(self, name: str, ref: str) -> None:
        try:
            found = self.registry.version(name, ref)
            version = str(found.version)
            self._ensure_loaded(name, version)  # loaded before any request is pointed at it
            self._resolved[(name, ref)] = (version, time.monotonic())
            self.registry_error = None
        except Exception as err:  # noqa: BLE001 - any registry failure: the last resolved version serves
            self.registry_error = f"cannot resolve {name}@{ref}, serving the last resolved versions ({_why(err)})"
            last = self._resolved[(name, ref)][0]
            self._resolved[(name, ref)] = (last, time.monotonic())  # asked again after the TTL, not per request
        finally:
            self._refreshing.discard((name, ref))

    def _student(self, version: str):
        """(the ranker version's distilled pre-ranker or None, why it could not be loaded or None):
        a student that cannot be downloaded leaves the two-tower cut serving, not the ranker unloaded."""
        from newsfeed.models.registered import load_prerank

        try:
            return load_prerank(self.registry, version), None
        except Exception as err:  # noqa: BLE001 - any failure: the response says why
            return None, _why(err)
        finally:
            self._student_looked[version] = time.monotonic()

    def _look_for_student(self, version: str) -> None:
        """A ranker version serving without its pre-ranker (registered before the pipeline
        distilled it, or its download failed), by alias or by number: looked for again
        ``ALIAS_TTL_SECONDS`` after the last look ended, on a background thread."""
        if time.monotonic() - self._student_looked.get(version, 0.0) < ALIAS_TTL_SECONDS:
            return
        self._student_looked[version] = float("inf")  # one look at a time
        threading.Thread(target=self._add_student, args=(version,), name="prerank-lookup", daemon=True).start()

    def _add_student(self, version: str) -> None:
        from newsfeed.registry import RANKER

        loaded = self._loaded.get((RANKER, version))
        if loaded is None or loaded.student is not None:
            return
        student, error = self._student(version)
        if student is not None:
            try:
                with self.corpus.lock:  # as refresh_shared: the prepared inputs replaced whole, in the stages' model
                    loaded.add_student(student, self.corpus.frame)
                return
            except Exception as err:  # noqa: BLE001 - a student that does not fit its ranker: the two-tower cut serves
                error = f"it does not fit the ranker: {_why(err, 120)}"
        loaded.student_error = error

    def get(self, name: str, ref: str):
        from newsfeed.registry import RANKER

        model = self._ensure_loaded(name, self.version(name, ref))
        if name == RANKER and model.student is None:
            self._look_for_student(model.version)
        return model

    def _ensure_loaded(self, name: str, version: str):
        from newsfeed.registry import TWO_TOWER

        key = (name, version)
        while key not in self._loaded:
            # One load per version, however many requests wait for it; under the corpus's lock,
            # so posts published meanwhile wait and then reach this version too (and a window
            # that replaced the corpus meanwhile: loaded again on the new one).
            corpus = self.corpus
            with corpus.lock:
                if key not in self._loaded and corpus is self.corpus:
                    self._loaded[key] = self._load(name, version, name == TWO_TOWER)
                    # Versions no alias or arm points at any more are let go (memory).
                    current = {(n, v) for (n, _), (v, _) in self._resolved.items()} | {key}
                    for stale in [k for k in self._loaded if k not in current]:
                        del self._loaded[stale]
        return self._loaded[key]

    def loaded(self) -> list:
        return list(self._loaded.values())

    def extend(self, frame) -> None:
        """Every loaded model with the posts about to join the corpus (under its lock)."""
        for model in self.loaded():
            model.extend(frame)

    def move_to(self, corpus: PostCorpus) -> None:
        """Every loaded model prepared over ``corpus``, then swapped in with it (under the old
        corpus's lock: nothing is added or loaded on the old one meanwhile)."""
        with self.corpus.lock:
            loaded = {key: model.on(corpus) for key, model in list(self._loaded.items())}
            self._loaded, self.corpus = loaded, corpus

    def loaded_versions(self) -> list[str]:
        return sorted(f"{name} v{version}" for name, version in self._loaded)

    def _load(self, name: str, version: str, two_tower: bool):
        from newsfeed.models.registered import load_index, load_registered

        model, weights, _ = load_registered(self.registry, name, version)
        if two_tower:
            index, _ = load_index(self.registry, version)
            return RetrievalModel.prepare(version, model, index, self.corpus)
        student, error = self._student(version)
        return RankingModel.prepare(version, model, weights, self.corpus, student, student_error=error)


# -- the service -------------------------------------------------------------------------------

class FeedService:
    def __init__(self, home: Path, data_dir: Path, store, registry, corpus: PostCorpus | None = None,
                 replicate_posts: int = 1, state=None, experiments: ExperimentStore | None = None,
                 clock: str | None = None, window_days: float = WINDOW_DAYS):
        """``corpus``: share another replica's (tests); ``replicate_posts``: see
        ``PostCorpus.replicated`` (load benchmarks); ``state``, ``experiments``: the shared
        stores (default: the home's embedded ones); ``clock``: see ``newsfeed.feed.clock``."""
        from newsfeed.data.io import read_table
        from newsfeed.features.online_load import latest_rows
        from newsfeed.models.datasets import view_features

        self.home, self.data_dir, self.store, self.registry = Path(home), Path(data_dir), store, registry
        clock_kind(clock)  # checked before the work
        self.corpus = corpus or PostCorpus.from_store(
            store, read_table(data_dir, "posts")["post_id"].to_numpy(np.int64)).replicated(replicate_posts)
        self.directory = UserDirectory.from_data(data_dir)
        self.affinity = affinity_tables(latest_rows(home, "user_author_affinity"))
        self.user_refs = view_features(store, "ranker", USER_VIEWS)
        self.resources = Resources(self.corpus, self.read_user, self.affinity.get)
        self.models = ModelCache(registry, self.corpus)
        self.experiments = experiments or ExperimentStore.open(home, "embedded")
        self.state = state or open_user_state(home, "embedded")
        self.cursors = CursorCodec.for_home(home)
        self.clock = open_clock(clock, self.directory.latest_unix, self.state, self.data_dir)
        self.log = ServedLog(home)
        self.effects = FeedEffects(self.state, self.log, self.run)
        self._load_history()
        self._pipelines: dict = {}
        self._refreshing = threading.Lock()
        self.window_days = window_days
        self._window_checked = time.monotonic()
        self.content = ContentFollower(open_channel(self.state, self.data_dir), {
            "users": self.directory.add_users, "posts": self._add_posts,
            "friendships": self.directory.apply_friendships}, after=self._keep_window)
        self.content.catch_up()  # what was published before this replica started is in its data already
        self.content.start()

    @classmethod
    def open(cls, home: Path, data_dir: Path | None = None, store_kind: str | None = None,
             registry_kind: str | None = None, replicate_posts: int = 1,
             state_kind: str | None = None, clock: str | None = None,
             window_days: float = WINDOW_DAYS) -> "FeedService":
        from newsfeed.features.store import open_store
        from newsfeed.registry import Registry

        home = Path(home)
        return cls(home, Path(data_dir) if data_dir else home / "data", open_store(home, store_kind),
                   Registry.open(home, registry_kind), replicate_posts=replicate_posts,
                   state=open_user_state(home, state_kind),  # unreachable now: degraded, not down
                   experiments=ExperimentStore.open(home, state_kind), clock=clock, window_days=window_days)

    def _load_history(self) -> None:
        """The data's history and earlier runs' served log into the shared store, once. A store
        that cannot be reached now does not stop the replica: the 30 s catch-up loads it."""
        try:
            load_history(self.state, self.data_dir, self.directory, self.log.read)
        except StateError:
            pass  # requests say so in `degraded` while the store is down

    # reading a user: one online-store read of one entity
    def read_user(self, user_id: int) -> dict | None:
        row = self.store.get_online_features(features=self.user_refs, entity_rows=[{"user_id": int(user_id)}],
                                             full_feature_names=True).to_dict()
        values = {k: v[0] for k, v in row.items() if k != "user_id"}
        known = int(user_id) in self.directory.known_users or any(
            v is not None for k, v in values.items() if k.startswith("user_profile__"))
        return values if known else None

    def user_view(self, user_id: int, now_unix: float | None = None) -> tuple[UserView, str | None]:
        """The user as the filters and sources see them (one read of the shared store), and why
        the store's part is missing when it could not be read."""
        user_id, note = int(user_id), None
        try:
            snapshot = self.state.read(user_id, self.clock.now() if now_unix is None else now_unix)
        except StateError as err:
            snapshot, note = UserSnapshot(), f"user_state: {str(err)[:200]}; served without seen, hidden and blocked"
        d = self.directory
        empty = np.zeros(0, np.int64)
        return UserView(user_id=user_id, known=user_id in d.known_users, seen=snapshot.seen, hidden=snapshot.hidden,
                        blocked_authors=snapshot.blocked_authors, new_comments=snapshot.new_comments,
                        friends=d.friends.get(user_id, empty),
                        close_friends=d.close_friends.get(user_id, empty)), note

    def warm_up(self) -> None:
        """Load every arm's models and run one request through each, so the first user does not wait."""
        import gc

        experiment = self.experiments.current()
        some_user = next(iter(self.directory.known_users), 0)
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
            notes.append(f"models: arm {arm.name!r} cannot load its models ({_why(err)}); "
                         "champion served")
            retrieval, ranking = self.models.get(TWO_TOWER, "champion"), self.models.get(RANKER, "champion")
        if self.models.registry_error:
            notes.append(f"registry: {self.models.registry_error}")
        key = (arm.model_dump_json(), retrieval.version, ranking.version)
        cached = self._pipelines.get(arm.name)
        if cached is None or cached[0] != key:  # one pipeline per arm: a changed arm replaces its own
            cached = self._pipelines[arm.name] = (key, build_pipeline(arm, retrieval, ranking, self.resources))
        return cached[1], {"two_tower": retrieval.version, "ranker": ranking.version}, notes

    def new_context(self, arm: Arm, request: FeedRequest) -> FeedContext:
        t0 = time.perf_counter()
        view, note = self.user_view(request.user_id, request.now_unix)
        ctx = FeedContext(request, view, arm=arm.name, timings_ms={"user_state": (time.perf_counter() - t0) * 1e3})
        if note:
            ctx.degraded.append(note)
        return ctx

    def run(self, arm: Arm, ctx: FeedContext, groups: tuple[Group, ...] = GROUPS) -> FeedContext:
        """``arm``'s stages of ``groups`` on ``ctx``, in process."""
        self._refresh_live()
        stages, versions, notes = self.pipeline(arm)
        ctx.model_versions = versions
        ctx.degraded.extend(n for n in notes if n not in ctx.degraded)
        return run_pipeline([s for s in stages if in_groups(s, groups)], ctx)

    def run_group(self, ctx: FeedContext, group: Group) -> FeedContext:
        """One stage group on a context (what a chained deployment does per hop). Candidates
        travel by post id: each replica finds them in its own corpus (rows differ between
        replicas once posts are published)."""
        ctx.candidates = ctx.candidates.on(self.corpus)
        experiment = self.experiments.current()
        return self.run(experiment.arm(ctx.arm) or experiment.arms[0], ctx, groups=(group,))

    def feed(self, user_id: int, limit: int = 20, cursor: str | None = None, context: dict | None = None,
             run=None, explain: bool = False) -> dict:
        """The response of ``POST /v1/feed``. ``run(arm, ctx) -> ctx`` replaces the in-process
        pipeline (chained mode calls the stage groups through handles)."""
        exclude = self.cursors.decode(user_id, cursor)
        experiment = self.experiments.current()
        arm = experiment.assign(user_id)
        request = FeedRequest(int(user_id), int(limit), self.clock.now(), uuid.uuid4().hex, exclude, context or {},
                              explain)
        ctx = self.new_context(arm, request)
        if experiment.shadow and experiment.shadow != arm.name:  # its view is taken before this page counts as seen
            shadow = experiment.arm(experiment.shadow)
            self.effects.shadow(shadow, FeedContext(request, ctx.user, arm=shadow.name))
        ctx = self._run_arm(experiment, arm, ctx, run or self.run)
        # By post id: another replica's rows (chained), or a window that moved meanwhile.
        corpus = self.corpus
        ctx.candidates = ctx.candidates.on(corpus)
        answer = handler.response(ctx, corpus, self.cursors)
        self.effects.served(ctx, answer, experiment.version)
        return answer

    @staticmethod
    def _run_arm(experiment, arm: Arm, ctx: FeedContext, run) -> FeedContext:
        """``arm``'s pipeline on ``ctx``; an interleaving arm runs its two arms on copies of the
        request (each its own user vector) and merges their pages by team draft."""
        if arm.interleave is None:
            return run(arm, ctx)
        from dataclasses import replace

        from newsfeed.feed.interleaving import interleave

        sides = [run(side, FeedContext(ctx.request, replace(ctx.user, embedding=None), arm=side.name,
                                       degraded=list(ctx.degraded)))
                 for side in (experiment.arm(name) for name in arm.interleave)]
        return interleave(ctx, *sides)

    def ingest(self, events: list[dict]) -> dict:
        """``POST /v1/events``: durable in the event log, idempotent and counted through the shared
        store; hides and blocks reach every replica's filters at once."""
        from newsfeed.features.ingest import ingest_events, update_histories

        import pandas as pd

        result = ingest_events(events, self.data_dir, self.store, self.state,
                               now=pd.Timestamp(self.clock.now(), unit="s", tz="UTC"))
        result.state_error = apply_ingested(self.state, result, self.directory)
        if result.events is not None and result.online_error is None:
            try:
                update_histories(self.store, result.events, self.directory.authors)
            except Exception as err:  # noqa: BLE001 - the events are durable; the next snapshot has them
                result.online_error = f"user history: {type(err).__name__}: {str(err)[:200]}"
        return {"accepted": result.accepted, "duplicates": result.duplicates,
                "rejected": [{"index": r.index, "reason": r.reason} for r in result.rejected],
                "counters_updated": result.counters_updated, "online_error": result.online_error,
                "state_error": result.state_error}

    def publish(self, table: str, items: list[dict]) -> dict:
        """``POST /v1/posts|users|friendships``: checked, written to the online store, logged
        (durable, idempotent by id), announced; this replica applies it before answering and
        the others within ``replica.FOLLOW_SECONDS``. Raises ``PublishUnavailable`` when a
        store cannot be written (nothing logged)."""
        import pandas as pd

        from newsfeed.features.publish import known_of, online_writer, publish

        result = publish(table, items, self.data_dir, known_of(self.directory), self.state,
                         pd.Timestamp(self.clock.now(), unit="s", tz="UTC"), online_writer(self.store, self.home))
        if result.log_file is not None:
            try:
                self.content.channel.announce(table, result.log_file)
            except Exception as err:  # noqa: BLE001 - logged already: replicas find it at their next listing
                result.notes.append(f"content channel ({self.content.channel.where}): {str(err)[:200]}")
            self.content.catch_up()
        return result.as_json()

    def set_time(self, when: str) -> dict:
        """``PUT /v1/clock``: the simulated time, for every replica (``ClockError``: not a simulated
        clock, not a time, or a step back)."""
        import pandas as pd

        from newsfeed.feed.clock import ClockError

        parsed = pd.to_datetime(when, utc=True, errors="coerce", format="mixed")
        if pd.isna(parsed) or not 1990 <= parsed.year <= 2200:
            raise ClockError(f"now: expected an ISO 8601 time between 1990 and 2200, got {when[:64]!r}")
        self.clock.set(parsed.value / 1e9)
        return self.clock.describe()

    def _add_posts(self, posts) -> int:
        """Published posts into the corpus and every loaded model (from the online store, where
        the publisher wrote their features); how many were new here."""
        self.directory.add_posts(posts)
        fresh = posts[self.corpus.rows_of(posts["post_id"].to_numpy(np.int64)) < 0]
        if fresh.empty:
            return 0
        frame = read_posts(self.store, fresh["post_id"].to_numpy(np.int64))
        frame = frame[frame["post_content__written_by"].notna()]  # features not written: not servable
        return self.corpus.add(frame, self.models.extend)

    def _keep_window(self) -> None:
        """Every ``WINDOW_CHECK_SECONDS`` (on the content follower's thread, where posts are
        added): ``slide_window``."""
        if time.monotonic() - self._window_checked >= WINDOW_CHECK_SECONDS:
            self._window_checked = time.monotonic()
            self.slide_window()

    def slide_window(self) -> int:
        """Posts older than the window leave: a new corpus of the rest, every loaded model
        prepared over it (indexes built anew), then swapped in whole. A request running
        meanwhile finishes on the pipeline it started with; the next one uses the new.
        Returns how many posts left."""
        days = max(self.window_days, *(max(a.sources.horizon_days, a.sources.popular_horizon_days)
                                       for a in self.experiments.current().arms))
        old = self.corpus
        window = old.window_of(self.clock.now(), days)
        if window is None:
            return 0
        self.models.move_to(window)
        self.corpus = self.resources.corpus = window
        self._pipelines = {}  # rebuilt over the new corpus at the next request
        return len(old) - len(window)

    def _refresh_live(self) -> None:
        """Once the live counters are older than the TTL, catch up and re-read them on a background thread."""
        if time.time() - self.corpus.live_read_unix > LIVE_COUNTER_TTL_SECONDS and not self._refreshing.locked():
            self.corpus.live_read_unix = time.time()  # requests go on with the current values meanwhile
            threading.Thread(target=self.refresh_shared, name="shared-refresh", daemon=True).start()

    def refresh_shared(self) -> bool:
        """The shared store's counters into the corpus (and the rankers' prepared post side),
        after catching the store up with what it missed (log parts written while it was down;
        the whole history, when it came back empty). False when the store could not be read:
        the current values keep serving."""
        with self._refreshing:
            try:
                load_history(self.state, self.data_dir, self.directory, self.log.read)
                counters = self.state.counters(REACTIONS)
            except StateError:
                return False
            corpus = self.corpus
            with corpus.lock:  # posts published meanwhile wait, and are not dropped by the swap
                corpus.apply_counters(counters)
                for model in self.models.loaded():
                    if isinstance(model, RankingModel):  # its post-side inputs hold the counters
                        model.encode_corpus(corpus.frame)
            return True

    def health(self) -> dict:
        experiment = self.experiments.current()
        return {"status": "ok", "posts": len(self.corpus), "users": len(self.directory.known_users),
                "experiment": {"name": experiment.name, "version": experiment.version,
                               "arms": {a.name: a.share for a in experiment.arms}},
                "state": self.state.where, "served_log_lines_skipped": self.log.skipped,
                "clock": self.clock.describe(), "content": self.content.stats.as_json(),
                "window_days": self.window_days,
                "models_loaded": self.models.loaded_versions()}
