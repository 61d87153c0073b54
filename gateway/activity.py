"""What this gateway process has seen lately, for operators: per-expert request counts and
recent latencies, response cache lookups and hits, and a short log of each tenant's recent
requests (to promote one to an exemplar).

Everything is bounded and in this process only (each replica keeps its own); Prometheus
(`gateway.metrics`) stays the source for dashboards. The request log keeps what the memory
already keeps of a request (its routing text, the expert, the decision), never the answer.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np

from gateway.outcomes import RouteInfo

LATENCY_WINDOW = 200
LOG_PER_TENANT = 200
MAX_TENANTS = 1000


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    id: str
    created: float
    text: str
    action: str
    expert: str | None
    score: float | None
    reason: str

    @classmethod
    def of(cls, reply_id: str, text: str, route: RouteInfo) -> LoggedRequest:
        return cls(reply_id, time.time(), text, route.action, route.expert, route.score,
                   route.reason)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ExpertActivity:
    requests: int
    # Over the last LATENCY_WINDOW answers; None before the first.
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    recent: int


@dataclass(frozen=True, slots=True)
class CacheActivity:
    lookups: int
    exact: int
    semantic: int

    @property
    def hit_rate(self) -> float | None:
        return round((self.exact + self.semantic) / self.lookups, 4) if self.lookups else None


class Activity:
    def __init__(
        self,
        *,
        latency_window: int = LATENCY_WINDOW,
        log_per_tenant: int = LOG_PER_TENANT,
        max_tenants: int = MAX_TENANTS,
    ) -> None:
        self._latency_window = latency_window
        self._log_per_tenant = log_per_tenant
        self._max_tenants = max_tenants
        self._requests: dict[str, int] = {}
        self._latencies: dict[str, deque[float]] = {}
        self._lookups = 0
        self._hits = {"exact": 0, "semantic": 0}
        self._logs: OrderedDict[str, deque[LoggedRequest]] = OrderedDict()

    def routed(self, expert: str) -> None:
        self._requests[expert] = self._requests.get(expert, 0) + 1

    def answered(self, expert: str, seconds: float) -> None:
        window = self._latencies.get(expert)
        if window is None:
            window = self._latencies[expert] = deque(maxlen=self._latency_window)
        window.append(seconds * 1000)

    def cache_lookup(self, hit: str | None) -> None:
        """One lookup; `hit` is its kind (exact, semantic) or None for a miss."""
        self._lookups += 1
        if hit in self._hits:
            self._hits[hit] += 1

    def log(self, tenant: str, entry: LoggedRequest) -> None:
        entries = self._logs.get(tenant)
        if entries is None:
            entries = self._logs[tenant] = deque(maxlen=self._log_per_tenant)
            while len(self._logs) > self._max_tenants:
                self._logs.popitem(last=False)  # the tenant seen longest ago
        else:
            self._logs.move_to_end(tenant)
        entries.append(entry)

    def recent_requests(self, tenant: str, limit: int) -> list[LoggedRequest]:
        """The tenant's latest requests, newest first."""
        entries = self._logs.get(tenant, ())
        return list(reversed(entries))[:limit]

    def expert(self, name: str) -> ExpertActivity:
        window = self._latencies.get(name)
        if not window:
            return ExpertActivity(self._requests.get(name, 0), None, None, 0)
        p50, p95 = np.percentile(np.fromiter(window, dtype=np.float64), [50, 95])
        return ExpertActivity(
            self._requests.get(name, 0), round(float(p50), 3), round(float(p95), 3), len(window)
        )

    def cache(self) -> CacheActivity:
        return CacheActivity(self._lookups, self._hits["exact"], self._hits["semantic"])
