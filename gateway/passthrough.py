"""OpenAI's other endpoints, passed through by model name: `/v1/completions`,
`/v1/embeddings` and `/v1/responses` go whole to the expert the request names.

The request travels as the client sent it (the expert puts its upstream model name in) and
the upstream's answer comes back as it is: its JSON, or its server-sent events relayed as
each arrives. The gateway adds what it adds to chat: the expert must be healthy (an
unhealthy expert's first healthy fallback that serves the endpoint answers instead, but
never for embeddings: another model's vectors are not comparable), within its concurrency
limit, counted in flight and in metrics (action `passthrough`), and the tokens the upstream
reports are there for the key's budget. A streamed completion always asks its upstream for
the usage chunk (the expert does); the client gets that chunk only when it asked for it too.

`model: "auto"` routes on `/v1/responses` only: the text of the input (a string, or the
last user item of a list) is routed among the experts that serve responses. A Responses
answer has no place for a clarification question, so where chat would ask, the best of
them answers (the route's reason says `unasked_...`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final

from experts.base import ExpertError, Forwarded, Forwarding, JSONValue, Message
from experts.specs import Endpoint
from gateway.activity import Activity
from gateway.config import Config
from gateway.errors import ExpertNotFound, ExpertTimedOut, InvalidRequest, RoutingUnavailable
from gateway.metrics import Metrics
from gateway.outcomes import AUTO, RouteInfo, route_info
from gateway.routing.conversation import Constraints
from gateway.routing.embedder import EmbedderUnavailable
from gateway.routing.router import Candidate
from gateway.runtime import Runtime
from gateway.streams import Lease, error_kind, translate

logger = logging.getLogger(__name__)

ACTION: Final = "passthrough"
# The longest server-sent event held back whole; a longer one is relayed as it is.
MAX_EVENT_BYTES: Final = 8 * 2**20
# Where the upstream reports no usage: about four characters (request and answer) a token.
_CHARS_PER_TOKEN: Final = 4
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_HAS_USAGE = re.compile(rb'"usage"\s*:\s*\{')

# How the gateway admits a request to an expert (its concurrency limit); see `Gateway`.
Admit = Callable[[Runtime, str, Lease], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ForwardCall:
    """A request to one of the other endpoints: its body as the client sent it."""

    endpoint: Endpoint
    body: Mapping[str, JSONValue]
    tenant: str = "default"
    request_id: str = ""

    @property
    def model(self) -> str:
        model = self.body.get("model")
        return model if isinstance(model, str) else ""

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True


async def forward(
    runtime: Runtime, call: ForwardCall, metrics: Metrics, activity: Activity, admit: Admit
) -> Passed:
    """Choose the expert, hold a slot with it and open the upstream's answer."""
    started = time.perf_counter()
    runtime.inflight.enter()
    lease = Lease(runtime.inflight.leave)
    try:
        route = await _choose(runtime, call, metrics)
        assert route.expert is not None
        metrics.requests.labels(route.expert, ACTION).inc()
        activity.routed(route.expert)
        logger.info("passing through", extra={
            "request_id": call.request_id, "tenant": call.tenant, "action": ACTION,
            "endpoint": call.endpoint, "expert": route.expert, "reason": route.reason,
        })  # fmt: skip
        route = _healthy(runtime, route, call.endpoint)
        expert = route.expert
        assert expert is not None
        forwarded = await _open(runtime, call, expert, lease, metrics, admit)
    except BaseException:
        lease.release()
        raise

    def on_end(failure: ExpertError | None) -> None:
        if failure is not None:
            metrics.expert_error(expert, error_kind(failure))
            return
        seconds = time.perf_counter() - started
        metrics.total.labels(expert).observe(seconds)
        activity.answered(expert, seconds)

    meter = _Meter(len(json.dumps(call.body)), drop_usage_chunk=_drops_usage_chunk(call))
    return Passed(route, forwarded, lease, meter, on_end)


def _healthy(runtime: Runtime, route: RouteInfo, endpoint: Endpoint) -> RouteInfo:
    """The route to the expert itself, or while it is unhealthy to its first healthy
    fallback that serves the endpoint (503 when none; embeddings have no fallback)."""
    assert route.expert is not None

    def usable(name: str) -> bool:  # embeddings come from the model named, or from none
        spec = runtime.config.expert(name)
        return endpoint != "embeddings" and spec is not None and endpoint in spec.endpoint_set

    expert = runtime.serving(route.expert, usable)
    if expert == route.expert:
        return route
    return route.with_expert(expert, f"{route.reason}+unhealthy_{route.expert}")


async def _open(
    runtime: Runtime, call: ForwardCall, expert: str, lease: Lease, metrics: Metrics, admit: Admit
) -> Forwarded:
    target = runtime.experts[expert]
    if not isinstance(target, Forwarding):  # its config says it serves this; it cannot
        raise _unsupported(runtime.config, expert, call.endpoint)
    await admit(runtime, expert, lease)
    # The expert's own timeouts bound each attempt; this bounds the whole (retries too).
    timeout = runtime.spec(expert).first_delta_timeout_s(call.stream)
    opening = target.forward(call.endpoint, dict(call.body), call.request_id)
    try:
        return await asyncio.wait_for(opening, timeout)
    except ExpertError as exc:
        metrics.expert_error(expert, error_kind(exc))
        raise translate(exc) from exc
    except TimeoutError as exc:
        metrics.expert_error(expert, "timeout")
        raise ExpertTimedOut(f"expert '{expert}' timed out after {timeout:g}s") from exc


class Passed:
    """The upstream's answer: its status, content type and body, read once with `read()`
    (a JSON answer, whole) or `events()` (server-sent events, each whole as it arrives).

    However the body ends (read to its end, failed, closed early with `aclose()` or dropped
    unread) the upstream response is closed and the request's slot and in-flight count are
    released. `tokens` is what the answer used so far: as the upstream reported it, or an
    estimate where it reported none.
    """

    def __init__(
        self,
        route: RouteInfo,
        forwarded: Forwarded,
        lease: Lease,
        meter: _Meter,
        on_end: Callable[[ExpertError | None], None],
    ) -> None:
        assert route.expert is not None
        self.route = route
        self.expert = route.expert
        self.status = forwarded.status
        self.content_type = forwarded.content_type
        self._body = forwarded.body
        self._lease = lease
        self._meter = meter
        self._on_end = on_end
        weakref.finalize(self, lease.release)  # an answer nobody reads is released too

    @property
    def streamed(self) -> bool:
        return self.content_type.partition(";")[0].strip().lower() == "text/event-stream"

    @property
    def tokens(self) -> int:
        return self._meter.tokens()

    @property
    def events_sent(self) -> int:
        """How many events `events()` has yielded (the next one's sequence number)."""
        return self._meter.events

    async def read(self) -> bytes:
        try:
            whole = b"".join([piece async for piece in self._pieces()])
        finally:
            await self.aclose()
        self._meter.whole(whole)
        return whole

    async def events(self) -> AsyncIterator[bytes]:
        pending = b""
        pieces = self._pieces()
        try:
            async for piece in pieces:
                pending += piece
                start = 0
                for end in _EVENT_END.finditer(pending):
                    if self._meter.relay(pending[start : end.end()]):
                        yield pending[start : end.end()]
                    start = end.end()
                pending = pending[start:]
                if len(pending) > MAX_EVENT_BYTES:
                    yield pending
                    pending = b""
            if pending and self._meter.relay(pending):
                yield pending
        finally:
            await pieces.aclose()
            await self.aclose()

    async def aclose(self) -> None:
        self._lease.release()
        aclose = getattr(self._body, "aclose", None)
        if aclose is not None:
            await aclose()

    async def _pieces(self) -> AsyncGenerator[bytes, None]:
        try:
            async for piece in self._body:
                self._meter.seen += len(piece)
                yield piece
        except ExpertError as exc:
            self._on_end(exc)
            raise translate(exc) from exc
        self._on_end(None)


class _Meter:
    """The tokens an answer used, from the usage the upstream reports: a JSON answer's
    `usage`, a completion chunk's `usage`, a Responses event's `response.usage`."""

    def __init__(self, request_chars: int, *, drop_usage_chunk: bool) -> None:
        self._request_chars = request_chars
        self._drop_usage_chunk = drop_usage_chunk
        self.reported: int | None = None
        self.seen = 0  # bytes of the answer received
        self.events = 0  # events relayed

    def tokens(self) -> int:
        if self.reported is not None:
            return self.reported
        return math.ceil((self._request_chars + self.seen) / _CHARS_PER_TOKEN)

    def whole(self, body: bytes) -> None:
        self._note(_loads(body))

    def relay(self, event: bytes) -> bool:
        """Note what `event` reports; False for the usage chunk the client did not ask for."""
        if _HAS_USAGE.search(event):
            data = _loads(b"\n".join(_data_lines(event)))
            self._note(data)
            if self._drop_usage_chunk and isinstance(data, dict) and data.get("choices") == []:
                return False
        self.events += 1
        return True

    def _note(self, data: JSONValue) -> None:
        if isinstance(data, dict):
            tokens = _total_tokens(data.get("usage"))
            response = data.get("response")
            if tokens is None and isinstance(response, dict):
                tokens = _total_tokens(response.get("usage"))
            if tokens is not None:
                self.reported = tokens


def input_text(value: JSONValue) -> str:
    """The text `auto` routes a Responses request on: the input when it is a string, else
    the text of the last user message of the input list."""
    if isinstance(value, str):
        return value
    items = value if isinstance(value, list) else []
    users = [
        item for item in items
        if isinstance(item, dict) and item.get("role") == "user"
        and item.get("type", "message") == "message"
    ]  # fmt: skip
    content = users[-1].get("content") if users else None
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return "\n".join(
        str(part["text"]) for part in parts
        if isinstance(part, dict) and part.get("type") in ("input_text", "text")
        and isinstance(part.get("text"), str)
    )  # fmt: skip


# -- choosing the expert ------------------------------------------------------------------


async def _choose(runtime: Runtime, call: ForwardCall, metrics: Metrics) -> RouteInfo:
    config, endpoint, model = runtime.config, call.endpoint, call.model
    serving = _serving(config, endpoint)
    if model == AUTO:
        if endpoint != "responses":
            raise InvalidRequest(
                f"/v1/{endpoint} does not route: name an expert as the model "
                f"({_which(serving, endpoint)})",
                param="model",
                code="model_required",
            )
        return await _route(runtime, call, serving, metrics)
    spec = config.expert(model)
    if spec is None:
        known = [AUTO, *serving] if endpoint == "responses" and serving else serving
        listed = f"use one of: {', '.join(known)}" if known else f"no expert serves /v1/{endpoint}"
        raise ExpertNotFound(f"unknown model '{model}'; {listed}", param="model")
    if endpoint not in spec.endpoint_set:
        raise _unsupported(config, model, endpoint)
    return RouteInfo("dispatch", model, 1.0, 0.0, (Candidate(model, 1.0),), "explicit")


async def _route(
    runtime: Runtime, call: ForwardCall, serving: list[str], metrics: Metrics
) -> RouteInfo:
    if not serving:
        raise InvalidRequest(
            "no expert serves /v1/responses", param="model", code="unsupported_endpoint"
        )
    if len(serving) == 1:  # nothing to choose
        (only,) = serving
        return RouteInfo("dispatch", only, 1.0, 0.0, (Candidate(only, 1.0),), "only_capable")
    text = input_text(call.body.get("input"))
    if not text.strip():
        raise InvalidRequest(
            "model 'auto' routes on the text of the input (a string, or the last user "
            "item), and this input has none; name an expert as the model",
            param="input",
        )
    started = time.perf_counter()
    constraints = Constraints(frozenset(serving), ask=False)  # no place for a question
    try:
        routed = await runtime.routing.route(
            [Message("user", text)], call.tenant, remember=False, constraints=constraints
        )
    except EmbedderUnavailable as exc:
        raise RoutingUnavailable(
            f"routing is unavailable ({exc}); name an expert as the model to bypass it"
        ) from exc
    route = route_info(routed)
    metrics.routed(time.perf_counter() - started, route.score, route.margin)
    return route


def _serving(config: Config, endpoint: Endpoint) -> list[str]:
    return [spec.name for spec in config.experts if endpoint in spec.endpoint_set]


def _which(serving: list[str], endpoint: Endpoint) -> str:
    listed = ", ".join(serving)
    return f"experts that serve it: {listed}" if serving else f"no expert serves /v1/{endpoint}"


def _unsupported(config: Config, expert: str, endpoint: Endpoint) -> InvalidRequest:
    which = _which(_serving(config, endpoint), endpoint)
    message = f"expert '{expert}' does not serve /v1/{endpoint}; {which}"
    return InvalidRequest(message, param="model", code="unsupported_endpoint")


# -- bodies -------------------------------------------------------------------------------


def _drops_usage_chunk(call: ForwardCall) -> bool:
    """A streamed completion whose client did not ask for the usage chunk: the expert asks
    its upstream for it anyway (budgets count it), and the client does not see it."""
    if call.endpoint != "completions" or not call.stream:
        return False
    options = call.body.get("stream_options")
    return not (isinstance(options, dict) and options.get("include_usage") is True)


def _data_lines(event: bytes) -> list[bytes]:
    lines = event.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    return [line[5:].removeprefix(b" ") for line in lines if line.startswith(b"data:")]


def _loads(raw: bytes) -> JSONValue:
    try:
        value: JSONValue = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value


def _total_tokens(usage: JSONValue) -> int | None:
    if not isinstance(usage, dict):
        return None
    counts = {k: v for k, v in usage.items() if isinstance(v, int) and not isinstance(v, bool)}
    if "total_tokens" in counts:
        return counts["total_tokens"]
    parts = [counts[k] for k in ("prompt_tokens", "completion_tokens", "input_tokens",
                                 "output_tokens") if k in counts]  # fmt: skip
    return sum(parts) if parts else None

