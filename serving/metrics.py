"""Prometheus metrics of the feed: requests, latency per stage, degradations per arm."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


class FeedMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("newsfeed_feed_requests", "Feed requests", ["arm", "status"], registry=self.registry)
        self.latency = Histogram("newsfeed_feed_latency_seconds", "Feed request latency", ["arm"],
                                 buckets=BUCKETS, registry=self.registry)
        self.stage = Histogram("newsfeed_stage_latency_seconds", "Time in each feed stage", ["stage"],
                               buckets=BUCKETS, registry=self.registry)
        self.degraded = Counter("newsfeed_degradations", "Stages that degraded", ["arm", "stage"],
                                registry=self.registry)
        self.events = Counter("newsfeed_events", "Ingested events", ["outcome"], registry=self.registry)
        self.published = Counter("newsfeed_published", "Published posts, users and friendships",
                                 ["table", "outcome"], registry=self.registry)
        self.served_log_skipped = Gauge("newsfeed_served_log_lines_skipped",
                                        "Lines of the served log skipped when this replica last read it (unreadable or not a record)",
                                        registry=self.registry)

    def observe_feed(self, response: dict, seconds: float) -> None:
        arm = response["arm"]
        self.requests.labels(arm, "ok").inc()
        self.latency.labels(arm).observe(seconds)
        for stage, ms in response.get("timings_ms", {}).items():
            self.stage.labels(stage).observe(ms / 1000.0)
        for note in response.get("degraded", []):
            self.degraded.labels(arm, note.partition(":")[0]).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
