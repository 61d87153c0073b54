"""Server-sent events and OpenAI response bodies: the one place that frames them.

Every stream is `data: <json>\\n\\n` events ending with `data: [DONE]`. A failure after the
headers were sent becomes one error event, then `[DONE]`. The reply's delta stream is
closed in `finally:`, also when the client goes away mid-stream.

An answer an expert gave in OpenAI's shape goes out in that shape: its chunks, or its
whole completion, with only `id`, `created` and `model` set to the gateway's and the
`route` object added (on the first chunk and on those that finish a choice). Answers
given as text are framed here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import cast

from gateway.answers import Answer, split_completion
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
        return {"error": cast("JSONValue", exc.error_object())}
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
    """A `chat.completion` of a text answer."""
    body: dict[str, JSONValue] = {
        "id": reply.id,
        "object": "chat.completion",
        "created": reply.created,
        "model": reply.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
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
    answer = Answer()
    try:
        async for delta in reply.deltas:
            answer.add(delta)
    finally:
        await close_stream(reply.deltas)
    whole = answer.completion()
    if whole is None:
        finish = answer.finish_reason or "stop"
        return completion_body(reply, answer.text, finish, answer.usage, answer.meta)
    return {**whole, **_ours(reply, "chat.completion"), "route": _route(reply, answer.meta)}


async def chat_events(reply: Reply, include_usage: bool) -> AsyncIterator[str]:
    """The SSE body of a streamed chat completion."""
    ours = _ours(reply, "chat.completion.chunk")
    try:
        try:
            first = True
            async for delta in reply.deltas:
                for data in _chunks_for(reply, delta, include_usage, first, ours):
                    yield event(data)
                first = False
            if first:  # an answer of no delta at all still opens with the role
                yield event(_chunk(reply, {"role": "assistant", "content": ""}, None, route=True))
        except Exception as exc:  # headers are gone: report in-band, then end cleanly
            if not isinstance(exc, GatewayError):
                logger.exception("stream failed", extra={"request_id": reply.id})
            yield event(error_for(exc))
        yield DONE
    finally:
        await close_stream(reply.deltas)


def _chunks_for(
    reply: Reply,
    delta: Delta,
    include_usage: bool,
    first: bool,
    ours: Mapping[str, JSONValue],
) -> list[dict[str, JSONValue]]:
    """The chunks a delta makes: the expert's own (or its whole answer's, split), with the
    gateway's `id`, `created` and `model`; or framed here from its text."""
    if delta.chunk is not None:
        given: list[Mapping[str, JSONValue]] = [delta.chunk]
    elif delta.completion is not None:
        given = list(split_completion(delta.completion))
    else:
        return _text_chunks(reply, delta, include_usage, first)
    chunks: list[dict[str, JSONValue]] = []
    for each in given:
        chunk = {**each, **ours}
        choices = chunk.get("choices")
        if "usage" in chunk and not include_usage:
            del chunk["usage"]
            if not choices:
                continue  # the usage chunk nobody asked for
        finishing = isinstance(choices, list) and any(
            isinstance(c, dict) and c.get("finish_reason") is not None for c in choices
        )
        if (first and not chunks) or finishing:
            chunk["route"] = _route(reply, delta.meta)
        chunks.append(chunk)
    return chunks


def _text_chunks(
    reply: Reply, delta: Delta, include_usage: bool, first: bool
) -> list[dict[str, JSONValue]]:
    chunks: list[dict[str, JSONValue]] = []
    if first:
        chunks.append(_chunk(reply, {"role": "assistant", "content": ""}, None, route=True))
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
    choice: dict[str, JSONValue] = {
        "index": 0,
        "delta": delta,
        "logprobs": None,
        "finish_reason": finish_reason,
    }
    body: dict[str, JSONValue] = {**_ours(reply, "chat.completion.chunk"), "choices": [choice]}
    if route:
        body["route"] = _route(reply, meta)
    return body


def _ours(reply: Reply, kind: str) -> dict[str, JSONValue]:
    """The fields the gateway sets on every body: its id (feedback names it), the time,
    and the expert that answered as the model."""
    return {"id": reply.id, "object": kind, "created": reply.created, "model": reply.model}


def _route(reply: Reply, meta: Mapping[str, JSONValue] | None) -> dict[str, JSONValue]:
    """The route object, with what the expert reported about its answer (e.g. `fusion`)."""
    return {**reply.route.to_json(), **(meta or {})}


def relay_error_event(endpoint: str, exc: Exception, sequence_number: int) -> bytes:
    """A failure after a passed-through stream started: chat's error event (then `[DONE]`)
    for completions; for responses, the Responses API's own `error` event."""
    body = error_for(exc)
    if endpoint != "responses":
        return (event(body) + DONE).encode()
    error = body["error"]
    assert isinstance(error, dict)
    data: dict[str, JSONValue] = {
        "type": "error",
        "code": error.get("code"),
        "message": error.get("message"),
        "param": error.get("param"),
        "sequence_number": sequence_number,
    }
    return f"event: error\n{event(data)}".encode()
