"""OpenAI's wire format as an upstream speaks it: server-sent event lines and frames,
chat completions and chunks (read into the gateway's text view beside the whole JSON),
usage, model lists and error bodies. Whatever cannot be used is `MalformedUpstream`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Final

import aiohttp

from experts.base import Delta, ExpertRequest, ExpertResult, JSONObject, JSONValue, Usage

USAGE_KEYS: Final = ("prompt_tokens", "completion_tokens", "total_tokens")
# The longest SSE line accepted, and the longest piece of a body an error message quotes.
MAX_LINE_BYTES: Final = 8 * 2**20
ERROR_SNIPPET_CHARS: Final = 200


class MalformedUpstream(ValueError):
    """The upstream's answer cannot be used: not an OpenAI chat completion, or an error event."""


async def lines(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """The body's lines without their line endings (`\n` or `\r\n`), as they arrive."""
    pending = b""
    async for piece in response.content.iter_any():
        pending += piece
        if b"\n" not in piece:
            if len(pending) > MAX_LINE_BYTES:
                raise MalformedUpstream(f"a line longer than {MAX_LINE_BYTES} bytes")
            continue
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.removesuffix(b"\r").decode("utf-8", "replace")
    if pending:
        yield pending.removesuffix(b"\r").decode("utf-8", "replace")


def sampling_params(request: ExpertRequest) -> JSONObject:
    """The request's decoding parameters that are set, as OpenAI (and vLLM) body fields."""
    sampling = request.sampling
    params: JSONObject = {}
    optional: dict[str, int | float | None] = {
        # Under the name the client gave it (`max_completion_tokens` or `max_tokens`).
        sampling.max_tokens_key: sampling.max_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "seed": sampling.seed,
        "presence_penalty": sampling.presence_penalty,
        "frequency_penalty": sampling.frequency_penalty,
        # vLLM extensions: only sent when asked for, so plain OpenAI servers are not confused.
        "top_k": sampling.top_k,
        "repetition_penalty": sampling.repetition_penalty,
    }
    params.update({key: value for key, value in optional.items() if value is not None})
    if sampling.stop:
        params["stop"] = list(sampling.stop)
    return params


class SSEDecoder:
    """Server-sent events, one line at a time: returns an event's data when it is complete.

    Follows the SSE framing rules: `data:` lines accumulate (joined by newlines), a blank line
    ends the event, lines starting with `:` are comments, other fields are ignored.
    """

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        if not line:
            if not self._data:
                return None
            data, self._data = "\n".join(self._data), []
            return data
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        if field == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None


def parse_completion(raw: bytes) -> ExpertResult:
    body = _load_object(raw)
    choice = _first_choice(body)
    message = _as_object(choice.get("message"), "choices[0].message")
    content = message.get("content")
    finish_reason = choice.get("finish_reason")
    return ExpertResult(
        content=content if isinstance(content, str) else "",
        finish_reason=finish_reason if isinstance(finish_reason, str) else "stop",
        usage=parse_usage(body.get("usage")),
        body=body,
    )


def parse_chunk(data: str) -> Delta:
    """One streamed chunk: the chunk itself, and the text view of its first choice."""
    chunk = _load_object(data)
    if "error" in chunk:
        raise MalformedUpstream(f"upstream error event in stream: {error_text(chunk)}")
    usage = parse_usage(chunk.get("usage"))
    content = ""
    finish_reason: str | None = None
    choices = chunk.get("choices")
    if choices:
        choice = _first_choice(chunk)
        if choice.get("index", 0) == 0:
            delta = _as_object(choice.get("delta", {}), "choices[0].delta")
            text = delta.get("content")
            content = text if isinstance(text, str) else ""
            reason = choice.get("finish_reason")
            finish_reason = reason if isinstance(reason, str) else None
    return Delta(content=content, finish_reason=finish_reason, usage=usage, chunk=chunk)


def parse_usage(value: JSONValue) -> Usage | None:
    if value is None:
        return None
    usage = _as_object(value, "usage")
    prompt, completion, total = (_count(usage, key) for key in USAGE_KEYS)
    if prompt is None or completion is None:
        raise MalformedUpstream(f"usage without token counts: {usage}")
    details = {k: v for k, v in usage.items() if k not in USAGE_KEYS and v is not None}
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total if total is not None else prompt + completion,
        details=details,
    )


def _count(usage: JSONObject, key: str) -> int | None:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_model_ids(raw: bytes) -> set[str]:
    data = _load_object(raw).get("data")
    if not isinstance(data, list):
        raise MalformedUpstream("no 'data' list")
    return {str(_as_object(item, "data[]").get("id")) for item in data}


def _first_choice(body: JSONObject) -> JSONObject:
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedUpstream("no choices")
    for choice in choices:
        if _as_object(choice, "choices[]").get("index", 0) == 0:
            return _as_object(choice, "choices[]")
    return _as_object(choices[0], "choices[0]")


def _load_object(raw: bytes | str) -> JSONObject:
    try:
        value = json.loads(raw)
    except RecursionError as exc:  # nesting deeper than the interpreter's stack
        raise MalformedUpstream("JSON nested too deeply") from exc
    except ValueError as exc:
        raise MalformedUpstream(f"not JSON: {_snippet(raw)!r}") from exc
    return _as_object(value, "body")


def _as_object(value: object, where: str) -> JSONObject:
    if not isinstance(value, dict):
        raise MalformedUpstream(f"{where} is not an object")
    return value


def error_object(raw: bytes) -> JSONObject | None:
    """The upstream's OpenAI error object (`{"error": {...}}`'s inner object), if it sent one."""
    try:
        error = _load_object(raw).get("error")
    except MalformedUpstream:
        return None
    return error if isinstance(error, dict) else None


def error_message(raw: bytes) -> str:
    """The upstream's `error.message` (OpenAI and vLLM shapes), else a piece of the body."""
    try:
        return error_text(_load_object(raw))
    except MalformedUpstream:
        return _snippet(raw) or "(empty body)"


def error_text(body: JSONObject) -> str:
    error = body.get("error", body)
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return _snippet(json.dumps(body))


def _snippet(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = " ".join(text.split())
    return text if len(text) <= ERROR_SNIPPET_CHARS else text[:ERROR_SNIPPET_CHARS] + "..."
