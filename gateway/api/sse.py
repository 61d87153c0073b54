"""Server-sent events and OpenAI response bodies: the one place that frames them.

Every stream is `data: <json>\\n\\n` events ending with `data: [DONE]`. A failure after the
headers were sent becomes one error event, then `[DONE]`. The reply's delta stream is
closed in `finally:`, also when the client goes away mid-stream.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping

from gateway.errors import GatewayError
from gateway.service import Delta, JSONValue, Reply, RouteInfo, Usage, close_stream

logger = logging.getLogger(__name__)

DONE = "data: [DONE]\n\n"


def event(data: JSONValue) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n"


def error_body(
    message: str, type_: str, code: str | None = None, param: str | None = None
) -> dict[str, JSONValue]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_for(exc: BaseException) -> dict[str, JSONValue]:
    if isinstance(exc, GatewayError):
        return error_body(exc.message, exc.type, exc.code, exc.param)
    return error_body("internal error while streaming the answer", "server_error", "internal")


def route_headers(route: RouteInfo) -> dict[str, str]:
    headers = {"X-Route-Action": route.action}
    if route.expert is not None:
        headers["X-Route-Expert"] = route.expert
    if route.score is not None:
        headers["X-Route-Score"] = f"{route.score:.4f}"
    return headers


def completion_body(
    reply: Reply,
    content: str,
    finish_reason: str,
    usage: Usage | None,
    meta: Mapping[str, JSONValue] | None = None,
) -> dict[str, JSONValue]:
    body: dict[str, JSONValue] = {
        "id": reply.id,
        "object": "chat.completion",
        "created": reply.created,
        "model": reply.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }
        ],
        "route": _route(reply, meta),
    }
    if usage is not None:
        body["usage"] = usage.to_json()
    return body


async def drain_reply(reply: Reply) -> dict[str, JSONValue]:
    """The non-streaming answer: the same delta stream, collected."""
    parts: list[str] = []
    finish_reason = "stop"
    usage: Usage | None = None
    meta: Mapping[str, JSONValue] = {}
    try:
        async for delta in reply.deltas:
            parts.append(delta.content)
            finish_reason = delta.finish_reason or finish_reason
            usage = delta.usage or usage
            meta = delta.meta or meta
    finally:
        await close_stream(reply.deltas)
    return completion_body(reply, "".join(parts), finish_reason, usage, meta)


async def chat_events(reply: Reply, include_usage: bool) -> AsyncIterator[str]:
    """The SSE body of a streamed chat completion."""
    try:
        try:
            yield event(_chunk(reply, {"role": "assistant", "content": ""}, None, route=True))
            async for delta in reply.deltas:
                for data in _chunks_for(reply, delta, include_usage):
                    yield event(data)
        except Exception as exc:  # headers are gone: report in-band, then end cleanly
            if not isinstance(exc, GatewayError):
                logger.exception("stream failed", extra={"request_id": reply.id})
            yield event(error_for(exc))
        yield DONE
    finally:
        await close_stream(reply.deltas)


def _chunks_for(reply: Reply, delta: Delta, include_usage: bool) -> list[JSONValue]:
    chunks: list[JSONValue] = []
    if delta.content:
        chunks.append(_chunk(reply, {"content": delta.content}, None))
    if delta.finish_reason is not None:
        chunks.append(_chunk(reply, {}, delta.finish_reason, route=True, meta=delta.meta))
    if delta.usage is not None and include_usage:
        usage_chunk = _chunk(reply, {}, None)
        usage_chunk["choices"] = []
        usage_chunk["usage"] = delta.usage.to_json()
        chunks.append(usage_chunk)
    return chunks


def _chunk(
    reply: Reply,
    delta: dict[str, JSONValue],
    finish_reason: str | None,
    *,
    route: bool = False,
    meta: Mapping[str, JSONValue] | None = None,
) -> dict[str, JSONValue]:
    body: dict[str, JSONValue] = {
        "id": reply.id,
        "object": "chat.completion.chunk",
        "created": reply.created,
        "model": reply.model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    if route:
        body["route"] = _route(reply, meta)
    return body


def _route(reply: Reply, meta: Mapping[str, JSONValue] | None) -> dict[str, JSONValue]:
    """The route object, with what the expert reported about its answer (e.g. `fusion`)."""
    return {**reply.route.to_json(), **(meta or {})}
