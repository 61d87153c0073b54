"""Timeouts of an answer: its start is the first chunk of any kind (a role, a tool call,
reasoning), not the first text; silences between chunks and the whole answer have their
own limits; a non-streamed answer comes whole, within the total."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.protocol import canned
from tests.protocol.conftest import rig_for
from tests.support.upstream import Stream, delayed, json_reply

MESSAGES: list[Any] = [{"role": "user", "content": "Weather in Oslo?"}]
PAUSE_S = 0.15
TOOLS = [canned.WEATHER_TOOL]


def slow_tool_call() -> Stream:
    """A role chunk at once, then a tool call's arguments a piece every PAUSE_S (no text)."""
    pieces = [json.dumps(c) for c in canned.TOOL_CALL_CHUNKS[:-1]]
    return Stream(*(f"data: {p}\n\n".encode() for p in pieces), b"data: [DONE]\n\n",
                  pause_s=PAUSE_S)  # fmt: skip


def test_a_long_tool_call_is_not_cut_off_while_chunks_keep_coming() -> None:
    # 9 chunks, 1.2 s in all, never more than PAUSE_S apart: within a 0.5 s timeout_s.
    with rig_for(", timeout_s: 0.5") as rig:
        rig.upstream.script(slow_tool_call())
        answer = rig.gateway.chat.completions.create(
            model="code", messages=MESSAGES, tools=TOOLS, stream=True
        )
        chunks = list(answer)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_the_whole_answer_has_its_own_limit() -> None:
    with rig_for(", timeout_s: 0.5, total_timeout_s: 0.6") as rig:
        rig.upstream.script(slow_tool_call())
        answer = rig.gateway.chat.completions.create(
            model="code", messages=MESSAGES, tools=TOOLS, stream=True
        )
        with pytest.raises(openai.APIError, match="timed out"):
            list(answer)


def test_a_whole_answer_may_take_longer_than_timeout_s_but_not_the_total() -> None:
    with rig_for(", timeout_s: 0.3, total_timeout_s: 0.9") as rig:
        rig.upstream.script(delayed(0.6, json_reply(canned.FINAL)))
        answer = rig.gateway.chat.completions.create(model="code", messages=MESSAGES)
        assert answer.choices[0].message.content == "It is 4 °C in Oslo."
        rig.upstream.script(delayed(2.0, json_reply(canned.FINAL)))
        with pytest.raises(openai.APIStatusError) as caught:
            rig.gateway.chat.completions.create(model="code", messages=MESSAGES)
        assert caught.value.status_code == 504
