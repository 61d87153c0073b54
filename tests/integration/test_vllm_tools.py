"""A two-turn tool loop through taskgate against the real vLLM server, with the openai client.

Turn 1 forces a call with a named `tool_choice`: vLLM's guided decoding makes even
SmolLM2-135M write arguments that match the schema, and the call must reach the client
as vLLM made it, whole or streamed. Turn 2 brings the tool's result back with
`model="auto"`: the gateway must send it to the expert that made the call (route reason
`tool_affinity`), although the conversation's text routes elsewhere, and vLLM answers
with text.

vLLM 0.32 takes a named `tool_choice` only with a tool parser, which it builds only with
auto tool choice on: the session server runs with `tests.support.vllm.TOOL_ARGS`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.gateway import gateway_process
from tests.support.vllm import TOOL_ARGS, VLLMServer

pytestmark = pytest.mark.integration

# `weather` is the expert whose description the question matches; `smol` is the one named
# on turn 1. Both are the same vLLM server; only tool affinity sends turn 2 to `smol`.
CONFIG = """
auth: none
experts:
  - name: smol
    kind: openai
    base_url: {base_url}
    model: {model}
    description: general chat with a small language model
    examples: [tell me a short joke, write a haiku about autumn, name three colours]
  - name: weather
    kind: openai
    base_url: {base_url}
    model: {model}
    description: weather reports and forecasts for cities
    examples: [what is the weather in Paris, will it rain in Oslo tomorrow, weather in Rome]
  - name: calculator
    kind: tool
    tool: calculator
    description: arithmetic with numbers
    examples: [what is 15% of 80, compute 3.5 * (12 - 4)]
"""

QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 24}},
            "required": ["city"],
        },
    },
}
NAMED = {"type": "function", "function": {"name": "get_weather"}}
RESULT = "Sunny, 21 degrees Celsius."
# Greedy and seeded: the direct and the gateway's requests decode the same tokens.
SAMPLING: dict[str, Any] = {"temperature": 0, "seed": 7, "max_completion_tokens": 48}
# Every gateway call must reach vLLM, not replay a cached answer.
NO_CACHE = {"Cache-Control": "no-cache"}


@dataclass(frozen=True)
class Rig:
    gateway: openai.OpenAI
    direct: openai.OpenAI
    model: str  # vLLM's served model name


@pytest.fixture(scope="module")
def rig(vllm_server: VLLMServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    config = Path(tmp_path_factory.mktemp("cfg")) / "taskgate.yaml"
    config.write_text(CONFIG.format(base_url=vllm_server.base_url, model=vllm_server.model))
    with gateway_process(config) as url:
        yield Rig(
            gateway=openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0),
            direct=openai.OpenAI(base_url=vllm_server.base_url, api_key="unused", max_retries=0),
            model=vllm_server.model,
        )


def turn_one(client: openai.OpenAI, model: str) -> Any:
    """The forced call, non-streamed."""
    try:
        return client.chat.completions.create(
            model=model, messages=QUESTION, tools=[WEATHER_TOOL], tool_choice=NAMED,
            extra_headers=NO_CACHE, **SAMPLING,
        )  # fmt: skip
    except openai.BadRequestError as exc:
        _unsupported(exc)
        raise


def turn_one_streamed(client: openai.OpenAI, model: str) -> tuple[list[Any], Any]:
    """The forced call, streamed: its chunks as they came, and the completion they spell."""
    try:
        with client.chat.completions.stream(
            model=model, messages=QUESTION, tools=[WEATHER_TOOL], tool_choice=NAMED,
            extra_headers=NO_CACHE, **SAMPLING,
        ) as stream:  # fmt: skip
            chunks = [event.chunk for event in stream if event.type == "chunk"]
            return chunks, stream.get_final_completion()
    except openai.BadRequestError as exc:
        _unsupported(exc)
        raise


def _unsupported(exc: openai.BadRequestError) -> None:
    if "tool-call-parser" not in str(exc):
        return
    why = f"the vLLM server takes no named tool_choice; start it with {' '.join(TOOL_ARGS)}"
    if os.environ.get("TASKGATE_VLLM_URL"):
        pytest.skip(f"{why} ({exc})")  # an outside server, started without them
    pytest.fail(f"{why} ({exc})")


@pytest.fixture(scope="module")
def whole(rig: Rig) -> Any:
    return turn_one(rig.gateway, "smol")


@pytest.fixture(scope="module")
def streamed(rig: Rig) -> tuple[list[Any], Any]:
    return turn_one_streamed(rig.gateway, "smol")


def route(answer: Any) -> dict[str, Any]:
    found: dict[str, Any] = answer.model_extra["route"]
    return found


def the_call(answer: Any) -> tuple[str, dict[str, Any]]:
    """The answer's one tool call: its name and its arguments, parsed."""
    calls = answer.choices[0].message.tool_calls
    assert calls is not None and len(calls) == 1, answer
    arguments = json.loads(calls[0].function.arguments)
    assert isinstance(arguments, dict), arguments
    return calls[0].function.name, arguments


def argument_pieces(chunks: list[Any]) -> list[str]:
    return [
        call.function.arguments
        for chunk in chunks
        for choice in chunk.choices
        for call in choice.delta.tool_calls or []
        if call.function is not None and call.function.arguments
    ]


def continued(answer: Any) -> list[Any]:
    """The conversation with the assistant's calls, as the client got them, and their results."""
    message = answer.choices[0].message
    calls = [
        {"id": c.id, "type": "function",
         "function": {"name": c.function.name, "arguments": c.function.arguments}}
        for c in message.tool_calls
    ]  # fmt: skip
    results = [{"role": "tool", "tool_call_id": c["id"], "content": RESULT} for c in calls]
    return [*QUESTION, {"role": "assistant", "content": message.content, "tool_calls": calls},
            *results]  # fmt: skip


# -- turn 1: the named call ------------------------------------------------------------------


def test_a_named_tool_choice_gives_one_valid_get_weather_call(whole: Any) -> None:
    name, arguments = the_call(whole)
    assert name == "get_weather"
    assert isinstance(arguments["city"], str) and 0 < len(arguments["city"]) <= 24
    # vLLM, like OpenAI, finishes a named call with "stop" ("tool_calls" is for auto/required).
    assert whole.choices[0].finish_reason == "stop"
    assert whole.choices[0].message.tool_calls[0].type == "function"
    assert whole.model == "smol"
    assert (route(whole)["expert"], route(whole)["reason"]) == ("smol", "explicit")


def test_the_call_through_taskgate_is_the_call_vllm_makes(whole: Any, rig: Rig) -> None:
    theirs = turn_one(rig.direct, rig.model)
    assert the_call(whole) == the_call(theirs)
    ours, their = whole.choices[0].message, theirs.choices[0].message
    # byte for byte, whitespace included
    assert ours.tool_calls[0].function.arguments == their.tool_calls[0].function.arguments
    assert whole.choices[0].finish_reason == theirs.choices[0].finish_reason
    assert whole.choices[0].message.content == theirs.choices[0].message.content
    assert whole.usage.model_dump(exclude_none=True) == theirs.usage.model_dump(exclude_none=True)


def test_a_streamed_call_is_vllms_stream_and_the_whole_call(
    streamed: tuple[list[Any], Any], whole: Any, rig: Rig
) -> None:
    chunks, final = streamed
    their_chunks, their_final = turn_one_streamed(rig.direct, rig.model)
    assert argument_pieces(chunks) == argument_pieces(their_chunks)
    assert len(argument_pieces(chunks)) > 1  # relayed piece by piece, not re-chunked
    assert the_call(final) == the_call(their_final) == the_call(whole)
    assert final.choices[0].finish_reason == their_final.choices[0].finish_reason
    assert final.choices[0].finish_reason == whole.choices[0].finish_reason
    assert route(chunks[0])["expert"] == "smol"


# -- turn 2: the result goes back to the expert that made the call ------------------------------


def test_the_tool_result_goes_back_to_vllm_and_gets_a_text_answer(whole: Any, rig: Rig) -> None:
    answer = rig.gateway.chat.completions.create(
        model="auto", messages=continued(whole), tools=[WEATHER_TOOL], tool_choice="none",
        extra_headers=NO_CACHE, **SAMPLING,
    )  # fmt: skip
    assert (route(answer)["expert"], route(answer)["reason"]) == ("smol", "tool_affinity")
    assert answer.model == "smol"
    choice = answer.choices[0]
    assert choice.finish_reason in ("stop", "length")
    assert not choice.message.tool_calls
    assert isinstance(choice.message.content, str) and choice.message.content.strip()


def test_a_streamed_tool_result_goes_back_to_vllm_and_streams_text(
    streamed: tuple[list[Any], Any], rig: Rig
) -> None:
    # Turn 1 streamed too: the gateway learns the call's id from the chunks it relayed.
    _, final = streamed
    chunks = list(
        rig.gateway.chat.completions.create(
            model="auto", messages=continued(final), tools=[WEATHER_TOOL], tool_choice="none",
            stream=True, extra_headers=NO_CACHE, **SAMPLING,
        )
    )  # fmt: skip
    assert (route(chunks[0])["expert"], route(chunks[0])["reason"]) == ("smol", "tool_affinity")
    assert {c.model for c in chunks} == {"smol"}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert not [c for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    finishes = [reason for reason in finishes if reason]
    assert len(finishes) == 1 and finishes[0] in ("stop", "length")
