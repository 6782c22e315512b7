"""The served platform as the loop reaches it: over HTTP only, like any other client (the
feed, events, publishing, the experiment and the simulated clock through the admin API)."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from newsfeed.errors import NewsfeedError, ServiceUnreachable

RETRIES = 3  # a 503 (a store briefly down, a replica restarting) is tried again, then reported


class ServiceError(NewsfeedError):
    """The service answered with an error the loop cannot go on from."""


class FeedClient:
    def __init__(self, url: str, admin_token: str | None = None, ingest_token: str | None = None,
                 timeout: float = 30.0):
        import httpx

        self.url = url.rstrip("/")
        self._admin = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
        self._ingest = {"Authorization": f"Bearer {ingest_token}"} if ingest_token else {}
        self.http = httpx.Client(base_url=self.url, timeout=timeout,
                                 limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, body=None, headers: dict | None = None) -> dict:
        import httpx

        for attempt in range(RETRIES):
            try:
                reply = self.http.request(method, path, json=body, headers=headers or {})
            except httpx.TransportError as err:
                if attempt == RETRIES - 1:
                    raise ServiceUnreachable(f"the feed service at {self.url} cannot be reached: {err}") from None
                time.sleep(0.5 * (attempt + 1))
                continue
            if reply.status_code == 503 and attempt < RETRIES - 1:
                time.sleep(0.5 * (attempt + 1))
                continue
            if reply.status_code >= 400:
                raise ServiceError(f"{method} {self.url}{path} answered {reply.status_code}: {reply.text[:300]}")
            return reply.json()
        raise AssertionError("unreachable")

    def health(self) -> dict:
        return self._call("GET", "/healthz")

    def wait_ready(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.health()
            except (ServiceUnreachable, ServiceError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def now(self) -> float:
        """The service's time (its clock, as /healthz tells it)."""
        return datetime.fromisoformat(self.health()["clock"]["now"]).timestamp()

    def set_clock(self, unix: float) -> dict:
        return self._call("PUT", "/v1/clock", {"now": datetime.fromtimestamp(unix, timezone.utc).isoformat()},
                          self._admin)

    def feed(self, user_id: int, limit: int, cursor: str | None = None) -> dict:
        body = {"user_id": int(user_id), "limit": int(limit), **({"cursor": cursor} if cursor else {})}
        return self._call("POST", "/v1/feed", body)

    def events(self, events: list[dict]) -> dict:
        return self._call("POST", "/v1/events", {"events": events}, self._ingest)

    def publish(self, table: str, rows: list[dict]) -> dict:
        return self._call("POST", f"/v1/{table}", {table: rows}, self._ingest)

    def experiment(self) -> dict:
        return self._call("GET", "/v1/experiments", headers=self._admin)

    def set_experiment(self, experiment: dict) -> dict:
        return self._call("PUT", "/v1/experiments", experiment, self._admin)
