"""Capabilities, tool-turn affinity and caching of whole answers, through the gateway.

The experts (tests/protocol/conftest.py): `code` takes everything (kind `openai`), `chat`
everything but `n` > 1 and logprobs, `calculator` text only (kind `tool`).
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.protocol import canned
from tests.protocol.conftest import Rig

TOOLS = [canned.WEATHER_TOOL, canned.TIME_TOOL]
NAMED = {"type": "function", "function": {"name": "get_weather"}}


def route(answer: Any) -> dict[str, Any]:
    found: dict[str, Any] = answer.model_extra["route"]
    return found


def calls(message: Any) -> list[tuple[str, str, str]]:
    """A message's tool calls, whatever class the client parsed them into."""
    return [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls]


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def ask(rig: Rig, messages: list[Any], model: str = "auto", **request: Any) -> Any:
    return rig.gateway.chat.completions.create(model=model, messages=messages, **request)


# -- capabilities -------------------------------------------------------------------------


def test_a_tool_request_routes_only_among_experts_that_take_tools(rig: Rig) -> None:
    rig.upstream.script(canned.answering(canned.TOOL_CALLS, canned.TOOL_CALL_CHUNKS))
    # The text is the calculator's, but the calculator cannot call functions.
    asked = ask(rig, user("compute 17 percent of 80"), tools=TOOLS)
    assert route(asked)["action"] == "clarify"
    assert set(route(asked)["options"]) <= {"code", "chat"}
    assert {c["expert"] for c in route(asked)["candidates"]} == {"code", "chat"}
    assert rig.scripted["calculator"].requests == [] or all(
        "tools" not in r.extra for r in rig.scripted["calculator"].requests
    )


@pytest.mark.parametrize("choice", ["required", NAMED], ids=["required", "named"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_forced_tool_call_is_never_answered_with_a_question(
    rig: Rig, choice: Any, stream: bool
) -> None:
    rig.upstream.script(canned.answering(canned.TOOL_CALLS, canned.TOOL_CALL_CHUNKS))
    before = len(rig.upstream.requests)
    answer = ask(rig, user("compute 17 percent of 80"), tools=TOOLS, tool_choice=choice,
                 stream=stream)  # fmt: skip
    first = next(iter(answer)) if stream else answer
    assert route(first)["action"] == "dispatch"
    assert route(first)["expert"] in {"code", "chat"}
    assert route(first)["reason"] == "unasked_no_match"
    assert len(rig.upstream.requests) == before + 1
    assert rig.sent()["tool_choice"] == choice


def test_an_expert_that_cannot_take_the_request_is_a_400_naming_those_that_can(
    rig: Rig,
) -> None:
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("calculator", {"tools": TOOLS}, "take tools: chat, code"),
        ("calculator", {"n": 2}, "take n: code"),
        ("chat", {"logprobs": True}, "take logprobs: code"),
    ]
    for model, request, able in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            ask(rig, user("compute 2 + 2"), model=model, **request)
        error = caught.value.body
        assert isinstance(error, dict)
        assert error["code"] == "unsupported_capability" and error["param"] == "model"
        assert f"expert '{model}' cannot take" in error["message"]
        assert able in error["message"]


def test_a_request_only_one_expert_can_take_goes_there_without_a_question(rig: Rig) -> None:
    rig.upstream.script(canned.answering(canned.TWO_CHOICES, canned.TWO_CHOICES_CHUNKS))
    # The text routes nowhere (it would get a question); only `code` gives two choices.
    answer = ask(rig, user("something else entirely"), n=2)
    assert (route(answer)["expert"], route(answer)["reason"]) == ("code", "only_capable")
    assert len(answer.choices) == 2


# -- tool-turn affinity ----------------------------------------------------------------------


def test_tool_results_go_back_to_the_expert_that_made_the_calls(rig: Rig) -> None:
    rig.upstream.script(
        canned.in_turns(
            canned.answering(canned.TOOL_CALLS, canned.TOOL_CALL_CHUNKS),
            canned.answering(canned.FINAL, canned.FINAL_CHUNKS),
        )
    )
    # The first turn is `chat`'s (named), although its text routes to `code`.
    first = ask(rig, canned.MESSAGES, model="chat", tools=TOOLS)
    calls = first.choices[0].message.tool_calls
    results = [
        {"role": "tool", "tool_call_id": call.id, "content": "4 °C"} for call in calls
    ]
    turns = [*canned.MESSAGES, first.choices[0].message.model_dump(exclude_none=True), *results]
    second = ask(rig, turns, tools=TOOLS)
    assert (route(second)["expert"], route(second)["reason"]) == ("chat", "tool_affinity")
    assert second.choices[0].message.content == "It is 4 °C in Oslo."


def test_tool_results_of_unknown_calls_are_routed_but_never_asked_about(rig: Rig) -> None:
    rig.upstream.script(canned.answering(canned.FINAL, canned.FINAL_CHUNKS))
    turns = [
        *user("something else entirely"),
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_unknown", "type": "function",
             "function": {"name": "get_time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_unknown", "content": "09:00"},
    ]  # fmt: skip
    answer = ask(rig, turns, tools=TOOLS)
    assert route(answer)["action"] == "dispatch"
    assert route(answer)["expert"] in {"code", "chat"}


# -- caching ---------------------------------------------------------------------------------

BASE: dict[str, Any] = {"tools": TOOLS, "temperature": 0}


def cached(rig: Rig, messages: list[Any] | None = None, **request: Any) -> str | None:
    answer = ask(rig, messages or user("Weather in Oslo?"), model="code", **request)
    kind: str | None = route(answer)["cached"]
    return kind


def test_a_cached_tool_call_answer_replays_exactly_whole_and_streamed(rig: Rig) -> None:
    rig.upstream.script(canned.answering(canned.TOOL_CALLS, canned.TOOL_CALL_CHUNKS))
    messages = user("Weather in Oslo, cached?")
    direct = rig.direct.chat.completions.create(model=canned.MODEL, messages=messages, **BASE)
    assert route(ask(rig, messages, model="code", **BASE))["cached"] is None
    whole = ask(rig, messages, model="code", **BASE)
    assert route(whole)["cached"] == "exact"
    ours = {"id", "created", "model", "route"}
    assert whole.model_dump(exclude=ours) == direct.model_dump(exclude=ours)
    usage = {"include_usage": True}
    with rig.gateway.chat.completions.stream(
        model="code", messages=messages, stream_options=usage, **BASE
    ) as s:
        replayed = s.get_final_completion()
    assert route(replayed)["cached"] == "exact"
    assert calls(replayed.choices[0].message) == calls(direct.choices[0].message)
    assert replayed.choices[0].finish_reason == "tool_calls"
    assert replayed.usage == direct.usage


def test_a_streamed_tool_call_answer_is_cached_whole(rig: Rig) -> None:
    rig.upstream.script(canned.answering(canned.TOOL_CALLS, canned.TOOL_CALL_CHUNKS))
    messages = user("Weather in Oslo, streamed then cached?")
    with rig.gateway.chat.completions.stream(model="code", messages=messages, **BASE) as s:
        streamed = s.get_final_completion()
    assert route(streamed)["cached"] is None
    whole = ask(rig, messages, model="code", **BASE)
    assert route(whole)["cached"] == "exact"
    got, first = whole.choices[0].message, streamed.choices[0].message
    assert calls(got) == calls(first) and len(calls(got)) == 2
    assert got.model_extra["reasoning_content"] == "Two lookups are needed."
    assert whole.model_extra["unknown_top"] == {"nested": [1]}
    assert whole.choices[0].finish_reason == "tool_calls"


def test_the_cache_key_covers_every_field_that_changes_the_answer(rig: Rig) -> None:
    rig.upstream.script(canned.answering(canned.TOOL_CALLS, canned.TOOL_CALL_CHUNKS))
    assert cached(rig, **BASE) is None
    assert cached(rig, **BASE) == "exact"
    image = [{"role": "user", "content": [
        {"type": "text", "text": "Weather in Oslo?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]  # fmt: skip
    variants: list[tuple[list[Any] | None, dict[str, Any]]] = [
        (None, {**BASE, "tools": TOOLS[:1]}),
        (None, {**BASE, "tool_choice": "required"}),
        (None, {**BASE, "tool_choice": NAMED}),
        (None, {**BASE, "parallel_tool_calls": False}),
        (None, {**BASE, "response_format": {"type": "json_object"}}),
        (None, {**BASE, "n": 2}),
        (None, {**BASE, "logprobs": True}),
        (None, {**BASE, "max_completion_tokens": 7}),
        (None, {**BASE, "extra_body": {"min_p": 0.1}}),
        (image, BASE),
        ([{**user("Weather in Oslo?")[0], "name": "kari"}], BASE),
    ]
    for messages, request in variants:
        assert cached(rig, messages, **request) is None, request
    # Only repeatable requests are cached: no temperature is OpenAI's default of 1, and
    # an openai expert does not promise that a seed repeats (unless configured so).
    for request in ({"tools": TOOLS}, {"tools": TOOLS, "seed": 7, "temperature": 0.7}):
        assert cached(rig, **request) is None
        assert cached(rig, **request) is None


def test_similar_text_never_answers_a_tool_request(rig: Rig) -> None:
    rig.upstream.script(canned.answering(canned.FINAL, canned.FINAL_CHUNKS))
    # Same keywords, other words: a plain request hits the semantic cache...
    assert cached(rig, user("poem poem please"), temperature=0) is None
    assert cached(rig, user("a poem poem"), temperature=0) == "semantic"
    # ...a tool request never does.
    assert cached(rig, user("python weather"), **BASE) is None
    assert cached(rig, user("weather python!"), **BASE) is None


def test_the_route_endpoint_takes_every_part_and_ranks_capable_experts(rig: Rig) -> None:
    parts = [{"type": "text", "text": "compute the weather in this picture"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]  # fmt: skip
    response = rig.http.post("/v1/route", json={"messages": [{"role": "user", "content": parts}]})
    assert response.status_code == 200, response.text
    decision = response.json()["route"]
    assert {c["expert"] for c in decision["candidates"]} == {"code", "chat"}
    assert decision["expert"] == "code"
