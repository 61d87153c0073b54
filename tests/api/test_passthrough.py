"""OpenAI's other endpoints through the gateway: `/v1/models/{id}`, and `/v1/embeddings`,
`/v1/completions` and `/v1/responses` passed through to an `openai` expert.

The official `openai` client talks to the app served by uvicorn; behind the `openai`
experts is a scripted upstream, a real HTTP server on loopback. Tool experts are fakes.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web

from experts.base import Expert
from experts.openai_compat import OpenAIExpert
from experts.registry import ExpertSet
from experts.specs import OpenAISpec
from gateway.api.app import build_app
from gateway.config import parse_config
from gateway.service import Gateway
from tests.api.conftest import local_memory, wait_ready
from tests.fakes import KeywordEmbedder, ScriptedExpert
from tests.support.asgi import serve
from tests.support.keys import auth_block, entry, token
from tests.support.threaded import threaded_upstream
from tests.support.upstream import Answer, Seen, Stream, Upstream, json_reply, with_models

GENERAL_MODEL, WRITER_MODEL = "general-7b", "writer-7b"
BUDGETED = ("thrifty-json", "thrifty-sse", "thrifty-responses")
AUTH = auth_block(entry("acme"), *(entry(name)[:-1] + ", tpm: 10}" for name in BUDGETED))
CONFIG = """
router: {{threshold: 0.45, margin: 0.04, use_descriptions: false}}
health: {{interval_s: 3600}}
experts:
  - {{name: general, kind: openai, base_url: "{url}/v1", model: {general}, max_retries: 0,
     description: questions, examples: [question, explain]}}
  - {{name: writer, kind: openai, base_url: "{url}/v1", model: {writer}, max_retries: 0,
     endpoints: [completions, responses], description: stories, examples: [story, poem]}}
  - {{name: narrow, kind: openai, base_url: "{url}/v1", model: {general}, max_retries: 0,
     endpoints: [completions], max_concurrency: 1, queue_timeout_s: 0.2,
     description: narrow, examples: [narrow]}}
  - {{name: shaky, kind: openai, base_url: "http://127.0.0.1:{dead}/v1", model: m,
     max_retries: 0, fallbacks: [general], endpoints: [embeddings, responses],
     description: shaky, examples: [shaky]}}
  - {{name: down, kind: openai, base_url: "http://127.0.0.1:{dead}/v1", model: m,
     max_retries: 0, endpoints: [completions], description: down, examples: [down]}}
  - {{name: calculator, kind: tool, tool: calculator, description: arithmetic,
     examples: [compute]}}
"""
KEYWORDS = ["question", "explain", "story", "poem", "narrow", "shaky", "down", "compute"]
SETTLE_S = 10.0

EMBEDDINGS = {
    "object": "list",
    "data": [
        {"object": "embedding", "index": 0, "embedding": [0.25, -0.5, 1.0]},
        {"object": "embedding", "index": 1, "embedding": [0.0, 0.75, -1.0]},
    ],
    "model": GENERAL_MODEL,
    "usage": {"prompt_tokens": 60, "total_tokens": 60},
}
COMPLETION = {
    "id": "cmpl-1",
    "object": "text_completion",
    "created": 1700000000,
    "model": GENERAL_MODEL,
    "choices": [{"index": 0, "text": "Hello there", "finish_reason": "stop", "logprobs": None}],
    "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
}


@dataclass
class Rig:
    url: str
    upstream: Upstream

    def client(self, key: str = "acme") -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=token(key), max_retries=0)

    def http(self, key: str = "acme") -> httpx.Client:
        headers = {"Authorization": f"Bearer {token(key)}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def script(self, answer: Answer) -> None:
        self.upstream.script(with_models(answer, GENERAL_MODEL, WRITER_MODEL))

    def passed(self) -> list[Seen]:
        """What reached the upstream besides health probes."""
        return [seen for seen in self.upstream.requests if seen.method == "POST"]


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    dead = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # bound, never listening
    dead.bind(("127.0.0.1", 0))
    with dead, threaded_upstream() as upstream:
        upstream.script(with_models(json_reply({}), GENERAL_MODEL, WRITER_MODEL))
        text = AUTH + CONFIG.format(
            url=upstream.url, general=GENERAL_MODEL, writer=WRITER_MODEL,
            dead=dead.getsockname()[1],
        )  # fmt: skip
        config = parse_config(text, "passthrough.yaml", {})
        experts: list[Expert] = [
            OpenAIExpert(spec) if isinstance(spec, OpenAISpec) else ScriptedExpert(spec.name)
            for spec in config.experts
        ]
        gateway = Gateway(config, KeywordEmbedder(KEYWORDS), ExpertSet(experts), local_memory())
        with serve(build_app(gateway, config.server.max_body_bytes)) as url:
            wait_ready(url)
            yield Rig(url, upstream)


def sse(*events: dict[str, Any], named: bool = False, done: bool = True) -> list[bytes]:
    """Server-sent events as an upstream writes them (Responses events carry their name)."""
    pieces = [
        (f"event: {e['type']}\n" if named else "") + f"data: {json.dumps(e)}\n\n" for e in events
    ]
    return [piece.encode() for piece in pieces] + ([b"data: [DONE]\n\n"] if done else [])


def completion_chunk(text: str | None, finish: str | None = None, usage: Any = None) -> Any:
    choices = [] if text is None else [
        {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
    ]  # fmt: skip
    return {**COMPLETION, "choices": choices, "usage": usage}


COMPLETION_STREAM = sse(
    completion_chunk("Hel"),
    completion_chunk("lo", "stop"),
    completion_chunk(None, usage=COMPLETION["usage"]),
)


def response_object(status: str, text: str, usage: Any) -> dict[str, Any]:
    message = {
        "type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }  # fmt: skip
    return {
        "id": "resp_1", "object": "response", "created_at": 1700000000, "status": status,
        "model": WRITER_MODEL, "output": [message] if text else [], "error": None,
        "incomplete_details": None, "instructions": None, "parallel_tool_calls": True,
        "tool_choice": "auto", "tools": [], "temperature": 1.0, "top_p": 1.0, "usage": usage,
    }  # fmt: skip


RESPONSE_USAGE = {
    "input_tokens": 50, "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 10, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 60,
}  # fmt: skip
RESPONSE = response_object("completed", "Once upon a time", RESPONSE_USAGE)


def delta(seq: int, text: str) -> dict[str, Any]:
    return {
        "type": "response.output_text.delta", "sequence_number": seq, "item_id": "msg_1",
        "output_index": 0, "content_index": 0, "delta": text, "logprobs": [],
    }  # fmt: skip


RESPONSE_EVENTS: list[dict[str, Any]] = [
    {"type": "response.created", "sequence_number": 0,
     "response": response_object("in_progress", "", None)},
    delta(1, "Once upon"),
    delta(2, " a time"),
    {"type": "response.completed", "sequence_number": 3, "response": RESPONSE},
]  # fmt: skip
RESPONSE_STREAM = sse(*RESPONSE_EVENTS, named=True, done=False)


def rate_limited(retry_after: str) -> Answer:
    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        error = {"message": "slow down", "type": "rate_limit_error", "param": None,
                 "code": "rate_limit_exceeded"}  # fmt: skip
        return web.json_response({"error": error}, status=429, headers={"Retry-After": retry_after})

    return answer


def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + SETTLE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.02)


# -- /v1/models/{id} -----------------------------------------------------------------------


def test_a_model_is_retrieved_by_id_with_the_fields_of_the_list(rig: Rig) -> None:
    client = rig.client()
    listed = {model.id: model for model in client.models.list()}
    for name in ("auto", "writer", "calculator"):
        model = client.models.retrieve(name)
        assert model.id == name and model.object == "model" and model.owned_by == "taskgate"
        assert model.model_dump() == listed[name].model_dump()
    assert (client.models.retrieve("writer").model_extra or {})["kind"] == "openai"
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve("nobody")
    assert raised.value.code == "model_not_found"


# -- /v1/embeddings ------------------------------------------------------------------------


def test_embeddings_come_from_the_named_experts_upstream(rig: Rig) -> None:
    rig.script(json_reply(EMBEDDINGS))
    raw = rig.client().embeddings.with_raw_response.create(
        model="general", input=["first", "second"], encoding_format="float", dimensions=3
    )
    result = raw.parse()
    assert [d.embedding for d in result.data] == [[0.25, -0.5, 1.0], [0.0, 0.75, -1.0]]
    assert result.usage.total_tokens == 60
    assert raw.headers["x-route-expert"] == "general"
    seen = rig.passed()[-1]
    assert seen.path == "/v1/embeddings"
    assert seen.json() == {
        "model": GENERAL_MODEL, "input": ["first", "second"], "encoding_format": "float",
        "dimensions": 3,
    }  # fmt: skip


def test_an_upstream_429_reaches_the_client_with_its_retry_after(rig: Rig) -> None:
    rig.script(rate_limited("7"))
    with pytest.raises(openai.RateLimitError) as raised:
        rig.client().embeddings.create(model="general", input="x")
    assert raised.value.response.headers["retry-after"] == "7"
    assert raised.value.code == "rate_limit_exceeded"
    assert raised.value.body == {"message": "slow down", "type": "rate_limit_error",
                                 "param": None, "code": "rate_limit_exceeded"}  # fmt: skip


def test_an_expert_that_does_not_serve_the_endpoint_is_a_400_naming_those_that_do(
    rig: Rig,
) -> None:
    client = rig.client()
    for model in ("calculator", "writer"):
        with pytest.raises(openai.BadRequestError) as raised:
            client.embeddings.create(model=model, input="x")
        assert raised.value.code == "unsupported_endpoint"
        assert "experts that serve it: general, shaky" in raised.value.message
    with pytest.raises(openai.BadRequestError) as auto:
        client.embeddings.create(model="auto", input="x")
    assert "name an expert" in auto.value.message and "general, shaky" in auto.value.message


def test_an_unknown_model_is_a_404(rig: Rig) -> None:
    client = rig.client()
    with pytest.raises(openai.NotFoundError) as raised:
        client.embeddings.create(model="nobody", input="x")
    assert raised.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nobody", prompt="x")
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="nobody", input="x")


def test_every_endpoint_needs_a_key(rig: Rig) -> None:
    bad = openai.OpenAI(base_url=f"{rig.url}/v1", api_key="tg_nope", max_retries=0)
    before = len(rig.passed())
    calls = [
        lambda: bad.models.retrieve("auto"),
        lambda: bad.embeddings.create(model="general", input="x"),
        lambda: bad.completions.create(model="general", prompt="x"),
        lambda: bad.responses.create(model="general", input="x"),
    ]
    for call in calls:
        with pytest.raises(openai.AuthenticationError):
            call()
    assert len(rig.passed()) == before


# -- /v1/completions -----------------------------------------------------------------------


def test_a_completion_passes_through_whole(rig: Rig) -> None:
    rig.script(json_reply(COMPLETION))
    completion = rig.client().completions.create(
        model="general", prompt="Say hello", max_tokens=5, logprobs=None
    )
    assert completion.choices[0].text == "Hello there"
    assert completion.usage is not None and completion.usage.total_tokens == 60
    seen = rig.passed()[-1]
    assert seen.path == "/v1/completions"
    assert seen.json() == {"model": GENERAL_MODEL, "prompt": "Say hello", "max_tokens": 5,
                           "logprobs": None}  # fmt: skip


def test_a_streamed_completion_relays_the_chunks(rig: Rig) -> None:
    # Chunks split across writes are relayed as whole events.
    joined = b"".join(COMPLETION_STREAM)
    rig.script(Stream(joined[:50], joined[50:200], joined[200:], pause_s=0.01))
    chunks = list(rig.client().completions.create(model="writer", prompt="Hi", stream=True))
    assert [c.choices[0].text for c in chunks] == ["Hel", "lo"]  # no usage chunk: not asked
    assert rig.passed()[-1].json() == {
        "model": WRITER_MODEL, "prompt": "Hi", "stream": True,
        "stream_options": {"include_usage": True},  # asked for, for the token budget
    }  # fmt: skip

    rig.script(Stream(*COMPLETION_STREAM))
    asked = list(
        rig.client().completions.create(
            model="writer", prompt="Hi", stream=True, stream_options={"include_usage": True}
        )
    )
    assert asked[-1].choices == [] and asked[-1].usage is not None
    assert asked[-1].usage.total_tokens == 60


# -- /v1/responses -------------------------------------------------------------------------


def test_a_response_passes_through_whole(rig: Rig) -> None:
    rig.script(json_reply(RESPONSE))
    raw = rig.client().responses.with_raw_response.create(
        model="writer", input="Tell me a story", instructions="be brief"
    )
    response = raw.parse()
    assert response.output_text == "Once upon a time"
    assert response.usage is not None and response.usage.total_tokens == 60
    assert raw.headers["x-route-expert"] == "writer"
    seen = rig.passed()[-1]
    assert seen.path == "/v1/responses"
    assert seen.json() == {"model": WRITER_MODEL, "input": "Tell me a story",
                           "instructions": "be brief"}  # fmt: skip


def test_a_streamed_response_relays_the_events(rig: Rig) -> None:
    rig.script(Stream(*RESPONSE_STREAM, pause_s=0.01))
    events = list(rig.client().responses.create(model="writer", input="story", stream=True))
    assert [e.type for e in events] == [e["type"] for e in RESPONSE_EVENTS]
    texts = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(texts) == "Once upon a time"
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.output_text == "Once upon a time"
    assert rig.passed()[-1].json()["stream"] is True


def test_a_stream_cut_by_the_upstream_ends_with_an_error_event(rig: Rig) -> None:
    # The pause lets the events before the cut arrive on their own.
    rig.script(Stream(*RESPONSE_STREAM[:2], b"", pause_s=0.1, abort=True))
    events = list(rig.client().responses.create(model="writer", input="story", stream=True))
    assert [e.type for e in events] == ["response.created", "response.output_text.delta", "error"]
    error = events[-1]
    assert error.type == "error" and error.code == "expert_failed"
    assert error.sequence_number == 2

    rig.script(Stream(*COMPLETION_STREAM[:1], b"", pause_s=0.1, abort=True))
    with pytest.raises(openai.APIError, match="expert 'general' failed"):
        list(rig.client().completions.create(model="general", prompt="Hi", stream=True))


def test_auto_routes_a_response_among_the_experts_that_serve_it(rig: Rig) -> None:
    rig.script(json_reply(RESPONSE))
    client = rig.client()
    raw = client.responses.with_raw_response.create(model="auto", input="write a poem")
    assert raw.headers["x-route-expert"] == "writer"
    assert rig.passed()[-1].json()["model"] == WRITER_MODEL
    # An input list routes on its last user item's text.
    items = [
        {"role": "user", "content": "write a poem"},
        {"role": "assistant", "content": "Roses are red"},
        {"role": "user", "content": [{"type": "input_text", "text": "explain the question"}]},
    ]
    raw = client.responses.with_raw_response.create(model="auto", input=items)
    assert raw.headers["x-route-expert"] == "general"
    assert rig.passed()[-1].json()["model"] == GENERAL_MODEL
    assert rig.passed()[-1].json()["input"] == items
    # Where chat would ask which expert is meant, the best one answers.
    raw = client.responses.with_raw_response.create(model="auto", input="poem question")
    assert raw.headers["x-route-action"] == "dispatch"
    assert raw.headers["x-route-expert"] in ("writer", "general")
    # Nothing to route on is a clear 400.
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(
            model="auto", input=[{"role": "user", "content": [{"type": "input_image",
                                                               "image_url": "data:,"}]}],
        )  # fmt: skip
    assert "name an expert" in raised.value.message


# -- health, admission, budgets, metrics ---------------------------------------------------


def test_an_unhealthy_expert_is_a_503_or_its_fallback_answers(rig: Rig) -> None:
    client = rig.client()
    with pytest.raises(openai.InternalServerError) as raised:
        client.completions.create(model="down", prompt="x")
    assert raised.value.status_code == 503 and raised.value.code == "expert_unavailable"
    # A healthy fallback that serves the endpoint answers for an unhealthy expert...
    rig.script(json_reply(RESPONSE))
    raw = client.responses.with_raw_response.create(model="shaky", input="x")
    assert raw.headers["x-route-expert"] == "general"
    assert rig.passed()[-1].json()["model"] == GENERAL_MODEL
    # ...but another model's vectors are no answer: embeddings never go to a fallback.
    with pytest.raises(openai.InternalServerError) as embedding:
        client.embeddings.create(model="shaky", input="x")
    assert embedding.value.code == "expert_unavailable"


def test_the_concurrency_limit_holds_and_a_client_that_leaves_frees_its_slot(rig: Rig) -> None:
    held = Stream(*COMPLETION_STREAM, hold_after=1)
    rig.script(held)
    body = {"model": "narrow", "prompt": "Hi", "stream": True}
    with rig.http() as http:
        with http.stream("POST", "/v1/completions", json=body) as first:
            assert first.status_code == 200
            lines = first.iter_lines()  # kept: closing it would close the connection
            assert next(lines).startswith("data: ")
            busy = http.post("/v1/completions", json={"model": "narrow", "prompt": "Hi"})
            assert busy.status_code == 429
            assert busy.json()["error"]["code"] == "expert_busy"
        # The client went away: the upstream's answer is dropped and the slot is free.
        wait_until(held.ended.is_set, "the upstream saw the client go")
        assert held.disconnected and not held.finished
        rig.script(json_reply(COMPLETION))
        wait_until(
            lambda: (
                http.post("/v1/completions", json={"model": "narrow", "prompt": "Hi"}).status_code
                == 200
            ),
            "the slot was released",
        )


@pytest.mark.parametrize(
    ("key", "endpoint", "answer", "body"),
    [
        ("thrifty-json", "/v1/embeddings", json_reply(EMBEDDINGS), {"input": "x"}),
        ("thrifty-sse", "/v1/completions", Stream(*COMPLETION_STREAM),
         {"prompt": "x", "stream": True}),
        ("thrifty-responses", "/v1/responses", Stream(*RESPONSE_STREAM),
         {"input": "x", "stream": True}),
    ],
)  # fmt: skip
def test_the_tokens_the_upstream_reports_are_charged(
    rig: Rig, key: str, endpoint: str, answer: Answer, body: dict[str, Any]
) -> None:
    rig.script(answer)
    request = {"model": "general", **body}
    with rig.http(key) as http:
        first = http.post(endpoint, json=request)
        assert first.status_code == 200
        assert first.content  # read to its end: the usage was seen
        second = http.post(endpoint, json=request)
    assert second.status_code == 429
    assert "tokens" in second.json()["error"]["message"]


def test_passed_requests_are_counted(rig: Rig) -> None:
    rig.script(json_reply(EMBEDDINGS))
    rig.client().embeddings.create(model="general", input="x")
    with rig.http() as http:
        metrics = http.get("/metrics").text
    line = next(
        line
        for line in metrics.splitlines()
        if line.startswith("taskgate_requests_total{")
        and 'action="passthrough"' in line
        and 'expert="general"' in line
    )
    assert float(line.split()[-1]) >= 1
