"""Prometheus metrics, in a registry of the app's own (no process-global state).

taskgate_requests_total{expert,action}          dispatch | clarify | fallback
taskgate_routing_seconds                        embedding + decision
taskgate_time_to_first_token_seconds{expert}    request start to the first delta
taskgate_request_seconds{expert}                request start to the end of the answer
taskgate_router_score, taskgate_router_margin   the best score and its lead
taskgate_cache_hits_total{kind}                 exact | semantic
taskgate_expert_errors_total{expert,kind}       timeout | unavailable | rejected | declined | busy
taskgate_expert_healthy{expert}                 1 healthy, 0 not (from the probes)
taskgate_event_loop_tasks                       asyncio tasks alive (a leak shows as growth)
"""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
SCORE_BUCKETS = (-0.5, 0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
MARGIN_BUCKETS = (0, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "taskgate_requests", "Chat requests by expert and routing action",
            ["expert", "action"], registry=r,
        )  # fmt: skip
        self.routing = Histogram(
            "taskgate_routing_seconds", "Routing time, embedding included",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.first_token = Histogram(
            "taskgate_time_to_first_token_seconds", "Request start to the first answer delta",
            ["expert"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.total = Histogram(
            "taskgate_request_seconds", "Request start to the end of the answer",
            ["expert"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.score = Histogram(
            "taskgate_router_score", "Score of the chosen (or best) expert",
            buckets=SCORE_BUCKETS, registry=r,
        )  # fmt: skip
        self.margin = Histogram(
            "taskgate_router_margin", "Lead of the best expert over the runner-up",
            buckets=MARGIN_BUCKETS, registry=r,
        )  # fmt: skip
        self.cache_hits = Counter(
            "taskgate_cache_hits", "Answers served from the response cache", ["kind"], registry=r
        )
        self.expert_errors = Counter(
            "taskgate_expert_errors", "Expert failures by kind", ["expert", "kind"], registry=r
        )
        self.healthy = Gauge(
            "taskgate_expert_healthy", "1 when the expert's last probe passed", ["expert"],
            registry=r,
        )  # fmt: skip
        self.tasks = Gauge(
            "taskgate_event_loop_tasks", "asyncio tasks alive in the serving event loop",
            registry=r,
        )  # fmt: skip
        self.tasks.set_function(_tasks_alive)

    def routed(self, seconds: float, score: float | None, margin: float | None) -> None:
        """A routing decision: how long it took, and its score and margin when it has them."""
        self.routing.observe(seconds)
        if score is not None and margin is not None:
            self.score.observe(score)
            self.margin.observe(margin)

    def expert_error(self, expert: str, kind: str) -> None:
        self.expert_errors.labels(expert, kind).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _tasks_alive() -> float:
    """Tasks of the running event loop (read when /metrics is scraped, inside the loop)."""
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # no running loop: exposition outside the server
        return 0.0
