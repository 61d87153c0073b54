"""The request path: route a chat request, ask or call the expert, return one delta stream.

`Gateway.handle` is the one orchestration function; read it top to bottom. Everything
it uses is handed in through the constructor.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from experts.base import (
    Delta,
    ExpertDeclined,
    ExpertError,
    ExpertRejected,
    ExpertRequest,
    ExpertTimeout,
    ExpertUnavailable,
    JSONValue,
    Message,
    Sampling,
    Usage,
)
from experts.registry import BuildContext, ExpertSet
from gateway.config import Config
from gateway.errors import (
    ExpertCannotAnswer,
    ExpertFailed,
    ExpertNotFound,
    ExpertTimedOut,
    GatewayError,
    InvalidRequest,
    NotReady,
)
from gateway.memory.pending import ConversationMemory, LocalConversationMemory
from gateway.routing.clarify import ExpertProfile
from gateway.routing.conversation import ConversationRouter, Routed, RoutingOptions
from gateway.routing.embedder import (
    Embedder,
    SentenceTransformerEmbedder,
    resolve_embedder_path,
)
from gateway.routing.router import (
    Candidate,
    Clarify,
    Dispatch,
    Fallback,
    Router,
    RouterPolicy,
    build_router,
)

logger = logging.getLogger(__name__)

AUTO = "auto"

# The expert types the HTTP layer needs, re-exported so it depends on the service alone.
__all__ = [
    "AUTO", "ChatCall", "Delta", "Gateway", "JSONValue", "Message", "Reply", "RouteInfo",
    "Sampling", "Usage", "close_stream",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class ChatCall:
    """A validated chat request, as the gateway sees it."""

    model: str
    messages: tuple[Message, ...]
    sampling: Sampling = field(default_factory=Sampling)
    extra: Mapping[str, JSONValue] = field(default_factory=dict)
    tenant: str = "default"
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class RouteInfo:
    action: str  # dispatch | clarify | fallback
    expert: str | None
    score: float | None
    margin: float | None
    candidates: tuple[Candidate, ...]
    reason: str
    question: str | None = None
    options: tuple[str, ...] = ()

    def to_json(self) -> dict[str, JSONValue]:
        body: dict[str, JSONValue] = {
            "action": self.action,
            "expert": self.expert,
            "score": self.score,
            "margin": self.margin,
            "reason": self.reason,
            "candidates": [{"expert": c.expert, "score": c.score} for c in self.candidates],
        }
        if self.question is not None:
            body["question"] = self.question
            body["options"] = list(self.options)
        return body


@dataclass(slots=True)
class Reply:
    id: str
    created: int
    model: str
    route: RouteInfo
    deltas: AsyncIterator[Delta]


@dataclass(frozen=True, slots=True)
class _State:
    """Everything one config yields; swapped whole, so a request sees one consistent set."""

    config: Config
    experts: ExpertSet
    router: Router


class Gateway:
    def __init__(
        self,
        config: Config,
        embedder: Embedder,
        experts: ExpertSet,
        memory: ConversationMemory,
    ) -> None:
        self._config = config
        self._embedder = embedder
        self._experts = experts
        self._memory = memory
        self._state: _State | None = None
        self._router: Router | None = None
        self._routing = ConversationRouter(
            embedder,
            self._current_router,
            memory,
            RoutingOptions(
                followup_max_words=config.router.followup_max_words,
                resolve_threshold=config.router.resolve_threshold,
                clarification_ttl_s=config.memory.clarification_ttl_s,
                turn_ttl_s=config.memory.turn_ttl_s,
            ),
        )

    # -- lifecycle ------------------------------------------------------------------

    async def start_routing(self) -> None:
        """Load the embedder and build the router: enough for `route()`."""
        if self._router is None:
            await self._embedder.start()
            self._router = await _router_for(self._config, self._embedder)

    async def start(self) -> None:
        """Start routing and every expert; the gateway is ready afterwards."""
        await asyncio.gather(self.start_routing(), self._experts.start())
        assert self._router is not None
        self._state = _State(self._config, self._experts, self._router)
        logger.info("gateway ready", extra={"action": "ready", "experts": len(self._experts)})

    @property
    def ready(self) -> bool:
        return self._state is not None

    @property
    def config(self) -> Config:
        return self._config

    async def aclose(self) -> None:
        await self._experts.aclose()
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
        # 1-4. explicit expert, or route the conversation.
        if call.model == AUTO:
            routed = await self._route(call, remember=True)
        else:
            routed = _explicit(state.config, call)
        route = _route_info(routed)
        reply_id = f"chatcmpl-{uuid.uuid4().hex}"
        _log_route(call, route)
        # 5. Clarify: answer with the question; no expert is called.
        if isinstance(routed.decision, Clarify):
            return Reply(reply_id, int(time.time()), AUTO, route, _single(routed.decision.question))
        # 8. call the expert (or its fallbacks), primed so early failures get a status.
        request = ExpertRequest(
            messages=call.messages[: routed.keep_messages],
            sampling=call.sampling,
            extra=call.extra,
            request_id=call.request_id,
        )
        assert route.expert is not None
        expert, deltas = await self._open(state, route.expert, request)
        if expert != route.expert:
            route = RouteInfo(
                route.action, expert, route.score, route.margin, route.candidates,
                f"{route.reason}+fallback_from_{route.expert}",
            )  # fmt: skip
        # 9. record which expert answered, for follow-ups.
        recorded = self._record(call.tenant, expert, deltas)
        return Reply(reply_id, int(time.time()), expert, route, recorded)

    async def route(self, call: ChatCall) -> RouteInfo:
        """The routing decision alone: no expert is called and nothing is remembered."""
        if call.model != AUTO:
            return _route_info(_explicit(self._config, call))
        return _route_info(await self._route(call, remember=False))

    def expert_profiles(self) -> list[tuple[str, str, str]]:
        """(name, kind, description) of every expert, in config order."""
        return [(spec.name, spec.kind, spec.description) for spec in self._config.experts]

    async def _route(self, call: ChatCall, *, remember: bool) -> Routed:
        try:
            return await self._routing.route(call.messages, call.tenant, remember=remember)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="messages") from exc

    async def _open(
        self, state: _State, first: str, request: ExpertRequest
    ) -> tuple[str, AsyncIterator[Delta]]:
        """Start the expert's stream and wait for its first delta, trying fallbacks."""
        spec = state.config.expert(first)
        chain = [first, *(spec.fallbacks if spec is not None else [])]
        failure: ExpertError | None = None
        for name in chain:
            expert_spec = state.config.expert(name)
            timeout = expert_spec.timeout_s if expert_spec is not None else 60.0
            stream = state.experts[name].stream(request)
            try:
                first_delta = await asyncio.wait_for(_first(stream), timeout)
            except (ExpertDeclined, ExpertUnavailable) as exc:
                await close_stream(stream)
                logger.warning("expert failed before answering", extra={"expert": name})
                failure = exc
                continue
            except TimeoutError as exc:
                await close_stream(stream)
                raise ExpertTimedOut(f"expert '{name}' timed out after {timeout:g}s") from exc
            except ExpertError as exc:
                await close_stream(stream)
                raise _translate(exc) from exc
            return name, _prepend(first_delta, stream)
        assert failure is not None
        raise _translate(failure) from failure

    async def _record(
        self, tenant: str, expert: str, deltas: AsyncIterator[Delta]
    ) -> AsyncIterator[Delta]:
        parts: list[str] = []
        try:
            async for delta in deltas:
                parts.append(delta.content)
                yield delta
        except ExpertError as exc:
            raise _translate(exc) from exc
        finally:
            await close_stream(deltas)
        await self._routing.remember_answer(tenant, "".join(parts), expert)


# ---------------------------------------------------------------------------------------


async def _router_for(config: Config, embedder: Embedder) -> Router:
    profiles = {
        spec.name: ExpertProfile(spec.name, spec.description, spec.ask) for spec in config.experts
    }
    examples = {spec.name: spec.examples for spec in config.experts}
    r = config.router
    policy = RouterPolicy(
        threshold=r.threshold,
        margin=r.margin,
        on_no_match=r.on_no_match,
        fallback=r.fallback,
        aggregate=r.aggregate,
        top_k=r.top_k,
        max_candidates=r.max_candidates,
    )
    return await build_router(
        policy, profiles, examples, embedder, use_descriptions=r.use_descriptions
    )


def _explicit(config: Config, call: ChatCall) -> Routed:
    if config.expert(call.model) is None:
        known = ", ".join([AUTO, *(spec.name for spec in config.experts)])
        raise ExpertNotFound(f"unknown model '{call.model}'; use one of: {known}", param="model")
    decision = Dispatch(call.model, 1.0, 0.0, (Candidate(call.model, 1.0),), reason="explicit")
    return Routed(decision, "", len(call.messages))


def _route_info(routed: Routed) -> RouteInfo:
    d = routed.decision
    if isinstance(d, Dispatch):
        return RouteInfo("dispatch", d.expert, d.score, d.margin, d.candidates, d.reason)
    if isinstance(d, Fallback):
        return RouteInfo("fallback", d.expert, d.score, d.margin, d.candidates, d.reason)
    return RouteInfo(
        "clarify", None, d.score, d.margin, d.candidates, d.reason, d.question, d.options
    )


def _log_route(call: ChatCall, route: RouteInfo) -> None:
    logger.info(
        "routed",
        extra={
            "request_id": call.request_id,
            "action": route.action,
            "expert": route.expert,
            "score": route.score,
            "margin": route.margin,
            "reason": route.reason,
        },
    )


def _translate(exc: ExpertError) -> GatewayError:
    if isinstance(exc, ExpertTimeout):
        return ExpertTimedOut(f"expert '{exc.expert}' timed out: {exc.message}")
    if isinstance(exc, ExpertRejected):
        return InvalidRequest(f"expert '{exc.expert}' rejected the request: {exc.message}")
    if isinstance(exc, ExpertDeclined):
        return ExpertCannotAnswer(f"expert '{exc.expert}' cannot answer this: {exc.message}")
    return ExpertFailed(f"expert '{exc.expert}' failed: {exc.message}")


async def _first(stream: AsyncIterator[Delta]) -> Delta | None:
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return None


async def _prepend(first: Delta | None, rest: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
    try:
        if first is not None:
            yield first
            async for delta in rest:
                yield delta
    finally:
        await close_stream(rest)


async def _single(text: str) -> AsyncIterator[Delta]:
    yield Delta(content=text)
    words = len(text.split())
    yield Delta(finish_reason="stop", usage=Usage(0, words, words))


async def close_stream(stream: AsyncIterator[Delta]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


def build_gateway(config: Config, home: Path) -> Gateway:
    """Construct the gateway and its collaborators for `config` (nothing starts yet)."""
    embedder = SentenceTransformerEmbedder(
        resolve_embedder_path(config.embedder.model),
        device=config.embedder.device,
        batch_size=config.embedder.batch_size,
        batch_wait_ms=config.embedder.batch_wait_ms,
        cache_size=config.embedder.cache_size,
    )
    experts = ExpertSet.from_specs(config.experts, BuildContext(cache_dir=home))
    memory = LocalConversationMemory(max_entries=config.memory.max_entries)
    return Gateway(config, embedder, experts, memory)
