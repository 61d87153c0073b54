"""OpenAIExpert against scripted upstreams: a real HTTP server on a loopback port.

The upstream (tests/support/upstream.py) is an `aiohttp.web` server in the test's event
loop; connection failures are real ones (a port that refuses, a listener that never
accepts, a server that aborts the connection, one that falls silent). The real-server
behaviour of vLLM is covered by tests/integration/test_vllm_expert.py; these tests cover
what a healthy vLLM does not produce on demand: split frames, dropped connections, error
statuses, malformed bodies.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import aiohttp
import anyio
import pytest

from experts import openai_compat
from experts.base import (
    Delta,
    Expert,
    ExpertRejected,
    ExpertRequest,
    ExpertTimeout,
    ExpertUnavailable,
    ExpertUnreachable,
    Message,
    Sampling,
    Usage,
    drain,
)
from experts.openai_compat import OpenAIExpert, SSEDecoder
from experts.specs import OpenAISpec
from tests.support.upstream import (
    Answer,
    Stream,
    Upstream,
    delayed,
    json_reply,
    text_reply,
    upstream_server,
)

pytestmark = pytest.mark.anyio

USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
# Short enough to keep the suite fast, long enough for a loaded machine to answer within.
SHORT_TIMEOUT_S = 0.2
WAIT_S = 5.0


def make_spec(**overrides: Any) -> OpenAISpec:
    fields: dict[str, Any] = {
        "name": "code",
        "kind": "openai",
        "description": "writes code",
        "base_url": "http://127.0.0.1:9/v1",
        "model": "coder-7b",
        "max_retries": 2,
    }
    fields.update(overrides)
    return OpenAISpec.model_validate(fields)


def make_request(**kwargs: Any) -> ExpertRequest:
    return ExpertRequest(messages=(Message("system", "be brief"), Message("user", "hi")), **kwargs)


class ExpertFor(Protocol):
    def __call__(self, upstream: Upstream, **spec_overrides: Any) -> OpenAIExpert: ...


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """A serving upstream; each test scripts its answers."""
    async with upstream_server() as server:
        yield server


@pytest.fixture
async def refusing() -> AsyncIterator[Upstream]:
    """An upstream whose port refuses connections until `serve()` (or `stall()`)."""
    async with upstream_server(started=False) as server:
        yield server


@pytest.fixture
async def expert_for(upstream: Upstream, refusing: Upstream) -> AsyncIterator[ExpertFor]:
    """Experts pointed at an upstream's `/v1`, closed before the upstreams stop."""
    experts: list[OpenAIExpert] = []

    def make(upstream: Upstream, **spec_overrides: Any) -> OpenAIExpert:
        spec = make_spec(base_url=f"{upstream.url}/v1", **spec_overrides)
        experts.append(OpenAIExpert(spec, retry_backoff_s=0.0))
        return experts[-1]

    try:
        yield make
    finally:
        for expert in experts:
            await expert.aclose()


@contextmanager
def watch_retries(*on_retry: Callable[[], None]) -> Iterator[list[int]]:
    """The expert's retries (its "retrying upstream" records), by attempt number.

    The i-th retry runs `on_retry[i - 1]` before the expert tries again: how an upstream
    that refused a connection comes up (or stalls) between two attempts.
    """
    retries: list[int] = []

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if getattr(record, "action", None) != "retry":
                return
            retries.append(getattr(record, "attempt", -1))
            if len(retries) <= len(on_retry):
                on_retry[len(retries) - 1]()

    logger = openai_compat.logger
    level = logger.level
    if not logger.isEnabledFor(logging.WARNING):
        logger.setLevel(logging.WARNING)
    handler = Watch(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield retries
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def wait_for(event: asyncio.Event) -> None:
    with anyio.fail_after(WAIT_S):
        await event.wait()


def completion(content: str = "hello", finish: str = "stop", usage: Any = USAGE) -> Answer:
    return json_reply(
        {
            "id": "cmpl-1",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish,
                }
            ],
            "usage": usage,
        }
    )


def models(*ids: str) -> Answer:
    return json_reply({"object": "list", "data": [{"id": i} for i in ids]})


def sse(*events: dict[str, Any] | str) -> bytes:
    frames = [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events]
    return "".join(frames).encode()


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    delta: dict[str, Any] = {} if content is None else {"content": content}
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {"id": "c", "object": "chat.completion.chunk", "choices": [choice], **extra}


ROLE_CHUNK = chunk("", prompt_token_ids=[1, 2])
ROLE_CHUNK["choices"][0]["delta"]["role"] = "assistant"
USAGE_CHUNK = {"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": USAGE}
GOOD_STREAM = sse(ROLE_CHUNK, chunk("Hel"), chunk("lo"), chunk("", "stop"), USAGE_CHUNK, "[DONE]")


async def collect(expert: OpenAIExpert, request: ExpertRequest | None = None) -> list[Delta]:
    return [delta async for delta in expert.stream(request or make_request())]


def views(deltas: list[Delta]) -> list[Delta]:
    """The text view of each delta (the chunk it came with set aside)."""
    return [Delta(d.content, d.finish_reason, d.usage) for d in deltas]


# -- the request -------------------------------------------------------------------------


async def test_is_an_expert(upstream: Upstream, expert_for: ExpertFor) -> None:
    expert = expert_for(upstream)
    assert isinstance(expert, Expert)
    assert (expert.name, expert.kind) == ("code", "openai")


async def test_complete_posts_model_messages_and_only_set_sampling_params(
    upstream: Upstream, expert_for: ExpertFor
) -> None:
    upstream.script(completion())
    expert = expert_for(upstream)
    sampling = Sampling(max_tokens=64, temperature=0.0, stop=("\n\n",), seed=7)
    await expert.complete(make_request(sampling=sampling))
    request = upstream.requests[0]
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.headers["Content-Type"] == "application/json"
    assert request.json() == {
        "model": "coder-7b",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "stream": False,
        "max_tokens": 64,
        "temperature": 0.0,
        "stop": ["\n\n"],
        "seed": 7,
    }


async def test_vllm_extensions_are_sent_only_when_set(
    upstream: Upstream, expert_for: ExpertFor
) -> None:
    upstream.script(completion())
    expert = expert_for(upstream)
    sampling = Sampling(
        top_p=0.9, top_k=40, repetition_penalty=1.1, presence_penalty=0.5, frequency_penalty=0.25
    )
    await expert.complete(make_request(sampling=sampling))
    body = upstream.requests[-1].json()
    assert {k: body[k] for k in ("top_p", "top_k", "repetition_penalty")} == {
        "top_p": 0.9,
        "top_k": 40,
        "repetition_penalty": 1.1,
    }
    assert (body["presence_penalty"], body["frequency_penalty"]) == (0.5, 0.25)
    await expert.complete(make_request())
    assert not {"top_k", "repetition_penalty", "stop", "seed"} & set(upstream.requests[-1].json())


async def test_extra_passes_through_but_cannot_override_owned_keys(
    upstream: Upstream, expert_for: ExpertFor
) -> None:
    upstream.script(Stream(GOOD_STREAM))
    expert = expert_for(upstream)
    extra = {
        "response_format": {"type": "json_object"},
        "logprobs": True,
        "model": "other",
        "messages": [],
        "stream": False,
        "stream_options": {"include_usage": False},
    }
    await collect(expert, make_request(extra=extra))
    body = upstream.requests[-1].json()
    assert body["response_format"] == {"type": "json_object"}
    assert body["logprobs"] is True
    assert body["model"] == "coder-7b"
    assert len(body["messages"]) == 2
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_auth_header_spec_headers_and_request_id(
    upstream: Upstream, expert_for: ExpertFor
) -> None:
    upstream.script(completion())
    expert = expert_for(upstream, api_key="sk-secret", headers={"X-Team": "a"})
    await expert.complete(make_request(request_id="req-1"))
    headers = upstream.requests[0].headers
    assert headers["authorization"] == "Bearer sk-secret"
    assert headers["x-team"] == "a"
    assert headers["x-request-id"] == "req-1"


async def test_no_auth_header_without_api_key(upstream: Upstream, expert_for: ExpertFor) -> None:
    upstream.script(completion())
    await expert_for(upstream).complete(make_request())
    assert "authorization" not in upstream.requests[0].headers


# -- non-streaming answers ---------------------------------------------------------------


async def test_complete_preserves_content_finish_reason_and_usage(
    upstream: Upstream, expert_for: ExpertFor
) -> None:
    usage = {**USAGE, "prompt_tokens_details": {"cached_tokens": 8}, "reasoning": None}
    upstream.script(completion("def f(): pass", "length", usage))
    result = await expert_for(upstream).complete(make_request())
    assert result.content == "def f(): pass"
    assert result.finish_reason == "length"
    assert result.usage == Usage(12, 3, 15, details={"prompt_tokens_details": {"cached_tokens": 8}})


async def test_complete_without_usage(upstream: Upstream, expert_for: ExpertFor) -> None:
    upstream.script(completion(usage=None))
    result = await expert_for(upstream).complete(make_request())
    assert result.usage is None


@pytest.mark.parametrize(
    "answer",
    [
        text_reply("<html>gateway</html>"),
        json_reply({"choices": []}),
        json_reply({"choices": [{"index": 0, "message": "x"}]}),
        json_reply([1, 2]),
    ],
    ids=["not-json", "no-choices", "message-not-object", "not-object"],
)
async def test_malformed_upstream_json_is_unavailable(
    upstream: Upstream, expert_for: ExpertFor, answer: Answer
) -> None:
    upstream.script(answer)
    with pytest.raises(ExpertUnavailable, match="unusable upstream answer") as caught:
        await expert_for(upstream).complete(make_request())
    assert caught.value.expert == "code"


# -- streaming ---------------------------------------------------------------------------


async def test_stream_passes_chunks_through_with_finish_and_usage(
    upstream: Upstream, expert_for: ExpertFor
) -> None:
    upstream.script(Stream(GOOD_STREAM))
    deltas = await collect(expert_for(upstream))
    # Every chunk, the role chunk too, is handed on as the upstream sent it.
    assert [d.chunk for d in deltas] == [
        ROLE_CHUNK, chunk("Hel"), chunk("lo"), chunk("", "stop"), USAGE_CHUNK
    ]  # fmt: skip
    assert views(deltas) == [
        Delta(""),
        Delta("Hel"),
        Delta("lo"),
        Delta("", finish_reason="stop"),
        Delta("", usage=Usage(12, 3, 15)),
    ]
    assert upstream.requests[-1].json()["stream_options"] == {"include_usage": True}


async def test_stream_reassembles_frames_split_anywhere(
    upstream: Upstream, expert_for: ExpertFor
) -> None:
    payload = GOOD_STREAM.replace(b"\n", b"\r\n")
    pieces = [payload[i : i + 7] for i in range(0, len(payload), 7)]
    # A pause between pieces, so that they arrive (and are read) one by one.
    upstream.script(Stream(*pieces, pause_s=0.001))
    deltas = await collect(expert_for(upstream))
    assert "".join(d.content for d in deltas) == "Hello"
    assert deltas[-1].usage == Usage(12, 3, 15)


async def test_stream_ignores_comments_and_other_fields_and_joins_multiline_data(
    upstream: Upstream, expert_for: ExpertFor
) -> None:
    multiline = json.dumps(chunk("lo", "stop"), indent=1).replace("\n", "\ndata: ")
    payload = (
        b": keep-alive\n\n"
        b"event: message\nid: 1\nretry: 100\n"
        + f"data: {json.dumps(chunk('Hel'))}\n\n".encode()
        + b":comment\n"
        + f"data: {multiline}\n\n".encode()
        + sse(USAGE_CHUNK)
        + b"data:[DONE]\n\n"
    )
    upstream.script(Stream(payload))
    deltas = await collect(expert_for(upstream))
    assert views(deltas) == [
        Delta("Hel"), Delta("lo", "stop"), Delta("", usage=Usage(12, 3, 15))
    ]  # fmt: skip


async def test_stream_stops_at_done(upstream: Upstream, expert_for: ExpertFor) -> None:
    upstream.script(Stream(sse(chunk("a", "stop"), "[DONE]", chunk("after done"))))
    deltas = await collect(expert_for(upstream))
    assert views(deltas) == [Delta("a", "stop")]


async def test_stream_ending_before_finish_is_unavailable(
    upstream: Upstream, expert_for: ExpertFor
) -> None:
    upstream.script(Stream(sse(chunk("partial"))))
    received: list[Delta] = []
    with pytest.raises(ExpertUnavailable, match="ended early"):
        async for delta in expert_for(upstream).stream(make_request()):
            received.append(delta)
    assert views(received) == [Delta("partial")]


async def test_error_event_in_stream_is_unavailable(
    upstream: Upstream, expert_for: ExpertFor
) -> None:
    upstream.script(Stream(sse(chunk("a"), {"error": {"message": "engine died", "code": 500}})))
    with pytest.raises(ExpertUnavailable, match="engine died"):
        await collect(expert_for(upstream))


async def test_stream_closes_upstream_when_consumer_stops_early(
    upstream: Upstream, expert_for: ExpertFor
) -> None:
    # The upstream holds the rest back until the client goes.
    body = Stream(sse(chunk("a")), sse(chunk("b")), sse(chunk("c", "stop")), hold_after=1)
    upstream.script(body)
    stream = expert_for(upstream).stream(make_request())
    first = await stream.__anext__()
    assert first.content == "a"
    assert not body.ended.is_set()
    await stream.aclose()  # type: ignore[attr-defined]
    await wait_for(body.ended)
    assert body.disconnected
    assert body.sent < 3


async def test_stream_closes_upstream_after_normal_end(
    upstream: Upstream, expert_for: ExpertFor
) -> None:
    """The body is read to its end and the response released: the connection is pooled."""
    body = Stream(GOOD_STREAM)
    upstream.script(body, completion())
    expert = expert_for(upstream)
    await drain(expert.stream(make_request()))
    await wait_for(body.ended)
    assert body.finished and not body.disconnected
    await expert.complete(make_request())
    first, second = upstream.requests
    assert first.peer == second.peer


async def test_no_retry_once_stream_has_started(upstream: Upstream, expert_for: ExpertFor) -> None:
    # The upstream aborts the connection (unfinished chunked body) once "a" has been seen.
    dropped = Stream(sse(chunk("a")), hold_after=1, abort=True)
    upstream.script(dropped, Stream(GOOD_STREAM))
    expert = expert_for(upstream)
    received: list[Delta] = []
    with pytest.raises(ExpertUnavailable, match="ClientPayloadError") as caught:
        async for delta in expert.stream(make_request()):
            received.append(delta)
            dropped.release()
    assert isinstance(caught.value.__cause__, aiohttp.ClientPayloadError)
    assert views(received) == [Delta("a")]
    assert len(upstream.requests) == 1
    # The broken connection was dropped: the next stream gets a working one.
    assert "".join(d.content for d in await collect(expert)) == "Hello"


async def test_read_timeout_mid_stream_is_expert_timeout(
    upstream: Upstream, expert_for: ExpertFor
) -> None:
    silent = Stream(sse(chunk("a")), hold_after=1)
    upstream.script(silent)
    with pytest.raises(ExpertTimeout):
        await collect(expert_for(upstream, timeout_s=SHORT_TIMEOUT_S))
    await wait_for(silent.ended)
    assert silent.disconnected


# -- retries and errors -------------------------------------------------------------------


async def test_connect_errors_are_retried_then_succeed(
    refusing: Upstream, expert_for: ExpertFor
) -> None:
    """Refused, then a connect timeout (the listener stalls), then served."""
    refusing.script(completion())
    expert = expert_for(refusing, max_retries=2, connect_timeout_s=SHORT_TIMEOUT_S)
    with watch_retries(refusing.stall, refusing.serve) as retries:
        result = await expert.complete(make_request())
    assert result.content == "hello"
    assert retries == [1, 2]
    assert len(refusing.requests) == 1


async def test_stream_open_is_retried_on_connect_error(
    refusing: Upstream, expert_for: ExpertFor
) -> None:
    refusing.script(Stream(GOOD_STREAM))
    with watch_retries(refusing.serve) as retries:
        deltas = await collect(expert_for(refusing))
    assert "".join(d.content for d in deltas) == "Hello"
    assert retries == [1]
    assert len(refusing.requests) == 1


async def test_connect_errors_after_retries_are_unavailable(
    refusing: Upstream, expert_for: ExpertFor
) -> None:
    with (
        watch_retries() as retries,
        pytest.raises(ExpertUnreachable, match=r"unreachable after 3 attempts") as caught,
    ):
        await expert_for(refusing, max_retries=2).complete(make_request())
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectorError)
    assert caught.value.expert == "code"
    assert retries == [1, 2]


async def test_no_retries_when_max_retries_is_zero(
    refusing: Upstream, expert_for: ExpertFor
) -> None:
    refusing.script(completion())
    with watch_retries(refusing.serve) as retries, pytest.raises(ExpertUnavailable):
        await expert_for(refusing, max_retries=0).complete(make_request())
    assert retries == []
    assert refusing.requests == []


async def test_gateway_statuses_are_retried_before_the_body_is_read(
    upstream: Upstream, expert_for: ExpertFor
) -> None:
    upstream.script(text_reply("overloaded", 503), text_reply(status=502), completion())
    result = await expert_for(upstream).complete(make_request())
    assert result.content == "hello"
    assert len(upstream.requests) == 3


async def test_5xx_is_unavailable_naming_status_and_body(
    upstream: Upstream, expert_for: ExpertFor
) -> None:
    upstream.script(json_reply({"error": {"message": "no free KV blocks"}}, 503))
    with pytest.raises(ExpertUnavailable, match=r"503.*no free KV blocks"):
        await expert_for(upstream).complete(make_request())
    assert len(upstream.requests) == 3


async def test_any_5xx_before_the_first_byte_is_retried(
    upstream: Upstream, expert_for: ExpertFor
) -> None:
    upstream.script(text_reply("Internal Server Error", 500), completion())
    result = await expert_for(upstream).complete(make_request())
    assert result.content
    assert len(upstream.requests) == 2


async def test_5xx_after_the_retries_is_unavailable(
    upstream: Upstream, expert_for: ExpertFor
) -> None:
    upstream.script(*[text_reply("Internal Server Error", 500)] * 3)
    with pytest.raises(ExpertUnavailable, match=r"500.*Internal Server Error") as caught:
        await expert_for(upstream, max_retries=2).complete(make_request())
    assert not isinstance(caught.value, ExpertUnreachable)
    assert len(upstream.requests) == 3


async def test_a_503_after_the_retries_is_an_upstream_that_cannot_serve_now(
    upstream: Upstream, expert_for: ExpertFor
) -> None:
    """Starting or overloaded: the gateway answers its own 503, not a 502."""
    upstream.script(json_reply({"error": {"message": "still starting"}}, 503))
    with pytest.raises(ExpertUnreachable, match=r"503.*still starting"):
        await expert_for(upstream, max_retries=1).complete(make_request())
    assert len(upstream.requests) == 2


@pytest.mark.parametrize(
    ("answer", "status", "message"),
    [
        (
            json_reply({"error": {"message": "max_tokens too large"}}, 400),
            400,
            "max_tokens too large",
        ),
        (json_reply({"object": "error", "message": "bad field"}, 422), 422, "bad field"),
        (text_reply("no such route", 404), 404, "no such route"),
    ],
    ids=["openai-error", "vllm-error", "text"],
)
async def test_4xx_is_rejected_with_status_and_upstream_message(
    upstream: Upstream, expert_for: ExpertFor, answer: Answer, status: int, message: str
) -> None:
    upstream.script(answer, completion())
    with pytest.raises(ExpertRejected, match=message) as caught:
        await expert_for(upstream).complete(make_request())
    assert caught.value.status == status
    assert len(upstream.requests) == 1


async def test_4xx_message_is_read_whole_when_the_body_arrives_in_pieces(
    upstream: Upstream, expert_for: ExpertFor
) -> None:
    body = json.dumps({"error": {"message": "max_tokens too large"}}).encode()
    pieces = [body[i : i + 8] for i in range(0, len(body), 8)]
    upstream.script(Stream(*pieces, status=400, content_type="application/json", pause_s=0.001))
    with pytest.raises(ExpertRejected, match=r"^max_tokens too large$") as caught:
        await expert_for(upstream).complete(make_request())
    assert caught.value.status == 400


async def test_4xx_on_stream_is_rejected(upstream: Upstream, expert_for: ExpertFor) -> None:
    upstream.script(json_reply({"error": {"message": "bad"}}, 400))
    with pytest.raises(ExpertRejected, match="bad"):
        await collect(expert_for(upstream))


async def test_read_timeout_is_expert_timeout(upstream: Upstream, expert_for: ExpertFor) -> None:
    upstream.script(delayed(WAIT_S, completion()), completion())
    with pytest.raises(ExpertTimeout, match="timed out") as caught:
        await expert_for(upstream, total_timeout_s=SHORT_TIMEOUT_S).complete(make_request())
    assert caught.value.expert == "code"
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert len(upstream.requests) == 1


async def test_client_timeouts_come_from_the_spec(
    upstream: Upstream, refusing: Upstream, expert_for: ExpertFor
) -> None:
    # Read: the same slow answer times out under a short `total_timeout_s`, not under a
    # long one; a non-streamed answer comes whole, so `timeout_s` (the longest silence
    # between chunks) does not cut it off.
    upstream.script(delayed(2 * SHORT_TIMEOUT_S, completion()))
    with pytest.raises(ExpertTimeout):
        await expert_for(upstream, total_timeout_s=SHORT_TIMEOUT_S).complete(make_request())
    slow = expert_for(upstream, timeout_s=SHORT_TIMEOUT_S, total_timeout_s=30.0)
    result = await slow.complete(make_request())
    assert result.content == "hello"
    # Connect: a listener that never accepts times out after `connect_timeout_s`, well
    # before the default 5 s.
    refusing.stall()
    expert = expert_for(refusing, connect_timeout_s=SHORT_TIMEOUT_S, max_retries=0)
    started = anyio.current_time()
    with pytest.raises(ExpertTimeout) as caught:
        await expert.complete(make_request())
    assert anyio.current_time() - started < 2.5
    assert isinstance(caught.value.__cause__, aiohttp.ConnectionTimeoutError)


# -- health and lifetime -----------------------------------------------------------------


async def test_health_ok_when_model_is_listed(upstream: Upstream, expert_for: ExpertFor) -> None:
    upstream.script(models("coder-7b", "other"))
    health = await expert_for(upstream).health()
    assert health.ok
    assert upstream.requests[0].method == "GET"
    assert upstream.requests[0].path == "/v1/models"


async def test_health_not_ok_when_model_missing(upstream: Upstream, expert_for: ExpertFor) -> None:
    upstream.script(models("other"))
    health = await expert_for(upstream).health()
    assert not health.ok
    assert "coder-7b" in health.detail and "other" in health.detail


@pytest.mark.parametrize(
    "answer", [None, text_reply(status=500), text_reply("x")], ids=["refused", "500", "not-json"]
)
async def test_health_not_ok_when_upstream_fails(
    upstream: Upstream, refusing: Upstream, expert_for: ExpertFor, answer: Answer | None
) -> None:
    if answer is not None:
        upstream.script(answer)
    health = await expert_for(refusing if answer is None else upstream).health()
    assert not health.ok
    assert health.detail


async def test_start_and_aclose_manage_one_client(
    upstream: Upstream, expert_for: ExpertFor
) -> None:
    upstream.script(completion())
    expert = expert_for(upstream)
    await expert.start()
    await expert.complete(make_request())
    await expert.complete(make_request())
    await expert.aclose()
    await expert.aclose()
    assert len(upstream.requests) == 2
    assert len({request.peer for request in upstream.requests}) == 1


# -- the SSE decoder on its own ----------------------------------------------------------


def test_sse_decoder_frames_events() -> None:
    decoder = SSEDecoder()
    lines = [": hi", "data: a", "data:b", "event: x", "", "", "data", "", "data: [DONE]", ""]
    assert [e for e in map(decoder.feed, lines) if e is not None] == ["a\nb", "", "[DONE]"]


async def test_streams_reuse_one_upstream_connection(
    upstream: Upstream, expert_for: ExpertFor
) -> None:
    """After `data: [DONE]` the body is read to its end, so the connection is pooled again
    (keep-alive is what is tested)."""
    events = [
        {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}
        for text, finish in (("Hel", None), ("lo", "stop"))
    ]
    upstream.script(*(Stream(*(sse(e) for e in events), sse("[DONE]")) for _ in range(5)))
    expert = expert_for(upstream)
    await expert.start()
    for _ in range(5):
        deltas = [d async for d in expert.stream(make_request())]
        assert "".join(d.content for d in deltas) == "Hello"
    assert len(upstream.requests) == 5
    assert len({request.peer for request in upstream.requests}) == 1
