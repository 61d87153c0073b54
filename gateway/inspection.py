"""What operators see of a running gateway: each expert's state and activity, and why a
request routes where it does. Read-only; the request path is `gateway.service`."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.activity import Activity
from gateway.memory.records import ExemplarStore, Vector
from gateway.outcomes import RouteInfo
from gateway.routing.explain import Explanation, explain
from gateway.runtime import Runtime


@dataclass(frozen=True, slots=True)
class ExpertReport:
    name: str
    kind: str
    healthy: bool
    detail: str
    examples: int
    exemplars: int
    requests: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "healthy": self.healthy,
            "detail": self.detail,
            "examples": self.examples,
            "exemplars": self.exemplars,
            "requests": self.requests,
            "latency_ms": {"p50": self.latency_p50_ms, "p95": self.latency_p95_ms},
        }


async def expert_reports(
    runtime: Runtime, store: ExemplarStore, activity: Activity
) -> list[ExpertReport]:
    """Each expert's kind, health, config examples, learned exemplars, request count and
    recent latency, in config order."""
    reports = []
    for spec in runtime.config.experts:
        health = runtime.health.state(spec.name)
        seen = activity.expert(spec.name)
        reports.append(
            ExpertReport(
                name=spec.name,
                kind=spec.kind,
                healthy=health.healthy,
                detail=health.detail,
                examples=len(spec.examples),
                exemplars=await store.count(expert=spec.name),
                requests=seen.requests,
                latency_p50_ms=seen.latency_p50_ms,
                latency_p95_ms=seen.latency_p95_ms,
            )
        )
    return reports


async def explain_route(
    runtime: Runtime, store: ExemplarStore, route: RouteInfo, vector: Vector, tenant: str
) -> Explanation:
    """The policy and the exemplars behind `route`: those of the chosen expert, of the
    experts a clarification offers, or of the best candidate when none was chosen."""
    if route.action == "dispatch" and route.expert is not None:
        experts: tuple[str, ...] = (route.expert,)
    elif route.options:
        experts = route.options
    else:
        experts = tuple(c.expert for c in route.candidates[:1])
    return await explain(runtime.router, store, vector, experts, tenant)
