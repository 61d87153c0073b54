"""langchain-openai's function calling through taskgate: `bind_tools` in a two-turn agent
loop, and structured output by function calling (which returns None when a gateway drops
the tool calls)."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from tests.protocol import canned
from tests.protocol.conftest import Rig


@tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    return f"4 °C in {city}"


@tool
def get_time(tz: str) -> str:
    """Local time in a time zone."""
    return f"09:00 {tz}"


class Weather(BaseModel):
    """The weather in a city."""

    city: str


def chat_model(rig: Rig, model: str, **options: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model=model, base_url=f"{rig.gateway.base_url}", api_key="k",  # type: ignore[arg-type]
        max_retries=0, **options,
    )  # fmt: skip


def test_bind_tools_agent_loop(rig: Rig) -> None:
    rig.upstream.script(
        canned.in_turns(
            canned.answering(canned.TOOL_CALLS, canned.TOOL_CALL_CHUNKS),
            canned.answering(canned.FINAL, canned.FINAL_CHUNKS),
        )
    )
    tools = {"get_weather": get_weather, "get_time": get_time}
    agent = chat_model(rig, "auto").bind_tools(list(tools.values()))
    messages: list[Any] = [HumanMessage("What is the weather in Oslo, and the time?")]
    first = agent.invoke(messages)
    assert [(c["name"], c["args"]) for c in first.tool_calls] == [
        ("get_weather", {"city": "Oslo"}),
        ("get_time", {"tz": "CET"}),
    ]
    assert first.response_metadata["finish_reason"] == "tool_calls"
    messages.append(first)
    for call in first.tool_calls:
        result = tools[call["name"]].invoke(call["args"])
        messages.append(ToolMessage(result, tool_call_id=call["id"]))
    second = agent.invoke(messages)
    assert second.content == "It is 4 °C in Oslo."
    assert second.tool_calls == []
    # The second turn reached the upstream with the tool turns whole.
    sent = rig.sent()["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "call_weather_1"
    assert [m.get("tool_call_id") for m in sent[2:]] == ["call_weather_1", "call_time_2"]


def test_bind_tools_streamed(rig: Rig) -> None:
    rig.upstream.script(canned.answering(canned.TOOL_CALLS, canned.TOOL_CALL_CHUNKS))
    agent = chat_model(rig, "code", streaming=True).bind_tools([get_weather, get_time])
    merged: Any = None
    for piece in agent.stream("What is the weather in Oslo, and the time?"):
        merged = piece if merged is None else merged + piece
    assert [(c["name"], c["args"]) for c in merged.tool_calls] == [
        ("get_weather", {"city": "Oslo"}),
        ("get_time", {"tz": "CET"}),
    ]


def test_structured_output_by_function_calling(rig: Rig) -> None:
    choice = canned.TOOL_CALLS["choices"][0]
    call = {"id": "call_w", "type": "function",
            "function": {"name": "Weather", "arguments": '{"city": "Oslo"}'}}
    message = {**choice["message"], "tool_calls": [call]}
    answer = {**canned.TOOL_CALLS, "choices": [{**choice, "message": message}]}
    rig.upstream.script(canned.answering(answer, canned.TOOL_CALL_CHUNKS))
    structured = chat_model(rig, "code").with_structured_output(
        Weather, method="function_calling"
    )
    assert structured.invoke("Weather in Oslo?") == Weather(city="Oslo")
    assert rig.sent()["tool_choice"]["function"]["name"] == "Weather"
