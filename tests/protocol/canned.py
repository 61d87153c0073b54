"""Canned OpenAI answers, exact to the byte, for a scripted upstream.

Each scenario is an answer both ways: a `chat.completion` for a non-streamed request and
the chunks of the same answer for a streamed one, so that one script serves a client
talking to the upstream directly and the same client talking through taskgate. They use
every part of the protocol a gateway could lose: tool calls (parallel, with their
arguments streamed in pieces), several choices, logprobs, refusals, reasoning fields,
`system_fingerprint`, `service_tier`, usage details and fields no schema knows.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tests.support.upstream import Answer

MODEL = "canned-model"
MESSAGES: list[Any] = [
    {"role": "developer", "content": "Use the tools."},
    {"role": "user", "content": "Weather and time in Oslo?", "name": "ola"},
]
CREATED = 1_700_000_000

USAGE = {
    "prompt_tokens": 41,
    "completion_tokens": 17,
    "total_tokens": 58,
    "prompt_tokens_details": {"cached_tokens": 8},
    "completion_tokens_details": {"reasoning_tokens": 5},
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time in a time zone",
        "parameters": {
            "type": "object",
            "properties": {"tz": {"type": "string"}},
            "required": ["tz"],
        },
    },
}


def _completion(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-upstream",
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_canned",
        "service_tier": "default",
        "choices": choices,
        "usage": USAGE,
        **extra,
    }


def _chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-upstream",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_canned",
        "service_tier": "default",
        "choices": choices,
        **extra,
    }


def _delta(index: int, finish: str | None = None, logprobs: Any = None, **delta: Any) -> Any:
    choice: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": finish}
    if logprobs is not None:
        choice["logprobs"] = logprobs
    return choice


def _usage_chunk() -> dict[str, Any]:
    return _chunk([], usage=USAGE)


# -- parallel tool calls, with reasoning and unknown fields -------------------------------

TOOL_CALLS = _completion(
    [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "annotations": [],
                "reasoning_content": "Two lookups are needed.",
                "tool_calls": [
                    {
                        "id": "call_weather_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    },
                    {
                        "id": "call_time_2",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": '{"tz": "CET"}'},
                    },
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
            "stop_reason": None,
            "provider_detail": {"queue_ms": 3},
        }
    ],
    prompt_logprobs=None,
    unknown_top={"nested": [1, {"deep": True}]},
)
TOOL_CALL_CHUNKS = [
    _chunk([_delta(0, role="assistant", content=None)]),
    _chunk([_delta(0, reasoning_content="Two lookups ")]),
    _chunk([_delta(0, reasoning_content="are needed.")]),
    _chunk([_delta(0, tool_calls=[{"index": 0, "id": "call_weather_1", "type": "function",
                                   "function": {"name": "get_weather", "arguments": ""}}])]),
    _chunk([_delta(0, tool_calls=[{"index": 0, "function": {"arguments": '{"city": '}}])]),
    _chunk([_delta(0, tool_calls=[{"index": 0, "function": {"arguments": '"Oslo"}'}}])]),
    _chunk([_delta(0, tool_calls=[{"index": 1, "id": "call_time_2", "type": "function",
                                   "function": {"name": "get_time", "arguments": ""}}])]),
    _chunk([_delta(0, tool_calls=[{"index": 1, "function": {"arguments": '{"tz": "CET"}'}}])]),
    _chunk([_delta(0, "tool_calls")], unknown_top={"nested": [1]}),
    _usage_chunk(),
]  # fmt: skip

# -- a final answer after the tool results --------------------------------------------------

FINAL = _completion(
    [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "It is 4 °C in Oslo.", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
)
FINAL_CHUNKS = [
    _chunk([_delta(0, role="assistant", content="")]),
    _chunk([_delta(0, content="It is 4 °C")]),
    _chunk([_delta(0, content=" in Oslo.")]),
    _chunk([_delta(0, "stop")]),
    _usage_chunk(),
]


# -- two choices with logprobs --------------------------------------------------------------


def _logprob(token: str, value: float) -> dict[str, Any]:
    raw = list(token.encode())
    top = [{"token": token, "logprob": value, "bytes": raw}]
    return {"token": token, "logprob": value, "bytes": raw, "top_logprobs": top}


def _logprobs(token: str, value: float) -> dict[str, Any]:
    return {"content": [_logprob(token, value)], "refusal": None}


TWO_CHOICES = _completion(
    [
        {
            "index": i,
            "message": {"role": "assistant", "content": text, "refusal": None},
            "logprobs": {"content": [_logprob(t, -0.25 * (k + 1)) for k, t in enumerate(tokens)],
                         "refusal": None},
            "finish_reason": "stop",
        }
        for i, (text, tokens) in enumerate([("Hi there", ["Hi", " there"]),
                                             ("Hello", ["Hello"])])
    ]
)  # fmt: skip
TWO_CHOICES_CHUNKS = [
    _chunk([_delta(0, role="assistant", content=""), _delta(1, role="assistant", content="")]),
    _chunk([_delta(0, content="Hi", logprobs=_logprobs("Hi", -0.25))]),
    _chunk([_delta(1, content="Hello", logprobs=_logprobs("Hello", -0.25))]),
    _chunk([_delta(0, content=" there", logprobs=_logprobs(" there", -0.5))]),
    _chunk([_delta(1, "stop")]),
    _chunk([_delta(0, "stop")]),
    _usage_chunk(),
]

# -- a refusal --------------------------------------------------------------------------------

REFUSAL = _completion(
    [
        {
            "index": 0,
            "message": {"role": "assistant", "content": None, "refusal": "I can't help with that."},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
)
REFUSAL_CHUNKS = [
    _chunk([_delta(0, role="assistant", content=None, refusal="")]),
    _chunk([_delta(0, refusal="I can't ")]),
    _chunk([_delta(0, refusal="help with that.")]),
    _chunk([_delta(0, "stop")]),
    _usage_chunk(),
]

# -- errors -------------------------------------------------------------------------------------

ERRORS: dict[int, tuple[dict[str, Any], dict[str, str]]] = {
    401: (
        {"message": "Incorrect API key provided.", "type": "invalid_request_error",
         "param": None, "code": "invalid_api_key"},
        {},
    ),
    404: (
        {"message": "The model `gpt-x` does not exist.", "type": "invalid_request_error",
         "param": "model", "code": "model_not_found"},
        {},
    ),
    422: (
        {"message": "messages.1.tool_call_id: field required", "type": "BadRequestError",
         "param": "messages", "code": "unprocessable"},
        {},
    ),
    429: (
        {"message": "Rate limit reached for requests.", "type": "requests",
         "param": None, "code": "rate_limit_exceeded"},
        {"Retry-After": "7", "x-ratelimit-remaining-requests": "0"},
    ),
}  # fmt: skip


def sse(chunks: list[dict[str, Any]], usage: bool = True) -> bytes:
    """The chunks as server-sent events; the usage chunk (no choices) only with `usage`."""
    frames = [f"data: {json.dumps(c)}\n\n" for c in chunks if usage or c["choices"]]
    return ("".join(frames) + "data: [DONE]\n\n").encode()


def models() -> dict[str, Any]:
    return {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "canned"}]}


def answering(completion: dict[str, Any], chunks: list[dict[str, Any]]) -> Answer:
    """The same answer, whole or streamed, as the request asks; `/models` lists the model."""

    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        if request.path.endswith("/models"):
            return web.json_response(models())
        body = json.loads(await request.read())
        if not body.get("stream"):
            return web.json_response(completion)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        usage = (body.get("stream_options") or {}).get("include_usage") is True
        await response.write(sse(chunks, usage))
        await response.write_eof()
        return response

    return answer


def failing(status: int) -> Answer:
    """An OpenAI error answer with its status, error object and headers."""
    error, headers = ERRORS[status]

    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        if request.path.endswith("/models"):
            return web.json_response(models())
        return web.json_response({"error": error}, status=status, headers=headers)

    return answer


def in_turns(*answers: Answer) -> Answer:
    """Chat requests get `answers` in order (the last one repeats); `/models` is listed
    whenever a health check asks, without using up a turn."""
    queue = list(answers)

    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        if request.path.endswith("/models"):
            return web.json_response(models())
        turn = queue.pop(0) if len(queue) > 1 else queue[0]
        return await turn(request)

    return answer
