"""The official `openai` client sees through taskgate exactly what it sees from the upstream.

A scripted upstream (a real HTTP server on loopback) answers with canned, exact OpenAI
answers; each test asks it once directly and once through taskgate (an `openai` expert in
front of it), with the same client, and compares the parsed objects field by field. Only
`id`, `created` and `model` are the gateway's own, and it adds its `route` object. Every
body and chunk taskgate sends is also checked against OpenAI's published OpenAPI spec.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.protocol import canned
from tests.protocol.conftest import Rig
from tests.support.openai_spec import validate_chat_chunk, validate_chat_completion

# The gateway's own fields, and what it adds.
OURS = {"id", "created", "model", "route"}
MESSAGES = canned.MESSAGES


def both(rig: Rig, model: str = "code", **request: Any) -> tuple[Any, Any]:
    """The same request, to the upstream and through the gateway."""
    request.setdefault("messages", MESSAGES)
    direct = rig.direct.chat.completions.create(model=canned.MODEL, **request)
    via = rig.gateway.chat.completions.create(model=model, **request)
    return direct, via


def dumped(value: Any) -> Any:
    return value.model_dump(exclude=OURS)


def raw_body(rig: Rig, **request: Any) -> dict[str, Any]:
    request.setdefault("messages", MESSAGES)
    response = rig.http.post("/v1/chat/completions", json={"model": "code", **request})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def raw_chunks(rig: Rig, **request: Any) -> list[dict[str, Any]]:
    request.setdefault("messages", MESSAGES)
    body = {"model": "code", "stream": True, **request}
    with rig.http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


SCENARIOS = {
    "tool_calls": (canned.TOOL_CALLS, canned.TOOL_CALL_CHUNKS,
                   {"tools": [canned.WEATHER_TOOL, canned.TIME_TOOL],
                    "parallel_tool_calls": True}),
    "two_choices_logprobs": (canned.TWO_CHOICES, canned.TWO_CHOICES_CHUNKS,
                             {"n": 2, "logprobs": True, "top_logprobs": 1}),
    "refusal": (canned.REFUSAL, canned.REFUSAL_CHUNKS, {}),
    "text": (canned.FINAL, canned.FINAL_CHUNKS, {"max_completion_tokens": 64}),
}  # fmt: skip


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_whole_answer_reaches_the_client_unchanged(rig: Rig, scenario: str) -> None:
    completion, chunks, request = SCENARIOS[scenario]
    rig.upstream.script(canned.answering(completion, chunks))
    direct, via = both(rig, **request)
    assert dumped(via) == dumped(direct)
    assert via.model == "code" and via.model_extra["route"]["expert"] == "code"
    # Asked whole, sent upstream whole: the request is the client's, field for field.
    rig.same_requests()
    assert rig.sent()["stream"] is False


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_streamed_answer_reaches_the_client_chunk_for_chunk(rig: Rig, scenario: str) -> None:
    completion, chunks, request = SCENARIOS[scenario]
    rig.upstream.script(canned.answering(completion, chunks))
    options = {"stream": True, "stream_options": {"include_usage": True}, **request}
    direct, via = (list(stream) for stream in both(rig, **options))
    assert [dumped(c) for c in via] == [dumped(c) for c in direct]
    assert via[0].model_extra["route"]["expert"] == "code"


def test_the_client_reassembles_streamed_tool_calls_exactly(rig: Rig) -> None:
    rig.upstream.script(canned.answering(canned.TOOL_CALLS, canned.TOOL_CALL_CHUNKS))
    tools = [canned.WEATHER_TOOL, canned.TIME_TOOL]
    finals = []
    for client, model in ((rig.direct, canned.MODEL), (rig.gateway, "code")):
        with client.chat.completions.stream(model=model, messages=MESSAGES, tools=tools) as s:
            finals.append(s.get_final_completion())
    direct, via = finals
    assert dumped(via) == dumped(direct)
    calls = via.choices[0].message.tool_calls
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
        ("call_weather_1", "get_weather", '{"city": "Oslo"}'),
        ("call_time_2", "get_time", '{"tz": "CET"}'),
    ]


def test_usage_chunk_only_when_the_client_asks(rig: Rig) -> None:
    rig.upstream.script(canned.answering(canned.FINAL, canned.FINAL_CHUNKS))
    chunks = list(rig.gateway.chat.completions.create(model="code", messages=MESSAGES,
                                                      stream=True))  # fmt: skip
    assert all(c.usage is None for c in chunks) and all(c.choices for c in chunks)
    # The gateway asked for usage anyway (token budgets count it).
    assert rig.sent()["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("status", sorted(canned.ERRORS))
def test_upstream_errors_keep_status_body_and_retry_after(rig: Rig, status: int) -> None:
    rig.upstream.script(canned.failing(status))
    caught = []
    for client, model in ((rig.direct, canned.MODEL), (rig.gateway, "code")):
        with pytest.raises(openai.APIStatusError) as error:
            client.chat.completions.create(model=model, messages=MESSAGES)
        caught.append(error.value)
    direct, via = caught
    assert type(via) is type(direct)
    assert (via.status_code, via.body, via.code, via.param, via.type) == (
        direct.status_code, direct.body, direct.code, direct.param, direct.type
    )  # fmt: skip
    assert via.response.headers.get("retry-after") == direct.response.headers.get("retry-after")
    assert via.response.headers["x-route-expert"] == "code"


def test_a_streamed_request_fails_with_the_upstream_status_before_any_chunk(rig: Rig) -> None:
    rig.upstream.script(canned.failing(429))
    with pytest.raises(openai.RateLimitError) as caught:
        list(rig.gateway.chat.completions.create(model="code", messages=MESSAGES, stream=True))
    assert caught.value.response.headers["retry-after"] == "7"


def test_tool_turns_go_upstream_in_their_whole_shape(rig: Rig) -> None:
    rig.upstream.script(canned.answering(canned.FINAL, canned.FINAL_CHUNKS))
    turns = [
        *MESSAGES,
        canned.TOOL_CALLS["choices"][0]["message"],
        {"role": "tool", "tool_call_id": "call_weather_1", "content": '{"temp_c": 4}'},
        {"role": "tool", "tool_call_id": "call_time_2",
         "content": [{"type": "text", "text": "09:00"}]},
    ]  # fmt: skip
    tools = [canned.WEATHER_TOOL, canned.TIME_TOOL]
    direct, via = both(rig, messages=turns, tools=tools, tool_choice="auto")
    assert dumped(via) == dumped(direct)
    sent = rig.same_requests()
    assert sent["messages"] == turns  # developer role, name, tool_calls, tool_call_id, parts


def test_images_and_audio_parts_pass_through(rig: Rig) -> None:
    rig.upstream.script(canned.answering(canned.FINAL, canned.FINAL_CHUNKS))
    parts = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=",
                                            "detail": "low"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    ]  # fmt: skip
    messages = [{"role": "user", "content": parts}]
    direct, via = both(rig, messages=messages)
    assert dumped(via) == dumped(direct)
    assert rig.sent()["messages"] == messages
    parts[0]["text"] = "What weather is in this picture?"
    # The router reads the text, among the experts that take images and audio.
    routed = rig.gateway.chat.completions.create(model="auto", messages=messages)
    assert routed.model_extra["route"]["expert"] == "code"
    with pytest.raises(openai.BadRequestError, match="cannot take images and audio"):
        rig.gateway.chat.completions.create(model="calculator", messages=messages)


def test_vllm_parameters_pass_through_as_given(rig: Rig) -> None:
    rig.upstream.script(canned.answering(canned.FINAL, canned.FINAL_CHUNKS))
    extra = {
        "top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1, "prompt_logprobs": 2,
        "structured_outputs": {"choice": ["yes", "no"]},
        "chat_template_kwargs": {"enable_thinking": False},
    }  # fmt: skip
    both(rig, max_completion_tokens=33, extra_body=extra)
    sent = rig.same_requests()
    assert sent["max_completion_tokens"] == 33 and "max_tokens" not in sent


def test_every_body_and_chunk_follows_openais_spec(rig: Rig) -> None:
    for name in sorted(SCENARIOS):
        completion, chunks, request = SCENARIOS[name]
        validate_chat_completion(completion)  # the upstream's answer does,
        for chunk in chunks:
            validate_chat_chunk(chunk)
        rig.upstream.script(canned.answering(completion, chunks))
        validate_chat_completion(raw_body(rig, **request))  # so the gateway's must
        for chunk in raw_chunks(rig, stream_options={"include_usage": True}, **request):
            validate_chat_chunk(chunk)
    # Answers the gateway writes itself: a tool's text, and a clarification question.
    text = [{"role": "user", "content": "compute 3 * 4"}]
    validate_chat_completion(raw_body(rig, model="calculator", messages=text))
    for chunk in raw_chunks(rig, model="calculator", messages=text):
        validate_chat_chunk(chunk)
    question = [{"role": "user", "content": "something else entirely"}]
    asked = raw_body(rig, model="auto", messages=question)
    assert asked["route"]["action"] == "clarify"
    validate_chat_completion(asked)
