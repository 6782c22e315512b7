"""The shared stores on their own: user state (sqlite file and the machine's Redis), the
experiment's compare-and-swap, and signed cursors."""

from __future__ import annotations

import multiprocessing
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from newsfeed.feed.arms import Arm, Experiment
from newsfeed.feed.cursor import MAX_CURSOR_CHARS, CursorCodec, CursorError
from newsfeed.feed.experiments import (ExperimentStore, FileExperiments, RedisExperiments, VersionConflict,
                                       parse_if_match, rolled_back)
from newsfeed.feed.user_state import Limits, RedisUserState, SqliteUserState, StateError

REDIS = "127.0.0.1:6379"


def _redis_prefix() -> str:
    return f"nftest-{uuid.uuid4().hex[:10]}"


@pytest.fixture()
def redis_prefix():
    prefix = _redis_prefix()
    yield prefix
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379)
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)


@pytest.fixture(params=["sqlite", "redis"])
def make_state(request, tmp_path, redis_prefix):
    """A factory of handles on one store (each handle like another replica's)."""
    def make(limits: Limits = Limits()):
        if request.param == "sqlite":
            return SqliteUserState(tmp_path / "state.sqlite", limits)
        return RedisUserState(REDIS, redis_prefix, limits)
    return make


def test_seen_keeps_the_newest_n_within_the_ttl_and_replicas_read_the_same(make_state):
    limits = Limits(seen_limit=4, seen_ttl_seconds=100)
    a, b = make_state(limits), make_state(limits)
    a.mark_seen(7, np.array([1, 2, 3]), now_unix=1_000)
    assert sorted(b.read(7, 1_001).seen) == [1, 2, 3]  # what one replica served, the other filters
    b.mark_seen(7, np.array([4, 5, 6]), now_unix=1_010)
    b.mark_seen(7, np.array([7]), now_unix=1_020)
    assert sorted(a.read(7, 1_020).seen) == [4, 5, 6, 7]  # only the newest four are kept
    assert sorted(a.read(7, 1_115).seen) == [7]  # the older page is past the TTL
    assert a.read(8, 1_020).seen.size == 0


def test_hides_and_blocks_add_up_across_writers(make_state):
    a, b = make_state(), make_state()
    a.add_hidden(np.array([1, 1, 2]), np.array([10, 11, 10]))
    b.add_hidden(np.array([1]), np.array([12]))
    b.add_blocked(np.array([1, 1]), np.array([99, 98]))
    snap = a.read(1, time.time())
    assert sorted(snap.hidden) == [10, 11, 12] and sorted(snap.blocked_authors) == [98, 99]
    assert sorted(b.read(2, time.time()).hidden) == [10]


def test_a_seen_post_comes_back_once_per_new_comment_by_someone_else(make_state):
    limits = Limits(comment_revival_seconds=500)
    a, b = make_state(limits), make_state(limits)
    a.mark_seen(1, np.array([10, 11, 12]), now_unix=1_000)
    b.add_comments(np.array([10, 11, 11, 12]), np.array([2, 1, 3, 4]), np.array([900.0, 1_005, 1_006, 1_050]))
    revived = a.read(1, 1_100).new_comments
    # 10: commented before the user saw it; 11: by the user and by user 3 since; 12: by user 4 since
    assert {p: sorted(w) for p, w in revived.items()} == {11: [3], 12: [4]}
    a.mark_seen(1, np.array([11]), now_unix=1_100)  # shown again: back only for newer activity
    assert sorted(b.read(1, 1_101).new_comments) == [12]
    b.add_comments(np.array([11]), np.array([5]), np.array([1_200.0]))
    assert {p: sorted(w) for p, w in a.read(1, 1_201).new_comments.items()} == {11: [5], 12: [4]}
    assert sorted(a.read(1, 1_700).new_comments) == [11]  # comment 12's activity is older than the window
    assert a.read(2, 1_201).new_comments == {}


def test_event_ids_are_claimed_once_and_a_release_frees_them(make_state):
    a, b = make_state(), make_state()
    assert a.claim_events(["e1", "e2", "e1"]) == [True, True, False]
    assert b.claim_events(["e2", "e3"]) == [False, True]
    b.release_events(["e3"])
    assert a.claim_events(["e3"]) == [True]


def test_counters_stay_exact_with_eight_concurrent_writers_and_start_from_the_base_once(make_state):
    stores = [make_state() for _ in range(8)]

    def write(store):
        for _ in range(25):
            store.increment(np.array([5, 6]), np.array(["like", "share"]), np.array([1, 2]), np.array([100, 0]))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, stores))
    counters = stores[0].counters(("like", "share", "hide"))
    assert dict(zip(*counters["like"])) == {5: 100 + 200}
    assert dict(zip(*counters["share"])) == {6: 400}
    assert counters["hide"][0].size == 0
    totals = stores[1].increment(np.array([5]), np.array(["like"]), np.array([1]), np.array([0]))
    assert totals.tolist() == [301]


def _increment_in_a_process(path: str, times: int) -> None:
    store = SqliteUserState(path)
    for _ in range(times):
        store.increment(np.array([1]), np.array(["click"]), np.array([1]), np.array([0]))


def test_the_embedded_file_keeps_counters_exact_across_processes(tmp_path):
    path = str(tmp_path / "state.sqlite")
    SqliteUserState(path)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_increment_in_a_process, args=(path, 40)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0] * 4
    assert dict(zip(*SqliteUserState(path).counters(("click",))["click"])) == {1: 160}


def test_marks_reset_and_an_exclusive_section(make_state):
    a, b = make_state(), make_state()
    a.mark_seen(1, np.array([1]), time.time())
    a.mark("history:x")
    assert "history:x" in b.marks()
    b.reset()
    assert not a.marks() and a.read(1, time.time()).seen.size == 0
    order = []

    def hold(store, name):
        with store.exclusive("load", timeout=10):
            order.append(f"{name} in")
            time.sleep(0.3)
            order.append(f"{name} out")

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(hold, [a, b], ["a", "b"]))
    assert order[0].endswith("in") and order[1] == order[0].replace("in", "out")  # never interleaved


def test_an_unreachable_redis_is_a_state_error_within_a_second():
    store = RedisUserState("127.0.0.1:1", "x")
    t0 = time.monotonic()
    with pytest.raises(StateError, match="127.0.0.1:1"):
        store.read(1, time.time())
    assert time.monotonic() - t0 < 1.5


# -- the experiment: compare-and-swap --------------------------------------------------------------

@pytest.fixture(params=["file", "redis"])
def experiments(request, tmp_path, redis_prefix):
    def make():
        backend = FileExperiments(tmp_path / "home") if request.param == "file" else RedisExperiments(REDIS, redis_prefix)
        return ExperimentStore(backend)
    return make


def _two_arms(share: float = 50) -> Experiment:
    return Experiment(arms=[Arm(name="champion", share=share), Arm(name="canary", share=100 - share)])


def test_a_change_based_on_an_older_version_is_refused_with_the_current_one(experiments):
    a, b = experiments(), experiments()
    first = a.save(_two_arms(), expected=0)
    assert first.version == 1 and b.read().version == 1
    b.save(_two_arms(70), expected=1)
    with pytest.raises(VersionConflict) as err:
        a.save(_two_arms(90), expected=1)
    assert err.value.current.version == 2 and err.value.current.arm("champion").share == 70
    assert a.read().arm("champion").share == 70


def test_concurrent_writers_of_one_version_give_one_success(experiments):
    experiments().save(_two_arms(), expected=0)
    stores = [experiments() for _ in range(6)]

    def attempt(i):
        try:
            return stores[i].save(_two_arms(10 + i), expected=1).version
        except VersionConflict:
            return "conflict"

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(attempt, range(6)))
    assert outcomes.count(2) == 1 and outcomes.count("conflict") == 5
    # update() retries on conflicts: every writer's change lands, each on its own version.
    with ThreadPoolExecutor(4) as pool:
        saved = list(pool.map(lambda s: s.update(lambda e: e.with_shares({"canary": 0, "champion": 100})).version,
                              stores[:4]))
    assert sorted(saved) == [3, 4, 5, 6]


def test_replicas_follow_a_change_within_a_second(experiments):
    writer, reader = experiments(), experiments()
    assert reader.current().version == 0
    writer.save(_two_arms(), expected=0)
    time.sleep(0.6)
    assert reader.current().version == 1


def test_an_unreadable_experiment_keeps_the_last_one_read_serving(tmp_path):
    store = ExperimentStore(FileExperiments(tmp_path))
    store.save(_two_arms(), expected=0)
    assert ExperimentStore(FileExperiments(tmp_path)).current().version == 1
    reader = ExperimentStore(FileExperiments(tmp_path))
    assert reader.current().version == 1
    (tmp_path / "serving" / "experiment.yaml").write_text("arms: [{{broken")
    time.sleep(0.6)
    assert reader.current().version == 1
    down = ExperimentStore(RedisExperiments("127.0.0.1:1", "x", timeout=0.2))
    assert down.current().version == 0  # never read: the default experiment serves


def test_rollback_rules_and_if_match_parsing():
    experiment = _two_arms(80)
    back = rolled_back(experiment, ["canary"])
    assert (back.arm("champion").share, back.arm("canary").share) == (100, 0)
    with pytest.raises(Exception, match="cannot roll back"):
        rolled_back(experiment, ["champion"])
    assert [parse_if_match(h) for h in ('"7"', 'W/"7"', "7", None, "*")] == [7, 7, 7, None, None]
    with pytest.raises(ValueError, match="If-Match"):
        parse_if_match('"v-seven"')


# -- cursors ------------------------------------------------------------------------------------------

def test_cursors_round_trip_for_their_user_only():
    codec = CursorCodec(b"k" * 32)
    ids = np.array([5, 17, 2**62], np.int64)
    cursor = codec.encode(3, ids)
    assert codec.decode(3, cursor).tolist() == ids.tolist() and codec.decode(3, None).size == 0
    for user, forged in ((4, cursor), (3, cursor[:-2] + "AA"), (3, "not-a-cursor"),
                         (3, CursorCodec(b"x" * 32).encode(3, ids))):
        with pytest.raises(CursorError, match="not a cursor this service issued"):
            codec.decode(user, forged)


def test_a_hostile_cursor_costs_no_memory_and_is_refused():
    codec = CursorCodec(b"k" * 32)
    import base64

    def signed(raw: bytes) -> str:  # as if the secret had leaked
        payload = base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode()
        return f"{payload}.{codec.sign(1, payload)}"

    with pytest.raises(CursorError, match="longer than"):  # 80 MB inflated: refused by its length, unread
        codec.decode(1, signed(b"\0" * 80_000_000))
    # The most a cursor within the length can inflate to (~10 MB): stopped after 8 KB.
    bomb = signed(b"\0" * 10_000_000)
    assert len(bomb) < MAX_CURSOR_CHARS
    t0 = time.perf_counter()
    with pytest.raises(CursorError, match="more than 1000 posts"):
        codec.decode(1, bomb)
    assert time.perf_counter() - t0 < 0.5


def test_the_home_key_is_made_once_and_shared(tmp_path, monkeypatch):
    monkeypatch.delenv("NEWSFEED_CURSOR_SECRET", raising=False)
    a, b = CursorCodec.for_home(tmp_path), CursorCodec.for_home(tmp_path)
    assert a.secret == b.secret and len(a.secret) == 64
    assert (tmp_path / "serving" / "cursor.key").stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("NEWSFEED_CURSOR_SECRET", "s" * 20)
    assert CursorCodec.for_home(tmp_path).secret == b"s" * 20


# -- the data's history, loaded once --------------------------------------------------------------

def test_history_is_loaded_once_caught_up_part_by_part_and_again_for_a_new_dataset(tmp_path, make_state):
    import pandas as pd

    from newsfeed.data import event_log
    from newsfeed.data.io import write_dataset
    from newsfeed.data.simulator import SimConfig, generate
    from newsfeed.feed.activity import UserDirectory, load_history

    data = tmp_path / "data"
    tables, _ = generate(SimConfig(seed=5, users=40, posts=120, days=3))
    write_dataset(data, tables, source="simulator")
    directory, state = UserDirectory.from_data(data), make_state()
    now = pd.Timestamp(tables["impressions"]["ts"].max()).timestamp() + 60
    served = [{"user_id": 7, "ts": now, "items": [{"post_id": 3}]}]
    calls = []

    def read_served():
        calls.append(1)
        return served

    first = load_history(state, data, directory, read_served)
    imp = tables["impressions"]
    assert first["impressions"] == len(imp) and first["served"] == 1
    user = int(imp.loc[imp["block"] == 1, "user_id"].iloc[0])
    snap = state.read(user, now)
    assert set(imp.loc[imp["user_id"] == user, "post_id"]) <= set(snap.seen.tolist())
    blocked_posts = imp.loc[(imp["user_id"] == user) & (imp["block"] == 1), "post_id"]
    assert set(directory.authors(blocked_posts.to_numpy())) <= set(snap.blocked_authors.tolist())
    assert 3 in state.read(7, now).seen.tolist()
    # Again: nothing to do, and the served log is not even read.
    assert load_history(state, data, directory, read_served) == {"impressions": 0, "served": 0, "event_parts": 0}
    assert len(calls) == 1
    # A part logged while the store was down: the next catch-up applies it, once.
    post = int(tables["posts"]["post_id"].iloc[5])
    event_log.append(data, pd.DataFrame([{"user_id": 9, "post_id": post, "event_type": "hide", "value": 1.0,
                                          "ts": pd.Timestamp("2026-10-02", tz="UTC"), "event_id": "x"}]))
    assert load_history(state, data, directory, read_served)["event_parts"] == 1
    assert post in state.read(9, now).hidden.tolist()
    assert load_history(state, data, directory, read_served)["event_parts"] == 0
    # Another dataset in the same place: the old one's state does not follow its users.
    smaller, _ = generate(SimConfig(seed=6, users=20, posts=50, days=2))
    write_dataset(data, smaller, source="simulator")
    reloaded = load_history(state, data, UserDirectory.from_data(data), lambda: [])
    new = smaller["impressions"]
    assert reloaded["impressions"] == len(new)
    assert set(state.read(7, now).seen.tolist()) == set(new.loc[new["user_id"] == 7, "post_id"])
