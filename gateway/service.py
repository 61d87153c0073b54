"""The request path: route a chat request, ask or answer (cached or from the expert).

`Gateway.handle` is the one orchestration function; read it top to bottom, it follows the
numbered steps of the design. Everything it uses is handed in through the constructor.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from experts.base import Delta, ExpertError, ExpertRequest, JSONValue, Message, Sampling, Usage
from experts.registry import ExpertSet
from experts.specs import ExpertSpec
from gateway.config import Config
from gateway.errors import ExpertNotFound, InvalidRequest, NotReady
from gateway.learning import Feedback, Learning
from gateway.memory.bundle import Memory
from gateway.memory.cache import CacheRequest, cache_request
from gateway.memory.pending import CompletionRecord
from gateway.memory.records import Exemplar, Source, StoreStatus, Vector
from gateway.metrics import CONTENT_TYPE, Metrics
from gateway.outcomes import AUTO, ChatCall, Reply, RouteInfo, route_info
from gateway.routing.builder import RouterBuilder, routing_spec
from gateway.routing.conversation import ConversationRouter, Routed, RoutingOptions
from gateway.routing.embedder import Embedder
from gateway.routing.router import Candidate, Clarify, Dispatch, Router
from gateway.streams import (
    close_stream,
    error_kind,
    open_expert,
    replay,
    single,
    translate,
    usage_from,
)

logger = logging.getLogger(__name__)

# What the HTTP layer needs, re-exported so it depends on the service alone.
__all__ = [
    "AUTO",
    "CONTENT_TYPE",
    "ChatCall",
    "Delta",
    "Gateway",
    "JSONValue",
    "Message",
    "Reply",
    "RouteInfo",
    "Sampling",
    "Usage",
    "close_stream",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class _State:
    """Everything one config yields; swapped whole, so a request sees one consistent set."""

    config: Config
    experts: ExpertSet
    router: Router


@dataclass(frozen=True, slots=True)
class _CachePlan:
    request: CacheRequest
    lookup: bool
    store: bool
    semantic: bool
    ttl_s: float


class Gateway:
    def __init__(
        self,
        config: Config,
        embedder: Embedder,
        experts: ExpertSet,
        memory: Memory,
        metrics: Metrics | None = None,
    ) -> None:
        self._config = config
        self.metrics = metrics if metrics is not None else Metrics()
        self._embedder = embedder
        self._experts = experts
        self._memory = memory
        self._learning = Learning(memory, embedder)
        self._state: _State | None = None
        self._router: Router | None = None
        self._routing = ConversationRouter(
            embedder,
            self._current_router,
            memory.conversation,
            RoutingOptions(
                followup_max_words=config.router.followup_max_words,
                resolve_threshold=config.router.resolve_threshold,
                clarification_ttl_s=config.memory.clarification_ttl_s,
                turn_ttl_s=config.memory.turn_ttl_s,
            ),
            exemplars=memory.exemplars,
        )

    # -- lifecycle ------------------------------------------------------------------

    async def start_routing(self, config: Config | None = None) -> None:
        """Load the embedder and the memory, build the router: enough for `route()`.

        Given a `config` (a reload), build its router while the current one keeps serving
        (the head is fitted in a worker thread), then swap it in.
        """
        if self._router is None:
            await asyncio.gather(self._embedder.start(), self._memory.start())
        if self._router is None or config is not None:
            self._router = await _router_for(config or self._config, self._embedder)

    async def start(self) -> None:
        """Start routing and every expert; the gateway is ready afterwards."""
        # One after the other: model loads must not overlap (see ExpertSet.start).
        await self.start_routing()
        await self._experts.start()
        assert self._router is not None
        self._state = _State(self._config, self._experts, self._router)
        logger.info("gateway ready", extra={"action": "ready", "experts": len(self._experts)})

    @property
    def ready(self) -> bool:
        return self._state is not None

    @property
    def config(self) -> Config:
        return self._config

    def memory_status(self) -> StoreStatus:
        return self._memory.status()

    async def aclose(self) -> None:
        await self._experts.aclose()
        await self._memory.aclose()
        await self._embedder.aclose()

    def _current(self) -> _State:
        if self._state is None:
            raise NotReady("the gateway is still starting; retry shortly")
        return self._state

    def _current_router(self) -> Router:
        if self._router is None:
            raise NotReady("the router is still starting; retry shortly")
        return self._router

    # -- the request path -----------------------------------------------------------

    async def handle(self, call: ChatCall) -> Reply:
        state = self._current()
        reply_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        started = time.perf_counter()
        # 1-4. explicit expert, or route the conversation (learned exemplars count).
        routed = await self._route(call, remember=True)
        route = route_info(routed)
        self._observe_route(call, route, time.perf_counter() - started)
        # 5. Clarify: answer with the question; no expert is called.
        if isinstance(routed.decision, Clarify):
            return Reply(reply_id, created, AUTO, route, single(routed.decision.question))
        assert route.expert is not None
        spec = _spec(state.config, route.expert)
        messages = call.messages[: routed.keep_messages]
        vector = await self._vector_of(routed, messages)
        if routed.resolved is not None:
            await self._learning.learn_clarification(
                call.tenant, spec.name, routed.routing_text, vector
            )
        # 6. cache lookup: exact, then semantic; scoped by tenant and expert.
        plan = self._cache_plan(state.config, spec, call, messages, vector)
        cached = None
        if plan.lookup:
            cached = await self._memory.cache.lookup(plan.request, semantic=plan.semantic)
        if cached is not None:
            self.metrics.cache_hits.labels(cached.kind).inc()
            usage = usage_from(cached.usage)
            deltas = replay(cached.content, cached.finish_reason, usage)
            return Reply(reply_id, created, spec.name, route.with_cached(cached.kind), deltas)
        # 7. few-shot exemplars of that expert.
        shots = await self._learning.fewshot(call.tenant, spec.name, spec.fewshot, vector, messages)
        route = route.with_fewshot((len(shots) - len(messages)) // 2)
        # 8. call the expert (or its fallbacks), primed so early failures get a status.
        request = ExpertRequest(shots, call.sampling, call.extra, call.request_id)
        expert, deltas = await open_expert(
            state.config, state.experts, spec.name, request, self.metrics.expert_error
        )
        if expert != spec.name:
            route = route.with_expert(expert, f"{route.reason}+fallback_from_{spec.name}")
            plan = self._cache_plan(
                state.config, _spec(state.config, expert), call, messages, vector
            )
        # 9. record: the answer for follow-ups and feedback, and the cache.
        recorded = self._record(reply_id, call, routed, expert, plan, deltas, started)
        return Reply(reply_id, created, expert, route, recorded)

    async def route(self, call: ChatCall) -> RouteInfo:
        """The routing decision alone: no expert is called and nothing is remembered."""
        return route_info(await self._route(call, remember=False))

    async def _route(self, call: ChatCall, *, remember: bool) -> Routed:
        if call.model != AUTO:
            return _explicit(self._config, call)
        try:
            return await self._routing.route(call.messages, call.tenant, remember=remember)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="messages") from exc

    async def _vector_of(self, routed: Routed, messages: tuple[Message, ...]) -> Vector:
        """The embedding of the last user turn (routing usually computed it already)."""
        last_user = next(m.content for m in reversed(messages) if m.role == "user")
        if routed.vector is not None and routed.routing_text == last_user:
            return routed.vector
        vector: Vector = (await self._embedder.embed([last_user]))[0]
        return vector

    def _cache_plan(
        self,
        config: Config,
        spec: ExpertSpec,
        call: ChatCall,
        messages: tuple[Message, ...],
        vector: Vector,
    ) -> _CachePlan:
        ttl = spec.cache_ttl_s if spec.cache_ttl_s is not None else config.cache.ttl_s
        repeatable = call.sampling.is_greedy() or call.sampling.seed is not None
        usable = config.cache.enabled and ttl > 0 and repeatable
        params: dict[str, object] = {"sampling": call.sampling, "extra": dict(call.extra)}
        pairs = [(m.role, m.content) for m in messages]
        request = cache_request(call.tenant, spec.name, pairs, params, vector)
        semantic = spec.semantic_cache if spec.semantic_cache is not None else config.cache.semantic
        return _CachePlan(
            request,
            lookup=usable and "no-cache" not in call.cache_control,
            store=usable and "no-store" not in call.cache_control,
            semantic=semantic,
            ttl_s=ttl,
        )

    async def _record(
        self,
        reply_id: str,
        call: ChatCall,
        routed: Routed,
        expert: str,
        plan: _CachePlan,
        deltas: AsyncIterator[Delta],
        started: float,
    ) -> AsyncIterator[Delta]:
        parts: list[str] = []
        finish: str | None = None
        usage: Usage | None = None
        try:
            async for delta in deltas:
                if not parts:
                    self.metrics.first_token.labels(expert).observe(time.perf_counter() - started)
                parts.append(delta.content)
                finish = delta.finish_reason or finish
                usage = delta.usage or usage
                yield delta
        except ExpertError as exc:
            self.metrics.expert_error(expert, error_kind(exc))
            raise translate(exc) from exc
        finally:
            await close_stream(deltas)
        self.metrics.total.labels(expert).observe(time.perf_counter() - started)
        if finish is None:
            return  # an incomplete answer is neither remembered nor cached
        answer = "".join(parts)
        await self._routing.remember_answer(call.tenant, answer, expert)
        record = CompletionRecord(
            reply_id, call.tenant, expert, routed.routing_text, answer, time.time()
        )
        await self._learning.remember_completion(record, self._config.memory.feedback_ttl_s)
        if plan.store:
            counts = None if usage is None else {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
            }  # fmt: skip
            await self._memory.cache.store(plan.request, answer, finish, counts, plan.ttl_s)

    def _observe_route(self, call: ChatCall, route: RouteInfo, seconds: float) -> None:
        self.metrics.requests.labels(route.expert or "", route.action).inc()
        if call.model == AUTO:
            self.metrics.routing.observe(seconds)
            if route.score is not None and route.margin is not None:
                self.metrics.score.observe(route.score)
                self.metrics.margin.observe(route.margin)
        _log_route(call, route, seconds)

    # -- learning -------------------------------------------------------------------

    async def feedback(self, tenant: str, completion_id: str, rating: int) -> Feedback:
        return await self._learning.feedback(tenant, completion_id, rating)

    async def add_exemplar(
        self, tenant: str, expert: str, text: str, response: str | None, good: bool
    ) -> Exemplar:
        return await self._learning.add(self._config, tenant, expert, text, response, good)

    async def exemplars(
        self, tenant: str, expert: str | None, source: Source | None, limit: int, offset: int
    ) -> list[Exemplar]:
        return await self._learning.listing(tenant, expert, source, limit, offset)

    async def delete_exemplar(self, tenant: str, exemplar_id: str) -> None:
        await self._learning.delete(tenant, exemplar_id)

    def expert_profiles(self) -> list[tuple[str, str, str]]:
        """(name, kind, description) of every expert, in config order."""
        return [(spec.name, spec.kind, spec.description) for spec in self._config.experts]


# ---------------------------------------------------------------------------------------


async def _router_for(config: Config, embedder: Embedder, cache_dir: Path | None = None) -> Router:
    """The router for `config`; fitted heads and embeddings are cached under `cache_dir`."""
    spec = routing_spec(config.router, config.experts)
    return await RouterBuilder(embedder, cache_dir).build(spec)


def _spec(config: Config, name: str) -> ExpertSpec:
    spec = config.expert(name)
    if spec is None:  # the router only knows configured experts
        raise ExpertNotFound(f"unknown expert '{name}'")
    return spec


def _explicit(config: Config, call: ChatCall) -> Routed:
    if config.expert(call.model) is None:
        known = ", ".join([AUTO, *(spec.name for spec in config.experts)])
        raise ExpertNotFound(f"unknown model '{call.model}'; use one of: {known}", param="model")
    decision = Dispatch(call.model, 1.0, 0.0, (Candidate(call.model, 1.0),), reason="explicit")
    last_user = next((m.content for m in reversed(call.messages) if m.role == "user"), "")
    return Routed(decision, last_user, len(call.messages))


def _log_route(call: ChatCall, route: RouteInfo, seconds: float) -> None:
    logger.info(
        "routed",
        extra={
            "request_id": call.request_id,
            "tenant": call.tenant,
            "action": route.action,
            "expert": route.expert,
            "score": route.score,
            "margin": route.margin,
            "reason": route.reason,
            "latency_ms": round(seconds * 1000, 2),
        },
    )
