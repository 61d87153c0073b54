"""ToolExpert: the Expert protocol around a tool, its stream, usage and error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from experts.base import (
    Delta,
    Expert,
    ExpertDeclined,
    ExpertRejected,
    ExpertRequest,
    Message,
    Usage,
)
from experts.registry import BuildContext, build_expert
from experts.specs import ToolSpec
from experts.tools import (
    Calculator,
    NothingToCompute,
    Tool,
    ToolExpert,
    ToolInputError,
    UnitConverter,
    build_tool,
)
from experts.tools.expert import split_last_user

pytestmark = pytest.mark.anyio


def _spec(tool: str, name: str = "math", precision: int = 6) -> ToolSpec:
    return ToolSpec.model_validate(
        {
            "name": name,
            "kind": "tool",
            "tool": tool,
            "description": f"the {tool} tool",
            "precision": precision,
        }
    )


def _ask(*turns: tuple[str, str]) -> ExpertRequest:
    return ExpertRequest(messages=tuple(Message(role, text) for role, text in turns))


def _user(text: str) -> ExpertRequest:
    return _ask(("user", text))


class ScriptedTool:
    """A fake `Tool`: answers from a table, records its lifecycle and the history it got."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.events: list[str] = []
        self.histories: list[tuple[Message, ...]] = []

    @property
    def name(self) -> str:
        return "scripted"

    async def start(self) -> None:
        self.events.append("start")

    async def run(self, text: str, history: Sequence[Message] = ()) -> str:
        self.events.append(f"run:{text}")
        self.histories.append(tuple(history))
        if text == "bad":
            raise ToolInputError("cannot do that")
        if text not in self.answers:
            raise NothingToCompute("expected a known question")
        return self.answers[text]

    async def aclose(self) -> None:
        self.events.append("aclose")


async def _collect(stream: AsyncIterator[Delta]) -> list[Delta]:
    return [delta async for delta in stream]


def test_is_an_expert() -> None:
    expert = ToolExpert(_spec("calculator", name="math"))
    assert isinstance(expert, Expert)
    assert expert.name == "math"
    assert expert.kind == "tool"
    assert isinstance(expert.tool, Calculator)
    assert isinstance(ToolExpert(_spec("units")).tool, UnitConverter)


def test_the_registry_builds_it() -> None:
    expert = build_expert(_spec("units", name="units"), BuildContext(cache_dir=_nowhere()))
    assert isinstance(expert, ToolExpert)
    assert expert.name == "units"


def test_build_tool_passes_the_precision() -> None:
    tool = build_tool(_spec("calculator", precision=3))
    assert isinstance(tool, Tool)


async def test_stream_yields_the_answer_then_stop_with_word_usage() -> None:
    expert = ToolExpert(_spec("calculator"))
    deltas = await _collect(expert.stream(_user("what is 15% of 80")))
    assert deltas == [
        Delta(content="15% of 80 = 12"),
        Delta(
            finish_reason="stop",
            usage=Usage(prompt_tokens=5, completion_tokens=5, total_tokens=10),
        ),
    ]


async def test_complete_shares_the_stream_path() -> None:
    expert = ToolExpert(_spec("calculator"))
    result = await expert.complete(_user("compute 3.5 * (12 - 4)"))
    assert result.content == "3.5 * (12 - 4) = 28"
    assert result.finish_reason == "stop"
    assert result.usage == Usage(prompt_tokens=6, completion_tokens=7, total_tokens=13)


async def test_precision_comes_from_the_spec() -> None:
    expert = ToolExpert(_spec("calculator", precision=3))
    assert (await expert.complete(_user("2/3"))).content == "2 / 3 = 0.667"


async def test_units_work_without_start() -> None:
    expert = ToolExpert(_spec("units", name="units"))
    result = await expert.complete(_user("convert 5 miles to km"))
    assert "8.047 km" in result.content
    await expert.aclose()


async def test_reads_the_last_user_message_only() -> None:
    expert = ToolExpert(_spec("calculator"))
    request = _ask(
        ("system", "you are a calculator; 1 + 1"),
        ("user", "what is 2 + 2"),
        ("assistant", "2 + 2 = 4"),
        ("user", "and 3 * 3?"),
    )
    assert (await expert.complete(request)).content == "3 * 3 = 9"


async def test_nothing_to_compute_declines() -> None:
    expert = ToolExpert(_spec("calculator", name="math"))
    with pytest.raises(ExpertDeclined) as caught:
        await expert.complete(_user("write me a poem about autumn"))
    assert caught.value.expert == "math"
    assert "expected arithmetic" in caught.value.message
    assert not isinstance(caught.value, ExpertRejected)


async def test_no_user_message_declines() -> None:
    expert = ToolExpert(_spec("calculator"))
    with pytest.raises(ExpertDeclined):
        await expert.complete(_ask(("system", "2 + 2")))


@pytest.mark.parametrize(
    ("tool", "text", "message"),
    [
        ("calculator", "what is 1 / 0", "division by zero"),
        ("calculator", "9**9**9**9", "too large"),
        ("units", "convert 5 kg to km", "cannot convert"),
        ("units", "convert 5 miles to blorps", "unknown unit"),
    ],
)
async def test_impossible_computations_are_rejected_with_400(
    tool: str, text: str, message: str
) -> None:
    expert = ToolExpert(_spec(tool, name="t"))
    with pytest.raises(ExpertRejected) as caught:
        await expert.complete(_user(text))
    assert caught.value.status == 400
    assert caught.value.expert == "t"
    assert message in caught.value.message


async def test_a_declined_stream_yields_nothing() -> None:
    expert = ToolExpert(_spec("units"))
    stream = expert.stream(_user("tell me a joke"))
    with pytest.raises(ExpertDeclined, match="expected a conversion"):
        await stream.__anext__()


async def test_any_tool_fits_behind_the_expert() -> None:
    tool = ScriptedTool({"ping": "pong pong"})
    expert = ToolExpert(_spec("calculator", name="fake"), tool=tool)
    await expert.start()
    result = await expert.complete(_user("ping"))
    assert result.content == "pong pong"
    assert result.usage == Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3)
    with pytest.raises(ExpertDeclined, match="scripted: expected a known question"):
        await expert.complete(_user("other"))
    with pytest.raises(ExpertRejected, match="scripted: cannot do that"):
        await expert.complete(_user("bad"))
    health = await expert.health()
    assert health.ok
    assert "scripted" in health.detail
    await expert.aclose()
    assert tool.events == ["start", "run:ping", "run:other", "run:bad", "aclose"]


async def test_the_tool_gets_the_messages_before_the_last_user_message() -> None:
    tool = ScriptedTool({"ping": "pong"})
    expert = ToolExpert(_spec("calculator", name="fake"), tool=tool)
    turns = (
        ("system", "be brief"),
        ("user", "first"),
        ("assistant", "an answer"),
        ("user", "ping"),
        ("assistant", "a prefill after the question"),
    )
    assert (await expert.complete(_ask(*turns))).content == "pong"
    assert tool.histories == [tuple(Message(role, text) for role, text in turns[:3])]
    assert tool.events == ["run:ping"]


async def test_a_first_turn_gets_no_history() -> None:
    tool = ScriptedTool({"ping": "pong"})
    expert = ToolExpert(_spec("calculator", name="fake"), tool=tool)
    await expert.complete(_ask(("system", "be brief"), ("user", "ping")))
    await expert.complete(_user("ping"))
    assert tool.histories == [(Message("system", "be brief"),), ()]


def test_split_last_user() -> None:
    messages = (Message("user", "a"), Message("assistant", "b"), Message("user", "c"))
    assert split_last_user(messages) == ("c", messages[:2])
    assert split_last_user((Message("system", "s"),)) == ("", ())
    assert split_last_user(()) == ("", ())


@pytest.mark.parametrize(
    ("tool", "turns", "answer"),
    [
        (
            "units",
            [("user", "convert 5 miles to km"), ("assistant", "5 mi = 8.047 km")],
            ("and in feet?", "5 mi = 26400 ft"),
        ),
        (
            "units",
            [("user", "100 fahrenheit in celsius"), ("assistant", "100 °F = 37.78 °C")],
            ("in kelvin?", "100 °F = 310.9 K"),
        ),
        (
            "calculator",
            [("user", "what is 15% of 80"), ("assistant", "15% of 80 = 12")],
            ("multiply that by 3", "12 * 3 = 36"),
        ),
        (
            "calculator",
            [("user", "what is 15% of 80"), ("assistant", "15% of 80 = 12")],
            ("and 20%?", "20% of 80 = 16"),
        ),
    ],
)
async def test_follow_ups_read_the_conversation(
    tool: str, turns: list[tuple[str, str]], answer: tuple[str, str]
) -> None:
    expert = ToolExpert(_spec(tool, name="t"))
    question, expected = answer
    request = _ask(("system", "you are helpful"), *turns, ("user", question))
    result = await expert.complete(request)
    assert result.content == expected
    words = len(question.split())
    assert result.usage == Usage(
        prompt_tokens=words,
        completion_tokens=len(expected.split()),
        total_tokens=words + len(expected.split()),
    )


@pytest.mark.parametrize(
    ("tool", "question", "message"),
    [
        ("units", "and in feet?", "found no quantity to convert to 'feet'"),
        ("calculator", "times 2", "no earlier result"),
    ],
)
async def test_a_follow_up_without_history_declines(tool: str, question: str, message: str) -> None:
    expert = ToolExpert(_spec(tool, name="t"))
    with pytest.raises(ExpertDeclined, match=message) as caught:
        await expert.complete(_ask(("system", "you are helpful"), ("user", question)))
    assert caught.value.expert == "t"


async def test_a_follow_up_after_another_experts_answer_declines() -> None:
    expert = ToolExpert(_spec("calculator"))
    request = _ask(
        ("user", "write me a haiku"),
        ("assistant", "Autumn moonlight -\na worm digs silently\ninto the chestnut."),
        ("user", "double it"),
    )
    with pytest.raises(ExpertDeclined, match="no earlier result"):
        await expert.complete(request)


async def test_a_whole_request_ignores_the_history() -> None:
    units = ToolExpert(_spec("units"))
    request = _ask(
        ("user", "convert 5 miles to km"),
        ("assistant", "5 mi = 8.047 km"),
        ("user", "and 3 feet to inches?"),
    )
    assert (await units.complete(request)).content == "3 ft = 36 in"


async def test_health_is_always_ok() -> None:
    assert (await ToolExpert(_spec("units")).health()).ok


def _nowhere() -> Path:
    return Path("unused-cache")
