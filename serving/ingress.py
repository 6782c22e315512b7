"""How HTTP reaches the replicas: Ray Serve's own Python proxy, or its HAProxy ingress with
the throughput-optimised settings (replicas serve HTTP directly, handles speak gRPC).

Both are switched by environment variables that every Ray process must read when it
starts: `newsfeed serve` (``LocalServer``) sets them before Ray starts; on Kubernetes the
``newsfeed-config`` ConfigMap sets them in every Ray pod (``tests/test_k8s.py`` checks that
it holds ``ingress_env(DEFAULT_INGRESS)``). HAProxy writes its config and socket under
``/tmp/haproxy-serve``: the pods' ``/tmp`` is a writable emptyDir on a read-only root.
Measured in ``benchmarks/serving_load.py`` (docs/serving.md, "Speed").
"""

from __future__ import annotations

# Throughput mode also runs a deployment handle's router on the replica's own event loop, where
# a sync method (the feed's routes run in FastAPI's thread pool) cannot call it: chained mode's
# hops failed with "No event loop running". Its router keeps a loop of its own, as by default.
ROUTER_LOOP = {"RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "1"}
INGRESS_ENV: dict[str, dict[str, str]] = {
    "haproxy": {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", **ROUTER_LOOP},
    "proxy": {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0", **ROUTER_LOOP},
}
INGRESSES = tuple(INGRESS_ENV)
DEFAULT_INGRESS = "haproxy"


def ingress_env(kind: str) -> dict[str, str]:
    """The environment that selects ``kind`` (set before Ray starts)."""
    if kind not in INGRESS_ENV:
        raise ValueError(f"ingress {kind!r}: expected one of {', '.join(INGRESSES)}")
    return dict(INGRESS_ENV[kind])
