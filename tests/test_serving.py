"""The feed on a real Ray Serve app over really registered models and a materialized store:
HTTP contract, filters, experiments changed at run time, exact counters with several
replicas writing, an alias moved under load, and the chained mode."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from newsfeed.registry import RANKER, Registry

pytestmark = pytest.mark.slow
TOKEN = "test-admin-token"
PORT = 8765


def call(method: str, path: str, body=None, token: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", data, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            text = reply.read()
            return reply.status, (json.loads(text) if reply.headers.get_content_type() == "application/json"
                                  else {"text": text.decode()})
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.fixture(scope="module")
def server(served_home):
    """The fused app with two ingress replicas (events from both write one log and one store)."""
    import os

    from serving.local import LocalServer
    from serving.settings import ServingSettings

    os.environ["NEWSFEED_ADMIN_TOKEN"] = TOKEN
    settings = ServingSettings(home=str(served_home), mode="fused", replicas=2, replica_cpus=0.5)
    server = LocalServer(settings, port=PORT, num_cpus=4)
    server.start()
    yield server
    server.stop()
    os.environ.pop("NEWSFEED_ADMIN_TOKEN", None)


def test_health_and_a_feed_over_http(server, served_home):
    status, health = call("GET", "/healthz")
    assert status == 200 and health["status"] == "ok" and health["posts"] == 1_200
    status, feed = call("POST", "/v1/feed", {"user_id": 12, "limit": 10})
    assert status == 200, feed
    assert set(feed) >= {"request_id", "user_id", "arm", "model_versions", "items", "degraded", "next_cursor"}
    assert len(feed["items"]) == 10 and feed["arm"] == "champion"
    assert {"post_id", "score", "source"} <= set(feed["items"][0])
    assert feed["model_versions"] == {"two_tower": "1", "ranker": "1"}
    page2 = call("POST", "/v1/feed", {"user_id": 12, "limit": 10, "cursor": feed["next_cursor"]})[1]
    assert not {i["post_id"] for i in feed["items"]} & {i["post_id"] for i in page2["items"]}
    # Every served item is logged as an impression with what monitoring needs.
    from newsfeed.feed.service import ServedLog

    logged = {r["request_id"]: r for r in ServedLog(served_home).read()}
    record = logged[feed["request_id"]]
    assert record["arm"] == "champion" and record["model_versions"] == feed["model_versions"]
    assert [i["post_id"] for i in record["items"]] == [i["post_id"] for i in feed["items"]]
    assert all(i["show_probability"] == 1.0 for i in record["items"])


def test_feeds_over_http_hold_no_seen_hidden_blocked_or_own_posts(server, served_home):
    from newsfeed.data.io import read_table

    impressions = read_table(served_home / "data", "impressions")
    authors = read_table(served_home / "data", "posts").set_index("post_id")["author_id"]
    for user in impressions.loc[impressions["block"] == 1, "user_id"].unique()[:5]:
        status, feed = call("POST", "/v1/feed", {"user_id": int(user), "limit": 25})
        assert status == 200 and len(feed["items"]) == 25
        mine = impressions[impressions["user_id"] == user]
        blocked = set(authors.reindex(mine.loc[mine["block"] == 1, "post_id"]))
        posts, by = {i["post_id"] for i in feed["items"]}, {i["author_id"] for i in feed["items"]}
        assert not posts & set(mine["post_id"]) and not by & blocked and int(user) not in by


@pytest.mark.parametrize("body, field", [
    ({}, "user_id"), ({"user_id": "abc"}, "user_id"), ({"user_id": 1, "limit": 0}, "limit"),
    ({"user_id": -3}, "user_id"), ({"user_id": 1, "colour": "red"}, "colour"),
    ({"user_id": 1, "cursor": "forged"}, "cursor"),
])
def test_an_invalid_request_is_a_422_that_says_what_is_wrong(server, body, field):
    status, reply = call("POST", "/v1/feed", body)
    assert status == 422
    assert field in json.dumps(reply["detail"])


def test_an_unknown_user_gets_a_cold_start_feed_not_an_error(server):
    status, feed = call("POST", "/v1/feed", {"user_id": 987_654_321, "limit": 8})
    assert status == 200 and len(feed["items"]) == 8
    assert any(d.startswith("cold_start") for d in feed["degraded"])


def test_experiments_need_the_admin_token(server):
    assert call("GET", "/v1/experiments")[0] == 401
    assert call("GET", "/v1/experiments", token="wrong")[0] == 401
    assert call("PUT", "/v1/experiments", {"shares": {"champion": 100}})[0] == 401
    status, experiment = call("GET", "/v1/experiments", token=TOKEN)
    assert status == 200 and [a["name"] for a in experiment["arms"]] == ["champion"]


def test_a_share_change_takes_effect_without_a_restart_and_assignment_is_sticky(server):
    arms = [{"name": "champion", "share": 100}, {"name": "canary", "share": 0, "ranker": "champion",
                                                "reranking": {"exploration": "epsilon", "epsilon": 0.3}}]
    status, saved = call("PUT", "/v1/experiments", {"name": "feed", "salt": "s1", "arms": arms}, token=TOKEN)
    assert status == 200, saved
    status, bad = call("PUT", "/v1/experiments", {"shares": {"champion": 60, "canary": 30}}, token=TOKEN)
    assert status == 422 and "sum to 100" in json.dumps(bad)
    status, changed = call("PUT", "/v1/experiments", {"shares": {"champion": 70, "canary": 30}}, token=TOKEN)
    assert status == 200 and changed["version"] == saved["version"] + 1
    import time

    time.sleep(1.5)  # replicas re-read the experiment within a second
    users = range(1000, 1240)  # unknown users: cold-start feeds are cheap
    with ThreadPoolExecutor(4) as pool:
        first = list(pool.map(lambda u: call("POST", "/v1/feed", {"user_id": u, "limit": 3})[1]["arm"], users))
        again = list(pool.map(lambda u: call("POST", "/v1/feed", {"user_id": u, "limit": 3})[1]["arm"], users))
    assert first == again  # sticky, whichever replica answered
    share = first.count("canary") / len(first)
    assert abs(share - 0.3) < 4 * np.sqrt(0.3 * 0.7 / len(first)), share
    canary = call("POST", "/v1/feed", {"user_id": users[first.index("canary")], "limit": 5})[1]
    assert canary["arm"] == "canary"
    assert call("PUT", "/v1/experiments", {"shares": {"champion": 100, "canary": 0}}, token=TOKEN)[0] == 200


def test_concurrent_event_writers_on_two_replicas_leave_exact_counters(server, served_home):
    from newsfeed.features.store import open_store

    store = open_store(served_home)
    post = 1_100

    def likes() -> int:
        row = store.get_online_features(features=["post_engagement_live:like_count"],
                                        entity_rows=[{"post_id": post}]).to_dict()
        return int(row["like_count"][0] or 0)

    before = likes()
    batches = [[{"user_id": (b * 7 + i) % 300, "post_id": post, "event_type": "like"} for i in range(10)]
               for b in range(16)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda batch: call("POST", "/v1/events", {"events": batch}), batches))
    assert all(status == 200 and r["accepted"] == 10 and r["online_error"] is None for status, r in results), results
    assert likes() == before + 160
    # A retried batch (same event ids) sent to both replicas at once is counted once.
    retried = [{"user_id": 5, "post_id": post, "event_type": "like", "event_id": f"retry-{i}"} for i in range(5)]
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: call("POST", "/v1/events", {"events": retried})[1], range(4)))
    assert sum(r["accepted"] for r in replies) == 5 and sum(r["duplicates"] for r in replies) == 15
    assert likes() == before + 165
    status, reply = call("POST", "/v1/events", {"events": [{"user_id": 5, "post_id": 10**9, "event_type": "like"}]})
    assert status == 200 and reply["accepted"] == 0 and "unknown post" in reply["rejected"][0]["reason"]


def test_moving_the_champion_alias_is_served_without_errors(server, served_home):
    from typer.testing import CliRunner

    from newsfeed.cli import app
    from newsfeed.models.runs import register_run

    registry = Registry.open(served_home)
    v1 = registry.version(RANKER, "champion")
    v2 = register_run(registry, RANKER, v1.run_id)  # the same run registered again: a real new version
    statuses, versions, stop = [], [], threading.Event()

    def load():
        while not stop.is_set():
            status, reply = call("POST", "/v1/feed", {"user_id": 40 + len(statuses) % 50, "limit": 5})
            statuses.append(status)
            versions.append(reply.get("model_versions", {}).get("ranker"))

    workers = [threading.Thread(target=load) for _ in range(3)]
    for w in workers:
        w.start()
    import time

    time.sleep(2)
    result = CliRunner().invoke(app, ["models", "promote", "ranker", "--version", v2, "--home", str(served_home)])
    assert result.exit_code == 0, result.output
    deadline = time.monotonic() + 60
    while versions[-1:] != [v2] and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)
    stop.set()
    for w in workers:
        w.join()
    assert set(statuses) == {200}, sorted(set(statuses))
    assert versions[0] == str(v1.version) and versions[-1] == v2
    registry.set_alias(RANKER, "champion", str(v1.version))


def test_metrics_count_requests_and_stage_latency(server):
    status, reply = call("GET", "/metrics")
    assert status == 200
    assert "newsfeed_feed_requests_total" in reply["text"] and 'stage="rank"' in reply["text"]


def test_the_chained_mode_serves_the_same_pipeline_through_one_deployment_per_stage_group(server, served_home):
    from ray import serve

    from serving.app import build_app
    from serving.local import APP_NAME
    from serving.settings import ServingSettings

    settings = ServingSettings(home=str(served_home), mode="chained", replicas=1, replica_cpus=0.25)
    serve.run(build_app(settings), name=APP_NAME, route_prefix="/", blocking=False)
    server.wait_ready()
    status, feed = call("POST", "/v1/feed", {"user_id": 77, "limit": 10})
    assert status == 200 and len(feed["items"]) == 10 and not feed["degraded"], feed
    assert {"hop:retrieval", "hop:ranking", "hop:reranking"} <= set(feed["timings_ms"])
    assert "rank" in feed["timings_ms"] and "source:ann" in feed["timings_ms"]
    assert call("GET", "/healthz")[1]["mode"] == "chained"
