"""OpenAIExpert against scripted upstreams (httpx.MockTransport: the network edge).

The real-server behaviour is covered by tests/integration/test_vllm_expert.py; these tests
cover what a healthy vLLM does not produce on demand: split frames, dropped connections,
error statuses, malformed bodies.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx
import pytest

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

pytestmark = pytest.mark.anyio

Handler = Callable[[httpx.Request], httpx.Response]
BASE_URL = "http://upstream.test/v1"
USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}


def make_spec(**overrides: Any) -> OpenAISpec:
    fields: dict[str, Any] = {
        "name": "code",
        "kind": "openai",
        "description": "writes code",
        "base_url": BASE_URL,
        "model": "coder-7b",
        "max_retries": 2,
    }
    fields.update(overrides)
    return OpenAISpec.model_validate(fields)


def make_request(**kwargs: Any) -> ExpertRequest:
    return ExpertRequest(messages=(Message("system", "be brief"), Message("user", "hi")), **kwargs)


class Upstream:
    """A scripted server: answers requests in order with the given responses or errors."""

    def __init__(self, *answers: httpx.Response | Exception | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        return answer(request)

    def body(self, index: int = -1) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.requests[index].content)
        return parsed


def expert_for(upstream: Upstream, **spec_overrides: Any) -> OpenAIExpert:
    transport = httpx.MockTransport(upstream)
    return OpenAIExpert(make_spec(**spec_overrides), transport, retry_backoff_s=0.0)


def completion(content: str = "hello", finish: str = "stop", usage: Any = USAGE) -> httpx.Response:
    return httpx.Response(
        200,
        json={
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
        },
    )


class ChunkStream(httpx.AsyncByteStream):
    """A response body delivered in the given pieces; records whether it was closed."""

    def __init__(self, pieces: Sequence[bytes], fail_after: Exception | None = None) -> None:
        self.pieces = pieces
        self.fail_after = fail_after
        self.closed = False
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            self.sent += 1
            yield piece
        if self.fail_after is not None:
            raise self.fail_after

    async def aclose(self) -> None:
        self.closed = True


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


def streaming(stream: httpx.AsyncByteStream) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)


async def collect(expert: OpenAIExpert, request: ExpertRequest | None = None) -> list[Delta]:
    return [delta async for delta in expert.stream(request or make_request())]


# -- the request -------------------------------------------------------------------------


async def test_is_an_expert() -> None:
    expert = expert_for(Upstream(completion()))
    assert isinstance(expert, Expert)
    assert (expert.name, expert.kind) == ("code", "openai")


async def test_complete_posts_model_messages_and_only_set_sampling_params() -> None:
    upstream = Upstream(completion())
    expert = expert_for(upstream)
    sampling = Sampling(max_tokens=64, temperature=0.0, stop=("\n\n",), seed=7)
    await expert.complete(make_request(sampling=sampling))
    request = upstream.requests[0]
    assert request.method == "POST"
    assert str(request.url) == f"{BASE_URL}/chat/completions"
    assert upstream.body() == {
        "model": "coder-7b",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "stream": False,
        "max_tokens": 64,
        "temperature": 0.0,
        "stop": ["\n\n"],
        "seed": 7,
    }


async def test_vllm_extensions_are_sent_only_when_set() -> None:
    upstream = Upstream(completion())
    expert = expert_for(upstream)
    sampling = Sampling(
        top_p=0.9, top_k=40, repetition_penalty=1.1, presence_penalty=0.5, frequency_penalty=0.25
    )
    await expert.complete(make_request(sampling=sampling))
    body = upstream.body()
    assert {k: body[k] for k in ("top_p", "top_k", "repetition_penalty")} == {
        "top_p": 0.9,
        "top_k": 40,
        "repetition_penalty": 1.1,
    }
    assert (body["presence_penalty"], body["frequency_penalty"]) == (0.5, 0.25)
    await expert.complete(make_request())
    assert not {"top_k", "repetition_penalty", "stop", "seed"} & set(upstream.body())


async def test_extra_passes_through_but_cannot_override_owned_keys() -> None:
    upstream = Upstream(streaming(ChunkStream([GOOD_STREAM])))
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
    body = upstream.body()
    assert body["response_format"] == {"type": "json_object"}
    assert body["logprobs"] is True
    assert body["model"] == "coder-7b"
    assert len(body["messages"]) == 2
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_auth_header_spec_headers_and_request_id() -> None:
    upstream = Upstream(completion())
    expert = expert_for(upstream, api_key="sk-secret", headers={"X-Team": "a"})
    await expert.complete(make_request(request_id="req-1"))
    headers = upstream.requests[0].headers
    assert headers["authorization"] == "Bearer sk-secret"
    assert headers["x-team"] == "a"
    assert headers["x-request-id"] == "req-1"


async def test_no_auth_header_without_api_key() -> None:
    upstream = Upstream(completion())
    await expert_for(upstream).complete(make_request())
    assert "authorization" not in upstream.requests[0].headers


# -- non-streaming answers ---------------------------------------------------------------


async def test_complete_preserves_content_finish_reason_and_usage() -> None:
    usage = {**USAGE, "prompt_tokens_details": {"cached_tokens": 8}, "reasoning": None}
    expert = expert_for(Upstream(completion("def f(): pass", "length", usage)))
    result = await expert.complete(make_request())
    assert result.content == "def f(): pass"
    assert result.finish_reason == "length"
    assert result.usage == Usage(12, 3, 15, details={"prompt_tokens_details": {"cached_tokens": 8}})


async def test_complete_without_usage() -> None:
    result = await expert_for(Upstream(completion(usage=None))).complete(make_request())
    assert result.usage is None


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, content=b"<html>gateway</html>"),
        httpx.Response(200, json={"choices": []}),
        httpx.Response(200, json={"choices": [{"index": 0, "message": "x"}]}),
        httpx.Response(200, json=[1, 2]),
    ],
)
async def test_malformed_upstream_json_is_unavailable(response: httpx.Response) -> None:
    with pytest.raises(ExpertUnavailable, match="unusable upstream answer") as caught:
        await expert_for(Upstream(response)).complete(make_request())
    assert caught.value.expert == "code"


# -- streaming ---------------------------------------------------------------------------


async def test_stream_passes_chunks_through_with_finish_and_usage() -> None:
    upstream = Upstream(streaming(ChunkStream([GOOD_STREAM])))
    deltas = await collect(expert_for(upstream))
    assert deltas == [
        Delta("Hel"),
        Delta("lo"),
        Delta("", finish_reason="stop"),
        Delta("", usage=Usage(12, 3, 15)),
    ]
    assert upstream.body()["stream_options"] == {"include_usage": True}


async def test_stream_reassembles_frames_split_anywhere() -> None:
    payload = GOOD_STREAM.replace(b"\n", b"\r\n")
    pieces = [payload[i : i + 7] for i in range(0, len(payload), 7)]
    deltas = await collect(expert_for(Upstream(streaming(ChunkStream(pieces)))))
    assert "".join(d.content for d in deltas) == "Hello"
    assert deltas[-1].usage == Usage(12, 3, 15)


async def test_stream_ignores_comments_and_other_fields_and_joins_multiline_data() -> None:
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
    deltas = await collect(expert_for(Upstream(streaming(ChunkStream([payload])))))
    assert deltas == [Delta("Hel"), Delta("lo", "stop"), Delta("", usage=Usage(12, 3, 15))]


async def test_stream_stops_at_done() -> None:
    payload = sse(chunk("a", "stop"), "[DONE]", chunk("after done"))
    deltas = await collect(expert_for(Upstream(streaming(ChunkStream([payload])))))
    assert deltas == [Delta("a", "stop")]


async def test_stream_ending_before_finish_is_unavailable() -> None:
    upstream = Upstream(streaming(ChunkStream([sse(chunk("partial"))])))
    received: list[Delta] = []
    with pytest.raises(ExpertUnavailable, match="ended early"):
        async for delta in expert_for(upstream).stream(make_request()):
            received.append(delta)
    assert received == [Delta("partial")]


async def test_error_event_in_stream_is_unavailable() -> None:
    payload = sse(chunk("a"), {"error": {"message": "engine died", "code": 500}})
    with pytest.raises(ExpertUnavailable, match="engine died"):
        await collect(expert_for(Upstream(streaming(ChunkStream([payload])))))


async def test_stream_closes_upstream_when_consumer_stops_early() -> None:
    body = ChunkStream([sse(chunk("a")), sse(chunk("b")), sse(chunk("c", "stop"))])
    expert = expert_for(Upstream(streaming(body)))
    stream = expert.stream(make_request())
    first = await stream.__anext__()
    assert first == Delta("a")
    assert not body.closed
    await stream.aclose()  # type: ignore[attr-defined]
    assert body.closed
    assert body.sent < 3


async def test_stream_closes_upstream_after_normal_end() -> None:
    body = ChunkStream([GOOD_STREAM])
    await drain(expert_for(Upstream(streaming(body))).stream(make_request()))
    assert body.closed


async def test_no_retry_once_stream_has_started() -> None:
    body = ChunkStream([sse(chunk("a"))], fail_after=httpx.ReadError("connection reset"))
    upstream = Upstream(streaming(body), streaming(ChunkStream([GOOD_STREAM])))
    received: list[Delta] = []
    with pytest.raises(ExpertUnavailable, match="ReadError"):
        async for delta in expert_for(upstream).stream(make_request()):
            received.append(delta)
    assert received == [Delta("a")]
    assert len(upstream.requests) == 1
    assert body.closed


async def test_read_timeout_mid_stream_is_expert_timeout() -> None:
    body = ChunkStream([sse(chunk("a"))], fail_after=httpx.ReadTimeout("slow"))
    with pytest.raises(ExpertTimeout):
        await collect(expert_for(Upstream(streaming(body))))


# -- retries and errors -------------------------------------------------------------------


async def test_connect_errors_are_retried_then_succeed() -> None:
    upstream = Upstream(httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), completion())
    result = await expert_for(upstream, max_retries=2).complete(make_request())
    assert result.content == "hello"
    assert len(upstream.requests) == 3


async def test_stream_open_is_retried_on_connect_error() -> None:
    upstream = Upstream(httpx.ConnectError("refused"), streaming(ChunkStream([GOOD_STREAM])))
    deltas = await collect(expert_for(upstream))
    assert "".join(d.content for d in deltas) == "Hello"
    assert len(upstream.requests) == 2


async def test_connect_errors_after_retries_are_unavailable() -> None:
    upstream = Upstream(httpx.ConnectError("refused"))
    with pytest.raises(ExpertUnreachable, match=r"unreachable after 3 attempts") as caught:
        await expert_for(upstream, max_retries=2).complete(make_request())
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert caught.value.expert == "code"
    assert len(upstream.requests) == 3


async def test_no_retries_when_max_retries_is_zero() -> None:
    upstream = Upstream(httpx.ConnectError("refused"), completion())
    with pytest.raises(ExpertUnavailable):
        await expert_for(upstream, max_retries=0).complete(make_request())
    assert len(upstream.requests) == 1


async def test_gateway_statuses_are_retried_before_the_body_is_read() -> None:
    upstream = Upstream(httpx.Response(503, text="overloaded"), httpx.Response(502), completion())
    result = await expert_for(upstream).complete(make_request())
    assert result.content == "hello"
    assert len(upstream.requests) == 3


async def test_5xx_is_unavailable_naming_status_and_body() -> None:
    upstream = Upstream(httpx.Response(503, json={"error": {"message": "no free KV blocks"}}))
    with pytest.raises(ExpertUnavailable, match=r"503.*no free KV blocks"):
        await expert_for(upstream).complete(make_request())
    assert len(upstream.requests) == 3


async def test_any_5xx_before_the_first_byte_is_retried() -> None:
    upstream = Upstream(httpx.Response(500, text="Internal Server Error"), completion())
    result = await expert_for(upstream).complete(make_request())
    assert result.content
    assert len(upstream.requests) == 2


async def test_5xx_after_the_retries_is_unavailable() -> None:
    upstream = Upstream(*[httpx.Response(500, text="Internal Server Error")] * 3)
    with pytest.raises(ExpertUnavailable, match=r"500.*Internal Server Error"):
        await expert_for(upstream, max_retries=2).complete(make_request())
    assert len(upstream.requests) == 3


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (
            httpx.Response(400, json={"error": {"message": "max_tokens too large"}}),
            "max_tokens too large",
        ),
        (httpx.Response(422, json={"object": "error", "message": "bad field"}), "bad field"),
        (httpx.Response(404, text="no such route"), "no such route"),
    ],
)
async def test_4xx_is_rejected_with_status_and_upstream_message(
    response: httpx.Response, message: str
) -> None:
    upstream = Upstream(response, completion())
    with pytest.raises(ExpertRejected, match=message) as caught:
        await expert_for(upstream).complete(make_request())
    assert caught.value.status == response.status_code
    assert len(upstream.requests) == 1


async def test_4xx_on_stream_is_rejected() -> None:
    upstream = Upstream(httpx.Response(400, json={"error": {"message": "bad"}}))
    with pytest.raises(ExpertRejected, match="bad"):
        await collect(expert_for(upstream))


async def test_read_timeout_is_expert_timeout() -> None:
    upstream = Upstream(httpx.ReadTimeout("read timed out"), completion())
    with pytest.raises(ExpertTimeout, match="timed out") as caught:
        await expert_for(upstream).complete(make_request())
    assert caught.value.expert == "code"
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert len(upstream.requests) == 1


async def test_client_timeouts_come_from_the_spec() -> None:
    seen: list[dict[str, float | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return completion()

    expert = expert_for(Upstream(handler), timeout_s=30.0, connect_timeout_s=2.0)
    await expert.complete(make_request())
    assert seen == [{"connect": 2.0, "read": 30.0, "write": 30.0, "pool": 30.0}]


# -- health and lifetime -----------------------------------------------------------------


def models(*ids: str) -> httpx.Response:
    return httpx.Response(200, json={"object": "list", "data": [{"id": i} for i in ids]})


async def test_health_ok_when_model_is_listed() -> None:
    upstream = Upstream(models("coder-7b", "other"))
    health = await expert_for(upstream).health()
    assert health.ok
    assert upstream.requests[0].method == "GET"
    assert str(upstream.requests[0].url) == f"{BASE_URL}/models"


async def test_health_not_ok_when_model_missing() -> None:
    health = await expert_for(Upstream(models("other"))).health()
    assert not health.ok
    assert "coder-7b" in health.detail and "other" in health.detail


@pytest.mark.parametrize(
    "answer", [httpx.ConnectError("refused"), httpx.Response(500), httpx.Response(200, text="x")]
)
async def test_health_not_ok_when_upstream_fails(answer: httpx.Response | Exception) -> None:
    health = await expert_for(Upstream(answer)).health()
    assert not health.ok
    assert health.detail


async def test_start_and_aclose_manage_one_client() -> None:
    upstream = Upstream(completion())
    expert = expert_for(upstream)
    await expert.start()
    await expert.complete(make_request())
    await expert.complete(make_request())
    await expert.aclose()
    await expert.aclose()
    assert len(upstream.requests) == 2


# -- the SSE decoder on its own ----------------------------------------------------------


def test_sse_decoder_frames_events() -> None:
    decoder = SSEDecoder()
    lines = [": hi", "data: a", "data:b", "event: x", "", "", "data", "", "data: [DONE]", ""]
    assert [e for e in map(decoder.feed, lines) if e is not None] == ["a\nb", "", "[DONE]"]


async def test_streams_reuse_one_upstream_connection() -> None:
    """After `data: [DONE]` the body is read to its end, so the connection is pooled again
    (a real loopback server: keep-alive is what is tested)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    from tests.support.asgi import serve

    peers: list[object] = []

    async def completions(request: Request) -> StreamingResponse:
        peers.append(request.client)

        async def events() -> AsyncIterator[bytes]:
            for text, finish in (("Hel", None), ("lo", "stop")):
                chunk = {
                    "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]
                }
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"data": [{"id": "coder-7b"}]})

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/v1/models", models),
        ]
    )
    with serve(app) as url:
        expert = OpenAIExpert(make_spec(base_url=f"{url}/v1"))
        await expert.start()
        try:
            for _ in range(5):
                deltas = [d async for d in expert.stream(make_request())]
                assert "".join(d.content for d in deltas) == "Hello"
        finally:
            await expert.aclose()
    assert len(peers) == 5 and len(set(map(str, peers))) == 1
