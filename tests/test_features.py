"""The feature store for real: jobs, Feast (embedded and production), training sets, ingestion."""

from __future__ import annotations

import shutil
import uuid

import numpy as np
import pandas as pd
import pytest

from newsfeed.data.event_log import read_events
from newsfeed.data.io import write_dataset
from newsfeed.errors import ServiceUnreachable
from newsfeed.features import build, catalog, hashing, jobs, online_load, store as fstore, text, training_set
from newsfeed.features.ingest import ingest_events
from newsfeed.features.online import ranker_rows
from newsfeed.features.ray_offline_store import RayDuckDBOfflineStoreConfig, partitions
from newsfeed.schema import REACTIONS

DAY = pd.Timedelta(days=1)


@pytest.fixture(scope="module")
def feature_home(tmp_path_factory):
    """A small simulated dataset with its offline feature tables built (real MiniLM embeddings)."""
    from newsfeed.data.simulator import SimConfig, generate

    home = tmp_path_factory.mktemp("features-home")
    tables, _ = generate(SimConfig(seed=5, users=150, posts=400, days=6))
    write_dataset(home / "data", tables, source="simulator")
    manifest = build.build_offline(home / "data", home)
    return home, tables, manifest


def _open_applied(home, kind, overrides=None):
    project = f"nftest_{uuid.uuid4().hex[:8]}"
    feast_store = fstore.open_store(home, kind, project=project, overrides=overrides)
    fstore.apply(feast_store)
    return feast_store


def _teardown(feast_store) -> None:
    # Only this test's project: FeatureStore.teardown() would delete every project in the registry.
    feast_store._get_provider().teardown_infra(feast_store.project, feast_store.list_feature_views(),
                                               feast_store.list_entities())
    feast_store.delete_project(feast_store.project)


@pytest.fixture(scope="module", params=["embedded", "production"])
def materialized(request, feature_home):
    """The store applied and materialized, in each configuration (production: Redis + PostgreSQL)."""
    home, tables, manifest = feature_home
    feast_store = _open_applied(home, request.param)
    online_load.load(feast_store, home, manifest)
    yield request.param, feast_store
    _teardown(feast_store)


def _latest(name: str, home, keys: dict) -> pd.Series:
    frame = pd.read_parquet(fstore.offline_dir(home) / f"{name}.parquet")
    for k, v in keys.items():
        frame = frame[frame[k] == v]
    return frame.sort_values(catalog.TIMESTAMP).iloc[-1]


# --- feature jobs ---------------------------------------------------------------------------------

def test_hashtag_buckets_are_stable_case_insensitive_and_cover_unseen_tags():
    assert hashing.bucket("#Football") == hashing.bucket("football") == hashing.bucket("#football ")
    unseen = hashing.bucket_lists([["#never-seen-before", "#x"]])[0]
    assert all(0 <= b < hashing.HASHTAG_BUCKETS for b in unseen)
    assert hashing.bucket("#a") != hashing.bucket("#b")


def test_user_engagement_windows_match_a_brute_force_count(feature_home):
    home, tables, _ = feature_home
    eng = pd.read_parquet(fstore.offline_dir(home) / "user_engagement.parquet")
    events, impressions = tables["events"], tables["impressions"]
    for _, row in eng.sample(25, random_state=0).iterrows():
        t = row[catalog.TIMESTAMP]
        for name, days in catalog.WINDOWS.items():
            window = (events["user_id"] == row["user_id"]) & (events["ts"] < t) & (events["ts"] >= t - days * DAY)
            shown = (impressions["user_id"] == row["user_id"]) & (impressions["ts"] < t) \
                & (impressions["ts"] >= t - days * DAY)
            assert row[f"impression_count_{name}"] == shown.sum()
            for r in REACTIONS:
                assert row[f"{r}_count_{name}"] == (window & (events["event_type"] == r)).sum(), (r, name)
        interest = np.asarray(row["topic_interest"])
        assert interest.sum() == pytest.approx(1.0, abs=1e-5) or interest.sum() == 0


def test_user_history_is_the_last_engaged_posts_before_each_snapshot(feature_home):
    home, tables, _ = feature_home
    history = pd.read_parquet(fstore.offline_dir(home) / "user_history.parquet")
    events = tables["events"]
    author_of = tables["posts"].set_index("post_id")["author_id"].astype("Int64").fillna(-1)
    engaged = events[events["event_type"].isin(catalog.POSITIVE_REACTIONS)].sort_values("ts", kind="stable")
    for _, row in history.sample(40, random_state=2).iterrows():
        before = engaged[(engaged["user_id"] == row["user_id"]) & (engaged["ts"] < row[catalog.TIMESTAMP])]
        # Distinct posts, dated by their first reaction, newest first.
        expected = before.drop_duplicates("post_id")["post_id"].tolist()[::-1][:catalog.HISTORY_LENGTH]
        assert list(row["recent_post_ids"]) == expected
        assert list(row["recent_author_ids"]) == author_of.reindex(expected).tolist()
    # A user's history starts at the end of the day of their first engagement, not before.
    first_row = history.groupby("user_id")[catalog.TIMESTAMP].min()
    first_engaged = engaged.groupby("user_id")["ts"].min().dt.floor("D") + DAY
    assert first_row.eq(first_engaged.reindex(first_row.index)).all()


def test_every_snapshot_is_stamped_after_what_it_counts(feature_home):
    home, tables, _ = feature_home
    live = pd.read_parquet(fstore.offline_dir(home) / "post_engagement_live.parquet")
    likes = tables["events"][tables["events"]["event_type"] == "like"]
    for _, row in live.sample(40, random_state=1).iterrows():
        before = ((likes["post_id"] == row["post_id"]) & (likes["ts"] < row[catalog.TIMESTAMP])).sum()
        assert row["like_count"] == before
    # Snapshots at the end of every catalog.POST_SNAPSHOT_HOURS a post was shown in.
    stamps = pd.to_datetime(live[catalog.TIMESTAMP], utc=True)
    hour_of_day = (stamps - stamps.dt.floor("D")) / pd.Timedelta(hours=1)
    assert (hour_of_day % catalog.POST_SNAPSHOT_HOURS == 0).all()
    assert (hour_of_day != 0).any() == (catalog.POST_SNAPSHOT_HOURS < 24)


def test_affinity_carries_friendship_only_from_its_formation(feature_home):
    home, tables, _ = feature_home
    aff = pd.read_parquet(fstore.offline_dir(home) / "user_author_affinity.parquet")
    f = tables["friendships"].iloc[0]
    rows = aff[(aff["user_id"] == f["user_id"]) & (aff["author_id"] == f["friend_id"])]
    after = rows[rows[catalog.TIMESTAMP] >= f["formed_ts"]]
    assert len(after) and (after["friends_since_unix"] == f["formed_ts"].value // 10**9).all()
    assert (after["close_friend"] == int(f["close_friend"])).all() and (after["family"] == int(f["family"])).all()
    assert (rows.loc[rows[catalog.TIMESTAMP] < f["formed_ts"], "friends_since_unix"] == -1).all()


def test_reduced_text_embeddings_keep_topic_neighbourhoods(feature_home):
    _, tables, _ = feature_home
    posts = tables["posts"]
    full = text.encode(posts["text"].tolist())
    low = text.reduce(full)
    topics = posts["topic"].to_numpy()

    def same_topic_neighbour_rate(v: np.ndarray) -> float:
        sims = v @ v.T
        np.fill_diagonal(sims, -np.inf)
        return float((topics[sims.argmax(axis=1)] == topics).mean())

    assert low.shape == (len(posts), text.EMBEDDING_DIM)
    assert np.allclose(np.linalg.norm(low, axis=1), 1.0, atol=1e-5)
    assert same_topic_neighbour_rate(low) >= 0.9 * same_topic_neighbour_rate(full) > 0.5


def test_embedding_cache_reuses_vectors_and_encodes_only_changed_texts(tmp_path, feature_home):
    _, tables, _ = feature_home
    posts = tables["posts"].head(20).copy()
    cache = tmp_path / "emb.parquet"
    first = text.post_embeddings(posts, cache)
    posts.loc[posts.index[0], "text"] = "an entirely different text about spaceships"
    second = text.post_embeddings(posts, cache)
    assert np.allclose(first[1:], second[1:]) and not np.allclose(first[0], second[0])
    assert len(pd.read_parquet(cache)) == 20  # the edited post replaced, not appended


def test_no_snapshot_after_as_of(feature_home):
    _, tables, _ = feature_home
    as_of = tables["impressions"]["ts"].min().normalize() + 3 * DAY
    result = jobs.compute(tables, tables["events"], as_of=as_of)
    for name, frame in result.tables.items():
        if name not in ("user_profile", "post_content"):
            assert frame[catalog.TIMESTAMP].max() <= as_of, name


# --- Feast, both configurations --------------------------------------------------------------------

def test_feast_loads_without_typeguards_instrumentation_and_other_code_keeps_it():
    """newsfeed.feast_typechecks: Feast's @typechecked classes are left as written (their import
    no longer recompiles them), anything else decorated is still checked."""
    import typeguard
    from feast import Field
    from feast.types import Int64

    assert Field(name=123, dtype=Int64).name == 123  # instrumented, Field rejects a name that is no str

    @typeguard.typechecked
    def double(x: int) -> int:
        return 2 * x

    with pytest.raises(typeguard.TypeCheckError):
        double("twice")


def test_store_configurations_are_chosen_by_name_or_environment(tmp_path, monkeypatch):
    embedded = fstore.repo_config(tmp_path, "embedded")
    assert embedded.online_store.type == "sqlite" and str(tmp_path) in embedded.online_store.path
    assert embedded.offline_store.type == "duckdb"
    monkeypatch.setenv(fstore.STORE_ENV, "production")
    monkeypatch.setenv("NEWSFEED_RAY_ADDRESS", "ray://head:10001")
    production = fstore.repo_config(tmp_path)
    assert production.online_store.type == "redis"
    assert isinstance(production.offline_store, RayDuckDBOfflineStoreConfig)
    assert production.offline_store.ray_address == "ray://head:10001"
    assert production.registry.registry_type == "sql" and production.registry.path.startswith("postgresql")
    with pytest.raises(fstore.FeatureStoreError, match="unknown feature store 'cloud'"):
        fstore.repo_config(tmp_path, "cloud")


def test_online_reads_return_the_latest_offline_values(feature_home, materialized):
    home, tables, _ = feature_home
    kind, feast_store = materialized
    user = int(tables["impressions"]["user_id"].iloc[0])
    pair = pd.read_parquet(fstore.offline_dir(home) / "user_author_affinity.parquet").iloc[-1]
    post = int(tables["impressions"]["post_id"].iloc[-1])
    online = feast_store.get_online_features(
        features=["user_engagement:click_count_7d", "user_engagement:like_rate_30d",
                  "user_engagement:topic_interest"],
        entity_rows=[{"user_id": user}]).to_dict()
    offline = _latest("user_engagement", home, {"user_id": user})
    assert online["click_count_7d"][0] == offline["click_count_7d"]
    assert online["like_rate_30d"][0] == pytest.approx(offline["like_rate_30d"])
    assert np.allclose(online["topic_interest"][0], offline["topic_interest"])
    online = feast_store.get_online_features(
        features=["post_engagement:like_rate", "post_content:text_embedding", "post_content:hashtag_buckets"],
        entity_rows=[{"post_id": post}]).to_dict()
    assert online["like_rate"][0] == pytest.approx(_latest("post_engagement", home, {"post_id": post})["like_rate"])
    content = _latest("post_content", home, {"post_id": post})
    assert np.allclose(online["text_embedding"][0], content["text_embedding"])
    assert list(online["hashtag_buckets"][0]) == list(content["hashtag_buckets"])
    online = feast_store.get_online_features(
        features=["user_author_affinity:impression_count", "user_author_affinity:friends_since_unix"],
        entity_rows=[{"user_id": int(pair["user_id"]), "author_id": int(pair["author_id"])}]).to_dict()
    assert online["impression_count"][0] == pair["impression_count"]
    assert online["friends_since_unix"][0] == pair["friends_since_unix"]


def test_request_time_features_at_serving(feature_home, materialized):
    _, tables, _ = feature_home
    _, feast_store = materialized
    posts = tables["posts"]
    mentioned = posts[posts["mentions"].map(len) > 0].iloc[0]
    reader = int(mentioned["mentions"][0])
    now = mentioned["created_ts"] + pd.Timedelta(hours=2)
    frame = ranker_rows(feast_store, reader, [int(mentioned["post_id"])], request_time=now)
    assert frame["request_features__user_mentioned"].iloc[0] == 1
    assert frame["request_features__post_age_bucket"].iloc[0] == 1  # 1 to 6 hours old
    # The reader's interest in the post's topic, from their own interest vector at serving time.
    interest = frame["user_engagement__topic_interest"].iloc[0]
    topic = frame["post_content__topic_id"].iloc[0]
    assert frame["request_features__topic_affinity"].iloc[0] == pytest.approx(interest[topic] if interest is not None else 0)
    other = ranker_rows(feast_store, reader + 1 if reader + 1 not in mentioned["mentions"] else reader + 2,
                        [int(mentioned["post_id"])], request_time=now)
    assert other["request_features__user_mentioned"].iloc[0] == 0


def test_pushed_events_change_the_counters_the_next_read_returns(feature_home, materialized, tmp_path):
    home, tables, _ = feature_home
    kind, feast_store = materialized
    post = int(tables["posts"]["post_id"].iloc[3])
    read = lambda: feast_store.get_online_features(  # noqa: E731
        features=["post_engagement_live:like_count", "post_engagement_live:share_count"],
        entity_rows=[{"post_id": post}]).to_dict()
    before = read()
    likes, shares = before["like_count"][0] or 0, before["share_count"][0] or 0
    batch = [{"user_id": 1, "post_id": post, "event_type": "like"},
             {"user_id": 2, "post_id": post, "event_type": "like"},
             {"user_id": 2, "post_id": post, "event_type": "no-such-reaction"},
             {"user_id": 3, "post_id": post, "event_type": "share"}]
    result = ingest_events(batch, tmp_path / "data", feast_store)
    assert result.accepted == 3 and result.online_error is None and result.counters_updated == 1
    assert [r.index for r in result.rejected] == [2] and "event_type" in result.rejected[0].reason
    after = read()
    assert (after["like_count"][0], after["share_count"][0]) == (likes + 2, shares + 1)
    logged = read_events(tmp_path / "data")
    assert len(logged) == 3 and set(logged["event_type"]) == {"like", "share"}


# --- loading the online store ----------------------------------------------------------------------

def _like_count(feast_store, post: int):
    return feast_store.get_online_features(features=["post_engagement_live:like_count"],
                                           entity_rows=[{"post_id": post}]).to_dict()["like_count"][0]


def test_online_load_writes_only_what_changed_and_a_new_dataset_leaves_nothing_behind(tmp_path):
    from newsfeed.data.simulator import SimConfig, generate

    data, home = tmp_path / "data", tmp_path / "home"
    tables, _ = generate(SimConfig(seed=3, users=80, posts=200, days=4))
    write_dataset(data, tables, source="simulator")
    feast_store = fstore.open_store(home, "embedded")
    fstore.apply(feast_store)
    first = online_load.load(feast_store, home, build.build_offline(data, home))
    assert first.mode == "full" and first.written == first.keys and first.keys["post_content"] == 200

    unchanged = online_load.load(feast_store, home, build.build_offline(data, home))
    assert unchanged.mode == "incremental" and sum(unchanged.written.values()) == 0

    post = int(tables["impressions"]["post_id"].iloc[-1])
    before = _like_count(feast_store, post) or 0
    last = tables["impressions"]["ts"].max()
    ingest_events([{"user_id": u, "post_id": post, "event_type": "like", "ts": str(last)} for u in (1, 2, 3)], data)
    after_events = online_load.load(feast_store, home, build.build_offline(data, home))
    assert after_events.mode == "incremental"
    assert after_events.written["post_engagement_live"] == 1 and after_events.written["post_content"] == 0
    assert 0 < sum(after_events.written.values()) < sum(after_events.keys.values()) / 10
    assert _like_count(feast_store, post) == before + 3

    # Another dataset in the same place, with fewer posts: the old posts' rows must not survive.
    smaller, _ = generate(SimConfig(seed=4, users=80, posts=120, days=4))
    write_dataset(data, smaller, source="simulator")
    shutil.rmtree(data / "event_log")
    replaced = online_load.load(feast_store, home, build.build_offline(data, home))
    assert replaced.mode == "full" and replaced.keys["post_content"] == 120
    gone = int(tables["posts"]["post_id"].max())
    assert gone not in set(smaller["posts"]["post_id"])
    read = feast_store.get_online_features(features=["post_content:topic"], entity_rows=[{"post_id": gone}])
    assert read.to_dict()["topic"] == [None]


# --- ingestion -------------------------------------------------------------------------------------

def test_malformed_events_are_rejected_with_reasons_and_the_rest_are_durable(tmp_path):
    batch = [
        {"user_id": 1, "post_id": 2, "event_type": "click", "ts": "2026-10-03T10:00:00Z"},
        {"user_id": "abc", "post_id": 2, "event_type": "click"},
        {"user_id": 1, "post_id": 2, "event_type": "click", "ts": "yesterday-ish"},
        {"user_id": 1, "post_id": 2, "event_type": "dwell", "value": -3.0},
        {"user_id": 1, "post_id": 2, "event_type": "like", "ts": "2099-01-01T00:00:00Z"},
        {"user_id": 1, "post_id": 5, "event_type": "hide"},
    ]
    result = ingest_events(batch, tmp_path)
    reasons = {r.index: r.reason for r in result.rejected}
    assert sorted(reasons) == [1, 2, 3, 4]
    assert "user_id" in reasons[1] and "timestamp" in reasons[2]
    assert "value" in reasons[3] and "future" in reasons[4]
    assert result.rejected[0].event["user_id"] == "abc"  # the event as sent, for the client
    logged = read_events(tmp_path)
    assert result.accepted == 2 and list(logged["event_type"]) == ["click", "hide"]
    assert logged["ts"].iloc[1] > pd.Timestamp("2026-11-01", tz="UTC")  # no ts given: received now


def test_events_that_cannot_belong_to_the_data_are_rejected_with_a_reason_each(feature_home, tmp_path):
    home, tables, _ = feature_home
    data = tmp_path / "data"
    shutil.copytree(home / "data", data)
    post = tables["posts"].sort_values("created_ts").iloc[-1]  # created late: room before it
    pid, user = int(post["post_id"]), int(tables["users"]["user_id"].iloc[0])
    batch = [
        {"user_id": 10**7, "post_id": pid, "event_type": "like"},
        {"user_id": user, "post_id": 10**7, "event_type": "like"},
        {"user_id": user, "post_id": pid, "event_type": "like", "ts": "1970-01-02T00:00:00Z"},
        {"user_id": user, "post_id": pid, "event_type": "like", "ts": str(post["created_ts"] - pd.Timedelta(hours=1))},
        {"user_id": user, "post_id": pid, "event_type": "like", "ts": str(post["created_ts"] + pd.Timedelta(hours=1))},
    ]
    result = ingest_events(batch, data)
    reasons = {r.index: r.reason for r in result.rejected}
    assert reasons == {0: "user_id: unknown user 10000000", 1: "post_id: unknown post 10000000",
                       2: reasons[2], 3: f"ts: before post {pid} was created"}
    assert reasons[2].startswith("ts: before the data begins")
    assert result.accepted == 1 and len(read_events(data)) == len(tables["events"]) + 1


def test_a_retried_batch_is_logged_and_counted_once(feature_home, materialized, tmp_path):
    _, tables, _ = feature_home
    _, feast_store = materialized
    post = int(tables["posts"]["post_id"].iloc[7])
    batch = [{"event_id": "client-1", "user_id": 1, "post_id": post, "event_type": "like"},
             {"event_id": "client-2", "user_id": 2, "post_id": post, "event_type": "share"},
             {"user_id": 3, "post_id": post, "event_type": "like", "ts": "2026-10-05T10:00:00Z"}]  # id: its hash
    before = _like_count(feast_store, post) or 0
    first = ingest_events(batch, tmp_path / "data", feast_store)
    retried = ingest_events(batch + [batch[0]], tmp_path / "data", feast_store)
    assert (first.accepted, first.duplicates) == (3, 0)
    assert (retried.accepted, retried.duplicates, retried.log_file) == (0, 4, None)
    assert _like_count(feast_store, post) == before + 2
    assert len(read_events(tmp_path / "data")) == 3
    # Without an id or its own ts an event is stamped on arrival: each one sent is a new event.
    for _ in range(2):
        assert ingest_events([{"user_id": 4, "post_id": post, "event_type": "like"}], tmp_path / "data").accepted == 1


def test_a_batch_with_unknown_fields_is_rejected_whole(tmp_path):
    result = ingest_events([{"user_id": 1, "post_id": 2, "event_type": "like", "mood": "happy"}], tmp_path)
    assert result.accepted == 0 and "unknown fields ['mood']" in result.rejected[0].reason
    assert not (tmp_path / "event_log").exists()


def test_events_stay_durable_when_the_online_store_is_down(feature_home, tmp_path, monkeypatch):
    home, _, _ = feature_home
    monkeypatch.setenv("NEWSFEED_REDIS", "127.0.0.1:1")  # nothing listens there
    with pytest.raises(ServiceUnreachable, match=r"cannot reach the Feast online store \(Redis\) at 127.0.0.1:1"):
        fstore.open_store(home, "production")  # named within seconds
    # Redis going down after a server opened the store: ingestion degrades, it does not fail.
    down = fstore.open_store(home, "production", project=f"nftest_{uuid.uuid4().hex[:8]}", check=False)
    fstore.apply(down)  # the registry (PostgreSQL) is up; only Redis is unreachable
    try:
        result = ingest_events([{"user_id": 1, "post_id": 2, "event_type": "like"}], tmp_path, down)
    finally:
        down.delete_project(down.project)
    assert result.accepted == 1 and "Connection" in result.online_error, result.online_error
    assert len(read_events(tmp_path)) == 1


# --- training sets ---------------------------------------------------------------------------------

def test_training_set_is_point_in_time_correct_and_never_sees_later_changes(feature_home, tmp_path):
    """A burst of likes right after an impression must not reach that impression's row."""
    home, tables, _ = feature_home
    impressions = tables["impressions"]
    day0 = impressions["ts"].min().normalize()
    target = impressions[(impressions["ts"] > day0 + 2 * DAY) & (impressions["ts"] < day0 + 3 * DAY)].iloc[0]
    post = int(target["post_id"])
    later = impressions[(impressions["post_id"] == post) & (impressions["ts"] >= day0 + 4 * DAY)]
    if later.empty:  # give the post a later impression to compare with
        later = target.to_frame().T.assign(impression_id=impressions["impression_id"].max() + 1,
                                           ts=day0 + 4 * DAY + pd.Timedelta(hours=1))
        impressions = pd.concat([impressions, later], ignore_index=True).astype(impressions.dtypes)
    probe = pd.concat([target.to_frame().T, later.head(1)]).astype(impressions.dtypes)

    burst = pd.DataFrame({"user_id": 7, "post_id": post, "event_type": "like", "value": 1.0,
                          "ts": target["ts"] + pd.to_timedelta(np.arange(1, 51), unit="s")})
    data = tmp_path / "data"
    write_dataset(data, {**tables, "impressions": impressions}, source="simulator")
    base = tmp_path / "base"
    build.build_offline(data, base)
    home2 = tmp_path / "with-burst"
    ingest_events(burst, data)  # appended to the durable event log, which the jobs read
    build.build_offline(data, home2)

    def likes_seen(h):
        feast_store = fstore.open_store(h, "embedded")
        fstore.apply(feast_store)
        frame = training_set.build(feast_store, training_set.entity_frame(probe, tables["posts"]))
        # No counter row yet (a post's first active day) is nothing seen: zero likes.
        return frame["post_engagement_live__like_count"].fillna(0).to_numpy(), frame

    before, _ = likes_seen(base)
    after, frame = likes_seen(home2)
    assert after[0] == before[0]  # the impression's own row: the burst came after it
    assert after[1] == before[1] + 50  # a later impression sees it
    assert frame[list(REACTIONS)].notna().all().all()  # labels ride along


def test_training_set_has_one_row_per_impression_with_every_ranker_feature(feature_home):
    home, tables, _ = feature_home
    feast_store = fstore.open_store(home, "embedded")
    fstore.apply(feast_store)
    impressions = tables["impressions"].sample(300, random_state=2)
    frame = training_set.build(feast_store, training_set.entity_frame(impressions, tables["posts"]))
    assert len(frame) == 300 and frame["impression_id"].is_unique
    service = feast_store.get_feature_service("ranker")
    expected = {f"{p.name_to_use()}__{f.name}" for p in service.feature_view_projections for f in p.features}
    assert expected <= set(frame.columns)
    # A post exists before it is shown: its content is never missing. A user's engagement is
    # missing exactly when the impression comes before the user's first snapshot: nothing known yet.
    assert frame["post_content__topic"].notna().all()
    snapshots = pd.read_parquet(fstore.offline_dir(home) / "user_engagement.parquet")
    first = snapshots.groupby("user_id")[catalog.TIMESTAMP].min().reindex(frame["user_id"]).to_numpy()
    before_first = ~(frame[catalog.TIMESTAMP].to_numpy() >= first)  # NaT (no snapshot ever) counts as before
    assert (frame["user_engagement__impression_count_30d"].isna().to_numpy() == before_first).all()
    assert before_first.any() and not before_first.all()
    two_tower = training_set.build(feast_store, training_set.entity_frame(impressions, tables["posts"]), "two_tower")
    assert not any(c.startswith("user_author_affinity__") for c in two_tower.columns)


def test_training_sets_are_joined_again_when_the_feature_tables_are_made_again(feature_home, tmp_path):
    """The cached training and retrieval sets are keyed by the offline tables too: the same data's
    features made again (other code, other settings) must not be answered from sets joined to
    the earlier ones."""
    from dataclasses import replace

    from newsfeed.index import FRESHNESS_HORIZON_DAYS
    from newsfeed.models import datasets
    from newsfeed.models.two_tower import POST_VIEWS, USER_VIEWS

    home = tmp_path / "home"
    shutil.copytree(feature_home[0], home)
    feast_store = _open_applied(home, "embedded")
    data = datasets.load(home, home / "data")
    data = replace(data, impressions=data.impressions.sample(400, random_state=3))

    def both():
        return (datasets.impression_set(home, feast_store, data, "ranker"),
                datasets.retrieval_set(home, feast_store, data, USER_VIEWS, POST_VIEWS, FRESHNESS_HORIZON_DAYS).users)

    likes, seen = "post_engagement_live__like_count", "user_engagement__impression_count_30d"
    first, users = both()
    assert first[likes].fillna(0).sum() > 0 and users[seen].fillna(0).sum() > 0
    cached = sorted((home / "training").glob("*.parquet"))
    assert len(both()[0]) == len(first) and sorted((home / "training").glob("*.parquet")) == cached  # answered from the cache

    for table, column in (("post_engagement_live", "like_count"), ("user_engagement", "impression_count_30d")):
        path = fstore.offline_dir(home) / f"{table}.parquet"
        frame = pd.read_parquet(path)
        frame[column] = frame[column] * 2  # the same data's features, made otherwise
        frame.to_parquet(path, index=False)
    again, users_again = both()
    pd.testing.assert_series_equal(again.set_index("impression_id")[likes],
                                   2 * first.set_index("impression_id")[likes], check_dtype=False)
    assert users_again[seen].fillna(0).sum() == 2 * users[seen].fillna(0).sum()
    assert len(list((home / "training").glob("*.parquet"))) == 2 * len(cached)


@pytest.mark.slow
def test_production_joins_fanned_out_over_ray_give_the_same_training_set_as_duckdb(feature_home):
    """The scale-out path for real: the production store (SQL registry on PostgreSQL) joins
    partitions as tasks on a local Ray; value for value what one DuckDB join gives."""
    home, tables, _ = feature_home
    impressions = tables["impressions"].sample(2_000, random_state=4)
    # Rows that share keys and second, and rows before any feature row: Feast's Ray store lost both.
    impressions = pd.concat([impressions, impressions.head(40)], ignore_index=True)
    entities = training_set.entity_frame(impressions, tables["posts"])
    duckdb = fstore.open_store(home, "embedded")
    fstore.apply(duckdb)
    expected = training_set.build(duckdb, entities)

    settings = fstore.repo_config(home, "production").offline_config
    over_ray = _open_applied(home, "production", overrides={"offline_store": {**settings, "rows_per_partition": 700}})
    try:
        joined = training_set.build(over_ray, entities)
    finally:
        _teardown(over_ray)
    assert expected["user_engagement__impression_count_30d"].isna().any()  # the missing values are compared too
    pd.testing.assert_frame_equal(joined, expected)


def test_entity_rows_are_cut_into_ordered_partitions_covering_each_row_once():
    rows = pd.DataFrame({"row": range(10)})
    cut = partitions(rows, rows_per_partition=4)
    assert [len(p) for p in cut] == [3, 4, 3]
    assert pd.concat(cut)["row"].tolist() == list(range(10))
    assert len(partitions(rows.head(0), 4)) == 1


def test_jobs_split_by_entity_give_the_same_tables(feature_home):
    """The unit of scale-out: each job on disjoint entity partitions, concatenated, equals one run."""
    _, tables, _ = feature_home
    impressions, events = tables["impressions"], tables["events"]
    origin = int(impressions["ts"].min().normalize().value)
    whole, _ = jobs.post_engagement(impressions, events, origin, n_days=6)
    parts = [jobs.post_engagement(i, e, origin, n_days=6)[0]
             for i, e in zip(jobs.partition(impressions, "post_id", 3), jobs.partition(events, "post_id", 3))]
    joined = pd.concat(parts).sort_values(["post_id", catalog.TIMESTAMP]).reset_index(drop=True)
    pd.testing.assert_frame_equal(joined, whole.sort_values(["post_id", catalog.TIMESTAMP]).reset_index(drop=True))


def test_topic_interest_rate_is_a_decayed_shrunk_rate_per_impression():
    from newsfeed.features.jobs import decayed_topic_rate

    # One user, 3 topics, 4 days. Topic 0: shown 10 times a day, 1 click a day (a share of
    # clicks as large as topic 1's, but a low rate). Topic 1: shown once a day, clicked.
    # Topic 2: clicked often, but only on day 0 (old news by day 3).
    days, topics = 4, 3
    positives = np.zeros((1, days, topics))
    positives[0, :, 0], positives[0, :, 1], positives[0, 0, 2] = 1, 1, 6
    shown = [(0, d, 0) for d in range(days) for _ in range(10)] + [(0, d, 1) for d in range(days)] + [(0, 0, 2)] * 6
    impressions = pd.DataFrame({"post_id": [t for _, _, t in shown]})
    # A short memory and a light prior, so four days show both effects (the defaults are chosen on data).
    rate = decayed_topic_rate(positives, impressions, np.zeros(len(shown), np.int64), np.array([d for _, d, _ in shown]),
                              pd.Series([0, 1, 2], index=[0, 1, 2]), topics, days, half_life_days=2.0,
                              prior_impressions=5.0)
    assert rate.shape == (1, days + 1, topics)
    assert np.allclose(rate[0, 1:].sum(axis=1), 1.0)
    last = rate[0, days]
    assert last[1] > last[0]  # clicked every time it was shown beats clicked one time in ten
    assert rate[0, 1, 2] > last[2]  # the burst on day 0 fades as the days pass
    # Before anything was seen every topic is equally likely.
    assert np.allclose(rate[0, 0], 1 / topics)


def test_topic_interest_rate_leans_towards_what_everyone_engages_with_lately():
    from newsfeed.features.jobs import decayed_topic_rate

    # Three users, 3 topics, 4 days. Users 1 and 2 see topics 0 and 1 every day; from day 2 on
    # they engage with topic 1 only (it trends). User 0 saw each topic once on day 0 and
    # never reacted: nothing of their own tells topic 0 from topic 1.
    users, days, topics = 3, 4, 3
    positives = np.zeros((users, days, topics))
    positives[1:, :2, 0] = 2
    positives[1:, 2:, 1] = 4
    shown = [(0, 0, t) for t in range(topics)]
    shown += [(u, d, t) for u in (1, 2) for d in range(days) for t in (0, 1) for _ in range(10)]
    impressions = pd.DataFrame({"post_id": [t for _, _, t in shown]})
    args = (positives, impressions, np.array([u for u, _, _ in shown]), np.array([d for _, d, _ in shown]),
            pd.Series([0, 1, 2], index=[0, 1, 2]), topics, days)
    plain = decayed_topic_rate(*args, trend_half_life_days=None)
    trended = decayed_topic_rate(*args, trend_half_life_days=1.0)
    assert np.allclose(plain[0, days], 1 / topics)  # no trend: every topic alike for user 0
    assert trended[0, days, 1] > trended[0, days, 0] + 0.1  # the trend: topic 1 now, not topic 0
    assert trended[0, 2, 0] > trended[0, 2, 1]  # before topic 1 trended, topic 0 led
    assert np.allclose(trended[:, 0], 1 / topics)  # nothing seen yet by anyone: every topic alike
    assert np.allclose(trended.sum(axis=2), 1.0)
