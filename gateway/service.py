"""The request path: route a chat request, ask or answer (cached or from the expert).

`Gateway.handle` is the one orchestration function; read it top to bottom, it follows the
numbered steps of the design. Everything it uses is handed in through the constructor.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import cast

from opentelemetry.trace import Span

from experts.base import Delta, ExpertError, ExpertRequest, JSONValue, Message, Sampling, Usage
from experts.registry import ExpertSet
from gateway.activity import Activity, LoggedRequest
from gateway.answers import Answer
from gateway.cache_plan import CachePlan, plan_cache
from gateway.capabilities import (
    capable,
    check_capable,
    forces_tool_call,
    incapable,
    lacking,
    request_needs,
)
from gateway.config import Config
from gateway.errors import (
    ExpertBusy,
    ExpertNotFound,
    InvalidRequest,
    NotReady,
    RoutingUnavailable,
)
from gateway.health import Busy
from gateway.inspection import ExpertReport, expert_reports, explain_route
from gateway.learning import Feedback, Learning
from gateway.memory.bundle import Memory
from gateway.memory.pending import CompletionRecord
from gateway.memory.records import Exemplar, Source, StoreStatus, Vector
from gateway.metrics import CONTENT_TYPE, Metrics
from gateway.outcomes import AUTO, ChatCall, Reply, RouteInfo, route_info
from gateway.passthrough import ForwardCall, Passed
from gateway.passthrough import forward as pass_through
from gateway.routing.conversation import Constraints, Routed
from gateway.routing.embedder import Embedder, EmbedderUnavailable
from gateway.routing.explain import Explanation
from gateway.routing.router import Candidate, Clarify, Dispatch
from gateway.runtime import ExpertFactory, Runtime, build_runtime, check_reloadable, retire
from gateway.streams import (
    Lease,
    close_stream,
    error_kind,
    open_expert,
    replay,
    single,
    translate,
    usage_from,
)
from gateway.tracing import active_tracer

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


class Gateway:
    def __init__(
        self,
        config: Config,
        embedder: Embedder,
        experts: ExpertSet,
        memory: Memory,
        *,
        metrics: Metrics | None = None,
        make_expert: ExpertFactory | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self._config = config
        self.metrics = metrics if metrics is not None else Metrics()
        # Recent per-expert activity, cache hit counts and request logs, for operators.
        self.activity = Activity()
        self._embedder = embedder
        self._experts = experts
        self._memory = memory
        self._learning = Learning(memory, embedder)
        self._make_expert = make_expert
        self._cache_dir = cache_dir
        self._runtime: Runtime | None = None
        self._reload_lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()

    # -- lifecycle ------------------------------------------------------------------

    async def start(self, *, experts: bool = True) -> None:
        """Load the embedder and memory, start every expert, build the router: ready.

        `experts=False` prepares routing only (`route()` works, `handle()` must not be used).
        """
        await asyncio.gather(self._embedder.start(), self._memory.start())
        # Experts after the embedder: model loads must not overlap (see ExpertSet.start).
        self._runtime = await self._build(
            self._config, previous=None, experts=self._experts, start_experts=experts
        )
        logger.info("gateway ready", extra={"action": "ready", "experts": len(self._experts)})

    async def reload(self, config: Config) -> list[str]:
        """Swap in `config`'s experts and router atomically; in-flight requests finish on
        the old ones. Nothing changes when building the new set fails."""
        async with self._reload_lock:
            current = self._current()
            check_reloadable(current.config, config)
            runtime = await self._build(config, previous=current)
            self._runtime, self._config = runtime, config
            task = asyncio.create_task(retire(current, runtime), name="retire-runtime")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        logger.info("config reloaded", extra={"action": "reload", "experts": len(config.experts)})
        return [spec.name for spec in config.experts]

    async def _build(
        self,
        config: Config,
        *,
        previous: Runtime | None,
        experts: ExpertSet | None = None,
        start_experts: bool = True,
    ) -> Runtime:
        return await build_runtime(
            config,
            embedder=self._embedder,
            memory=self._memory,
            metrics=self.metrics,
            make_expert=self._make_expert,
            cache_dir=self._cache_dir,
            previous=previous,
            experts=experts,
            start_experts=start_experts,
        )

    @property
    def ready(self) -> bool:
        return self._runtime is not None

    @property
    def config(self) -> Config:
        return self._config

    @property
    def cache_dir(self) -> Path | None:
        return self._cache_dir

    def memory_status(self) -> StoreStatus:
        return self._memory.status()

    async def aclose(self) -> None:
        for task in list(self._retiring):
            await task
        if self._runtime is not None:
            await self._runtime.health.aclose()
            await self._runtime.experts.aclose()
        else:
            await self._experts.aclose()
        await self._memory.aclose()
        await self._embedder.aclose()

    def _current(self) -> Runtime:
        if self._runtime is None:
            raise NotReady("the gateway is still starting; retry shortly")
        return self._runtime

    # -- the request path -----------------------------------------------------------

    async def handle(self, call: ChatCall) -> Reply:
        runtime = self._current()
        runtime.inflight.enter()
        lease = Lease(runtime.inflight.leave)
        traced = active_tracer()
        if traced is None:
            return await self._leased(runtime, call, lease)
        with traced.start_as_current_span("taskgate.chat") as span:
            span.set_attribute("taskgate.request_id", call.request_id)
            reply = await self._leased(runtime, call, lease)
            _trace_route(span, reply.route)
            return reply

    async def _leased(self, runtime: Runtime, call: ChatCall, lease: Lease) -> Reply:
        try:
            return await self._handle(runtime, call, lease)
        except BaseException:
            lease.release()
            raise

    async def _handle(self, runtime: Runtime, call: ChatCall, lease: Lease) -> Reply:
        reply_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        started = time.perf_counter()
        # 1-4. explicit expert, or route the conversation (learned exemplars count) among
        #      the experts that can take what it carries.
        needs = request_needs(call.messages, call.extra)
        routed = await self._route(runtime, call, needs, remember=True)
        route = route_info(routed)
        self._observe_route(call, route, time.perf_counter() - started)
        self.activity.log(call.tenant, LoggedRequest.of(reply_id, routed.routing_text, route))
        # 5. Clarify: answer with the question; no expert is called.
        if isinstance(routed.decision, Clarify):
            deltas = lease.guard(single(routed.decision.question))
            return Reply(reply_id, created, AUTO, route, deltas)
        assert route.expert is not None

        def usable(name: str) -> bool:
            spec = runtime.config.expert(name)
            return spec is not None and not lacking(spec, needs)

        serving = runtime.serving(route.expert, usable)  # an unhealthy expert's fallback
        if serving != route.expert:
            route = route.with_expert(serving, f"{route.reason}+unhealthy_{route.expert}")
        spec = runtime.spec(serving)
        messages = call.messages[: routed.keep_messages]
        # Embedded only when a step needs it: a fixed route without semantic caching or
        # few-shot examples never runs the embedder.
        vector = _LazyVector(self._embedder, routed, messages)
        if routed.resolved is not None and (learned := await vector.get_or_none()) is not None:
            await self._learning.learn_clarification(
                call.tenant, spec.name, routed.routing_text, learned
            )
        # 6. cache lookup: exact, then semantic; scoped by tenant and expert.
        plan = plan_cache(runtime.config, spec, call, messages, needs)
        cached = None
        if plan.lookup:
            semantic = plan.semantic and plan.request.semantic
            if semantic and (looked_up := await vector.get_or_none()) is not None:
                plan = plan.with_vector(looked_up)
            semantic = semantic and plan.request.vector is not None
            cached = await self._memory.cache.lookup(plan.request, semantic=semantic)
            self.activity.cache_lookup(cached.kind if cached is not None else None)
        if cached is not None:
            self.metrics.cache_hits.labels(cached.kind).inc()
            usage = usage_from(cached.usage)
            whole = cast("Mapping[str, JSONValue] | None", cached.completion)
            deltas = replay(cached.content, cached.finish_reason, usage, whole)
            route = route.with_cached(cached.kind)
            return Reply(reply_id, created, spec.name, route, lease.guard(deltas))
        # 7. few-shot exemplars of that expert.
        shots: tuple[Message, ...] = messages
        if spec.fewshot > 0 and (similar_to := await vector.get_or_none()) is not None:
            shots = await self._learning.fewshot(
                call.tenant, spec.name, spec.fewshot, similar_to, messages
            )
        route = route.with_fewshot((len(shots) - len(messages)) // 2)
        # 8. call the expert (or its fallbacks) within its concurrency limit, primed so
        #    early failures get a status.
        await self._admit(runtime, spec.name, lease)
        request = ExpertRequest(shots, call.sampling, call.extra, call.request_id, call.stream)
        expert, deltas = await open_expert(
            runtime.config, runtime.experts, spec.name, request,
            self.metrics.expert_error, runtime.health.healthy, usable,
        )  # fmt: skip
        if expert != spec.name:
            route = route.with_expert(expert, f"{route.reason}+fallback_from_{spec.name}")
            plan = plan_cache(runtime.config, runtime.spec(expert), call, messages, needs)
        # 9. record: the answer for follow-ups and feedback, and the cache.
        recorded = self._record(reply_id, call, routed, expert, plan, vector, deltas, started)
        return Reply(reply_id, created, expert, route, lease.guard(recorded))

    async def _admit(self, runtime: Runtime, expert: str, lease: Lease) -> None:
        admission = runtime.admission[expert]
        try:
            await admission.acquire()
        except Busy as exc:
            self.metrics.expert_error(expert, "busy")
            spec = runtime.spec(expert)
            raise ExpertBusy(
                f"expert '{expert}' is at its limit of {spec.max_concurrency} concurrent "
                f"requests; none finished within {spec.queue_timeout_s:g}s"
            ) from exc
        lease.also(admission.release)

    async def route(self, call: ChatCall) -> RouteInfo:
        """The routing decision alone: no expert is called and nothing is remembered."""
        needs = request_needs(call.messages, call.extra)
        return route_info(await self._route(self._current(), call, needs, remember=False))

    async def explain_route(self, call: ChatCall) -> tuple[RouteInfo, Explanation]:
        """`route`, with the policy applied and the exemplars that supported the decision."""
        runtime = self._current()
        needs = request_needs(call.messages, call.extra)
        routed = await self._route(runtime, call, needs, remember=False)
        route = route_info(routed)
        vector = routed.vector
        if vector is None:  # an explicit expert or a resolved clarification
            try:
                vector = (await self._embedder.embed([routed.routing_text]))[0]
            except EmbedderUnavailable as exc:
                raise RoutingUnavailable(f"routing is unavailable ({exc})") from exc
        explanation = await explain_route(
            runtime, self._memory.exemplars, route, vector, call.tenant
        )
        return route, explanation

    async def forward(self, call: ForwardCall) -> Passed:
        """A request to one of OpenAI's other endpoints (completions, embeddings,
        responses), passed through whole to the expert it names: see `gateway.passthrough`."""
        return await pass_through(self._current(), call, self.metrics, self.activity, self._admit)

    async def _route(
        self, runtime: Runtime, call: ChatCall, needs: frozenset[str], *, remember: bool
    ) -> Routed:
        config = runtime.config
        if call.model != AUTO:
            return _explicit(config, call, needs)
        if not any(_asks(m) for m in call.messages):
            raise InvalidRequest(
                "messages: need at least one non-empty user message to route; or name an "
                "expert as the model",
                param="messages",
            )
        allowed = capable(config.experts, needs) if needs else None
        if allowed is not None and not allowed:
            raise incapable("no expert can take this request", needs, config.experts)
        if allowed is not None and len(allowed) == 1:  # nothing to choose, nothing to ask
            (only,) = allowed
            return _dispatched(only, call, "only_capable")
        # A forced tool call cannot be answered with a question.
        constraints = Constraints(allowed, ask=not forces_tool_call(call.extra))
        try:
            return await runtime.routing.route(
                call.messages, call.tenant, remember=remember, constraints=constraints
            )
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="messages") from exc
        except EmbedderUnavailable as exc:
            raise RoutingUnavailable(
                f"routing is unavailable ({exc}); name an expert as the model to bypass it"
            ) from exc

    async def _record(
        self,
        reply_id: str,
        call: ChatCall,
        routed: Routed,
        expert: str,
        plan: CachePlan,
        vector: _LazyVector,
        deltas: AsyncIterator[Delta],
        started: float,
    ) -> AsyncIterator[Delta]:
        answer = Answer()
        try:
            async for delta in deltas:
                if not answer.started:
                    self.metrics.first_token.labels(expert).observe(time.perf_counter() - started)
                answer.add(delta)
                yield delta
        except ExpertError as exc:
            self.metrics.expert_error(expert, error_kind(exc))
            raise translate(exc) from exc
        finally:
            await close_stream(deltas)
        elapsed = time.perf_counter() - started
        self.metrics.total.labels(expert).observe(elapsed)
        self.activity.answered(expert, elapsed)
        finish, usage = answer.finish_reason, answer.usage
        if finish is None:
            return  # an incomplete answer is neither remembered nor cached
        text = answer.text
        await self._current().routing.remember_answer(
            call.tenant, text, expert, answer.tool_call_ids()
        )
        record = CompletionRecord(
            reply_id, call.tenant, expert, routed.routing_text, text, time.time()
        )
        await self._learning.remember_completion(record, self._config.memory.feedback_ttl_s)
        if plan.store:
            counts = None if usage is None else {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
            }  # fmt: skip
            request = plan.request
            if request.vector is None:
                stored = await vector.get_or_none()
                if stored is None:  # the answer is out; caching it is optional
                    return
                request = plan.with_vector(stored).request
            whole = answer.completion()  # merged from its chunks only now, to be kept
            await self._memory.cache.store(request, text, finish, counts, plan.ttl_s, whole)

    def _observe_route(self, call: ChatCall, route: RouteInfo, seconds: float) -> None:
        self.metrics.requests.labels(route.expert or "", route.action).inc()
        if route.expert is not None:
            self.activity.routed(route.expert)
        if call.model == AUTO:
            self.metrics.routed(seconds, route.score, route.margin)
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

    async def expert_reports(self) -> list[ExpertReport]:
        """Each expert's kind, health, examples, exemplars, requests and recent latency."""
        return await expert_reports(self._current(), self._memory.exemplars, self.activity)


# ---------------------------------------------------------------------------------------


class _LazyVector:
    """The embedding of the request's last user turn, computed at most once, on demand
    (routing usually computed it already)."""

    def __init__(self, embedder: Embedder, routed: Routed, messages: tuple[Message, ...]) -> None:
        self._embedder = embedder
        self._text = next((m.content for m in reversed(messages) if m.role == "user"), "")
        self._vector = routed.vector if routed.routing_text == self._text else None
        self._failed = False

    async def get_or_none(self) -> Vector | None:
        """The vector, or None (logged) when the embedder fails: every step that asks for
        it (learning, semantic cache, few-shot) is optional and is skipped."""
        if self._vector is None and not self._failed:
            try:
                self._vector = (await self._embedder.embed([self._text]))[0]
            except EmbedderUnavailable as exc:
                self._failed = True
                logger.warning(
                    "embedding failed; skipping what needs it", extra={"error": str(exc)}
                )
        return self._vector


def _asks(message: Message) -> bool:
    """A user turn with something to answer: text, or parts beyond text (an image)."""
    if message.role != "user":
        return False
    content = (message.raw or {}).get("content")
    parts = content if isinstance(content, list) else []
    beyond_text = [p for p in parts if isinstance(p, dict) and p.get("type") != "text"]
    return bool(message.content.strip() or beyond_text)


def _explicit(config: Config, call: ChatCall, needs: frozenset[str]) -> Routed:
    spec = config.expert(call.model)
    if spec is None:
        known = ", ".join([AUTO, *(spec.name for spec in config.experts)])
        raise ExpertNotFound(f"unknown model '{call.model}'; use one of: {known}", param="model")
    check_capable(spec, needs, config.experts)
    return _dispatched(call.model, call, "explicit")


def _dispatched(expert: str, call: ChatCall, reason: str) -> Routed:
    decision = Dispatch(expert, 1.0, 0.0, (Candidate(expert, 1.0),), reason=reason)
    last_user = next((m.content for m in reversed(call.messages) if m.role == "user"), "")
    return Routed(decision, last_user, len(call.messages))


def _trace_route(span: Span, route: RouteInfo) -> None:
    span.set_attribute("taskgate.action", route.action)
    span.set_attribute("taskgate.expert", route.expert or "")
    span.set_attribute("taskgate.reason", route.reason)
    span.set_attribute("taskgate.cached", route.cached or "")
    if route.score is not None:
        span.set_attribute("taskgate.score", route.score)


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
