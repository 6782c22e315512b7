"""Faults under a real Ray Serve app with two fused replicas, each over HTTP: a replica killed
under load, the model registry (an MLflow server of the test's own) stopped, the user-state
store (a Redis of the test's own, on its own port) stopped. The service keeps answering 200,
and ``degraded`` names the fault."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from homes import copy_home

pytestmark = pytest.mark.slow
PORT = 8767
INGEST = "faults-ingest-token"
ADMIN = "faults-admin-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{what} did not come up in {timeout:g} s")


def call(method: str, path: str, body=None, token: str | None = None, timeout: float = 30):
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", data, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, {"text": err.read().decode(errors="replace")}


class Process:
    """A server the test starts and kills (Redis, MLflow)."""

    def __init__(self, args: list[str], log: Path):
        self.args, self.log, self.proc = args, log, None

    def start(self) -> "Process":
        self.proc = subprocess.Popen(self.args, stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(10)


@pytest.fixture(scope="module")
def faulty(served_home, tmp_path_factory):
    """A copy of the served home (this module breaks things) served by two fused replicas on a
    Redis and an MLflow server of its own."""
    from serving.local import LocalServer
    from serving.settings import ServingSettings

    root = tmp_path_factory.mktemp("faults")
    home = root / "home"
    copy_home(served_home, home)
    redis_port, mlflow_port = _free_port(), _free_port()
    redis = Process(["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
                    root / "redis.log").start()
    mlflow = Process([str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
                      f"sqlite:///{home / 'mlflow' / 'mlflow.db'}", "--host", "127.0.0.1", "--port", str(mlflow_port),
                      "--workers", "1"], root / "mlflow.log").start()
    _wait(lambda: urllib.request.urlopen(f"http://127.0.0.1:{mlflow_port}/health", timeout=2).status == 200,
          "the MLflow server")
    env = {"NEWSFEED_REDIS": f"127.0.0.1:{redis_port}", "NEWSFEED_STATE_PREFIX": "faults",
           "NEWSFEED_MLFLOW_URI": f"http://127.0.0.1:{mlflow_port}", "NEWSFEED_INGEST_TOKEN": INGEST,
           "NEWSFEED_ADMIN_TOKEN": ADMIN}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    settings = ServingSettings(home=str(home), mode="fused", replicas=2, replica_cpus=0.5, state="production",
                               registry="production")
    server = LocalServer(settings, port=PORT, num_cpus=4)
    try:
        server.start()
        yield server, redis, mlflow
    finally:
        server.stop()
        redis.kill()
        mlflow.kill()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_a_replica_killed_under_load_is_replaced_and_few_requests_fail(faulty):
    """Four clients send for 60 s; one replica is killed after 10 s. Ray Serve starts a new
    one; the share of failed requests is reported (the goal is at most 0.1%)."""
    import ray

    outcomes, stop = [], threading.Event()

    def client(i: int):
        n = 0
        while not stop.is_set():
            try:
                status, _ = call("POST", "/v1/feed", {"user_id": 30 + (i * 97 + n) % 250, "limit": 10})
            except OSError as err:
                status = type(err).__name__
            outcomes.append(status)
            n += 1

    workers = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for w in workers:
        w.start()
    time.sleep(10)
    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True)
                if "feed-ingress" in a["name"] and a["name"].startswith("SERVE_REPLICA")]
    assert len(replicas) == 2, replicas
    ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]), no_restart=True)
    time.sleep(50)
    stop.set()
    for w in workers:
        w.join()
    failed = [o for o in outcomes if o != 200]
    share = len(failed) / len(outcomes)
    print(f"\nreplica killed under 4 clients for 60 s: {len(outcomes)} requests, {len(failed)} failed "
          f"({share:.3%}): {sorted(set(map(str, failed)))}")
    assert len(outcomes) > 200 and share < 0.01, (len(outcomes), failed[:10])
    _wait(lambda: len([a for a in ray.util.list_named_actors(all_namespaces=True)
                       if "feed-ingress" in a["name"] and a["name"].startswith("SERVE_REPLICA")]) == 2,
          "a replacement replica", timeout=120)


def test_a_stopped_registry_keeps_the_last_versions_serving_flagged(faulty):
    server, _, mlflow = faulty
    status, before = call("POST", "/v1/feed", {"user_id": 12, "limit": 10})
    assert status == 200 and not any(d.startswith("registry") for d in before["degraded"])
    mlflow.kill()
    flagged = []

    def degraded_by_the_registry() -> bool:
        status, feed = call("POST", "/v1/feed", {"user_id": 12, "limit": 10})
        assert status == 200 and len(feed["items"]) == 10, feed
        assert feed["model_versions"] == before["model_versions"]
        flagged.append([d for d in feed["degraded"] if d.startswith("registry:")])
        return bool(flagged[-1])

    _wait(degraded_by_the_registry, "a registry degradation", timeout=60)
    assert "serving the last resolved versions" in flagged[-1][0]
    t0 = time.perf_counter()
    for _ in range(5):
        assert call("POST", "/v1/feed", {"user_id": 13, "limit": 10})[0] == 200
    assert (time.perf_counter() - t0) / 5 < 1.0  # requests never wait on the registry


def test_a_stopped_redis_serves_from_the_cursor_and_keeps_events_durable(faulty):
    server, redis, _ = faulty
    first = call("POST", "/v1/feed", {"user_id": 40, "limit": 10})[1]
    assert not any(d.startswith("user_state") for d in first["degraded"])
    redis.kill()
    status, second = call("POST", "/v1/feed", {"user_id": 40, "limit": 10, "cursor": first["next_cursor"]})
    assert status == 200 and len(second["items"]) == 10
    assert any(d.startswith("user_state:") for d in second["degraded"]), second["degraded"]
    assert not {i["post_id"] for i in first["items"]} & {i["post_id"] for i in second["items"]}  # the cursor holds
    status, reply = call("POST", "/v1/events", {"events": [
        {"user_id": 40, "post_id": second["items"][0]["post_id"], "event_type": "like", "event_id": "during-outage"}]},
        token=INGEST)
    assert status == 200 and reply["accepted"] == 1 and "cannot be reached" in reply["state_error"], reply
    from newsfeed.data.event_log import read_events

    logged = read_events(Path(server.settings.home) / "data")
    assert "during-outage" in set(logged["event_id"].dropna())
    status, health = call("GET", "/healthz")
    assert status == 200
    # The experiment cannot be read or changed now: said so (503), not a 500; feeds keep the last one.
    assert call("GET", "/v1/experiments", token=ADMIN)[0] == 503
    assert call("PUT", "/v1/experiments", {"shares": {"champion": 100}}, token=ADMIN)[0] == 503
