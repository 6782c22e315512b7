"""The feed app on a local Ray, for `newsfeed serve`, tests and benchmarks: started, ready
when `/healthz` answers, shut down on exit."""

from __future__ import annotations

import json
import os
import time
import urllib.request

from newsfeed.errors import NewsfeedError
from serving.ingress import DEFAULT_INGRESS, ingress_env
from serving.settings import ServingSettings

APP_NAME = "newsfeed"
READY_TIMEOUT_SECONDS = 300
LOCAL_DRAIN = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2"}
"""A stopping replica stays reachable this long (Ray's default: 30 s) so that load balancers
can drop it first. A local cluster's HAProxy is told at once and retries a refused
connection elsewhere; the 30 s only held up every stop and redeploy (`serve.shutdown` waited
for it, then gave up). A value already in the environment wins; Kubernetes keeps Ray's."""


class LocalServer:
    def __init__(self, settings: ServingSettings, host: str = "127.0.0.1", port: int = 8000,
                 num_cpus: int | None = None, ingress: str = DEFAULT_INGRESS, app=None):
        """``app``: a bound Serve application to run instead of the feed's (it must answer
        ``GET /healthz``; the load benchmark's trivial ceiling app)."""
        self.settings, self.host, self.port, self.num_cpus, self.app = settings, host, port, num_cpus, app
        self.ingress = ingress_env(ingress)  # checked now, applied when Ray starts
        self.url = f"http://{host}:{port}"

    def __enter__(self) -> "LocalServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        import ray
        from ray import serve

        from serving.app import build_app

        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        if not ray.is_initialized():
            os.environ.update(self.ingress)  # read by every Ray process as it starts (serving/ingress.py)
            for name, value in LOCAL_DRAIN.items():
                os.environ.setdefault(name, value)
            # The replicas read the admin token and the stores' settings from their environment.
            env = {k: v for k, v in os.environ.items() if k.startswith(("NEWSFEED_", "HF_"))}
            ray.init(num_cpus=self.num_cpus or max(os.cpu_count() or 1, 2), include_dashboard=False,
                     configure_logging=False, log_to_driver=False, runtime_env={"env_vars": env})
        serve.start(http_options={"host": self.host, "port": self.port})
        serve.run(self.app or build_app(self.settings), name=APP_NAME, route_prefix="/", blocking=False)
        self.wait_ready()

    def redeploy(self) -> dict:
        """Delete the app and deploy it again (every replica starts anew), ready when it answers."""
        from ray import serve

        from serving.app import build_app

        serve.delete(APP_NAME)
        serve.run(self.app or build_app(self.settings), name=APP_NAME, route_prefix="/", blocking=False)
        return self.wait_ready()

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=5) as reply:
                    return json.loads(reply.read())
            except OSError as err:
                if time.monotonic() > deadline:
                    raise NewsfeedError(f"the feed service at {self.url} did not become ready in {timeout:g} s: "
                                        f"{err}") from None
                time.sleep(0.5)

    def stop(self) -> None:
        import ray
        from ray import serve

        try:
            serve.shutdown()
        finally:
            ray.shutdown()
