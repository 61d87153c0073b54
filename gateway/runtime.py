"""Everything one config yields, built and retired as a unit: the live-reload seam.

A `Runtime` holds the config, the experts, the router and the conversation router, the
health monitor and the per-expert admission limits. The gateway serves from exactly one
runtime at a time and swaps a new one in atomically; requests in flight finish on the
runtime they started with, which is then retired: its experts that the new runtime does not
reuse are closed once those requests have drained.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from experts.base import Expert
from experts.registry import ExpertSet
from experts.specs import ExpertSpec
from gateway.config import Config
from gateway.errors import ExpertDown, InvalidRequest
from gateway.health import Admission, HealthMonitor, InFlight
from gateway.memory.bundle import Memory
from gateway.metrics import Metrics
from gateway.routing.builder import RouterBuilder, routing_spec
from gateway.routing.conversation import ConversationRouter, RoutingOptions
from gateway.routing.embedder import Embedder
from gateway.routing.router import Router

logger = logging.getLogger(__name__)

ExpertFactory = Callable[[ExpertSpec], Expert]


@dataclass(frozen=True, slots=True)
class Runtime:
    config: Config
    experts: ExpertSet
    router: Router
    routing: ConversationRouter
    health: HealthMonitor
    admission: Mapping[str, Admission]
    inflight: InFlight

    def spec(self, name: str) -> ExpertSpec:
        spec = self.config.expert(name)
        if spec is None:  # the router only knows configured experts
            raise InvalidRequest(f"unknown expert '{name}'")
        return spec

    def serving(self, name: str, usable: Callable[[str], bool] | None = None) -> str:
        """`name`, or its first healthy fallback while it is unhealthy (503 when none);
        fallbacks that `usable` says cannot take the request are passed over."""
        if self.health.healthy(name):
            return name
        for fallback in self.spec(name).fallbacks:
            if self.health.healthy(fallback) and (usable is None or usable(fallback)):
                return fallback
        detail = self.health.state(name).detail
        raise ExpertDown(f"expert '{name}' is unavailable ({detail}) and has no healthy fallback")


async def build_runtime(
    config: Config,
    *,
    embedder: Embedder,
    memory: Memory,
    metrics: Metrics,
    make_expert: ExpertFactory | None,
    cache_dir: Path | None,
    previous: Runtime | None = None,
    experts: ExpertSet | None = None,
    start_experts: bool = True,
) -> Runtime:
    """Build and start a runtime; experts whose spec did not change are taken over.

    `start_experts=False` builds the routing side only (`taskgate route`).
    """
    if experts is None:
        made = [_reuse_or_make(spec, previous, make_expert) for spec in config.experts]
        experts = ExpertSet(made)
    if start_experts:
        await experts.start()  # idempotent for the experts taken over
    router = await RouterBuilder(embedder, cache_dir).build(
        routing_spec(config.router, config.experts)
    )
    routing = ConversationRouter(
        embedder,
        lambda: router,
        memory.conversation,
        RoutingOptions(
            followup_max_words=config.router.followup_max_words,
            resolve_threshold=config.router.resolve_threshold,
            clarification_ttl_s=config.memory.clarification_ttl_s,
            turn_ttl_s=config.memory.turn_ttl_s,
        ),
        exemplars=memory.exemplars,
    )
    h = config.health
    health = HealthMonitor(
        experts,
        interval_s=h.interval_s,
        jitter=h.jitter,
        timeout_s=h.timeout_s,
        unhealthy_after=h.unhealthy_after,
        on_change=lambda name, ok: metrics.healthy.labels(name).set(1 if ok else 0),
    )
    if start_experts:
        await health.start()
    admission = {
        spec.name: Admission(spec.max_concurrency, spec.queue_timeout_s) for spec in config.experts
    }
    return Runtime(config, experts, router, routing, health, admission, InFlight())


def check_reloadable(current: Config, new: Config) -> None:
    """Parts that live for the whole process cannot change by reload."""
    for section in ("embedder", "memory", "server", "cache"):
        if getattr(current, section) != getattr(new, section):
            raise InvalidRequest(
                f"'{section}' changed; it cannot change on reload (restart the gateway)",
                param=section,
            )


async def retire(old: Runtime, new: Runtime) -> None:
    """Stop `old`'s probes, then close its experts `new` does not use, once drained."""
    await old.health.aclose()
    await old.inflight.drained()
    kept = {id(expert) for expert in new.experts.values()}
    for expert in old.experts.values():
        if id(expert) not in kept:
            try:
                await expert.aclose()
            except Exception:  # closing must reach every expert
                logger.exception("closing a retired expert failed", extra={"expert": expert.name})


def _reuse_or_make(
    spec: ExpertSpec, previous: Runtime | None, make: ExpertFactory | None
) -> Expert:
    if previous is not None and previous.config.expert(spec.name) == spec:
        return previous.experts[spec.name]
    if make is None:
        raise InvalidRequest("this gateway was built without an expert factory: no reload")
    return make(spec)
