"""Calculator follow-ups: short turns that work on the previous result of the conversation."""

from __future__ import annotations

import pytest

from experts.base import Message
from experts.tools.base import MAX_HISTORY_TURNS, NothingToCompute, ToolInputError
from experts.tools.calc_followups import (
    ChangeResult,
    NewShare,
    OnResult,
    Result,
    Substitute,
    read_followup,
    resolve,
    results,
)
from experts.tools.calculator import Calculator

pytestmark = pytest.mark.anyio


def _turns(*turns: tuple[str, str]) -> tuple[Message, ...]:
    return tuple(Message(role, text) for role, text in turns)


FIFTEEN_PERCENT = _turns(
    ("system", "you are a calculator"),
    ("user", "what is 15% of 80"),
    ("assistant", "15% of 80 = 12"),
)


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("times 2", "12 * 2 = 24"),
        ("multiply that by 3", "12 * 3 = 36"),
        ("double it", "12 * 2 = 24"),
        ("triple it!", "12 * 3 = 36"),
        ("halve it", "12 / 2 = 6"),
        ("half of that", "12 / 2 = 6"),
        ("now add 5", "12 + 5 = 17"),
        ("add 5 to it", "12 + 5 = 17"),
        ("minus 4", "12 - 4 = 8"),
        ("subtract 4 from that", "12 - 4 = 8"),
        ("divide it by 4", "12 / 4 = 3"),
        ("and divided by 4?", "12 / 4 = 3"),
        ("what's that squared", "12^2 = 144"),
        ("what's that squared?", "12^2 = 144"),
        ("squared", "12^2 = 144"),
        ("square it", "12^2 = 144"),
        ("cube it", "12^3 = 1728"),
        ("raise it to the power of 3", "12^3 = 1728"),
        ("and to the 3rd power", "12^3 = 1728"),
        ("what is the square root of that", "sqrt(12) = 3.4641"),
        ("and the square root?", "sqrt(12) = 3.4641"),
        ("plus 10%", "12 increased by 10% = 13.2"),
        ("add 10% to it", "12 increased by 10% = 13.2"),
        ("increase it by 10%", "12 increased by 10% = 13.2"),
        ("minus 10 percent please", "12 decreased by 10% = 10.8"),
        ("that minus 25%", "12 decreased by 25% = 9"),
        ("what's 10% of that", "10% of 12 = 1.2"),
        ("what's 10% of that plus 5", "10% of 12 + 5 = 6.2"),
        ("x 3", "12 * 3 = 36"),
        ("* 3", "12 * 3 = 36"),
        ("/ 4", "12 / 4 = 3"),
        ("- 4", "12 - 4 = 8"),
        ("^2", "12^2 = 144"),
        ("mod 5", "12 % 5 = 2"),
        ("times 2 plus 3", "12 * 2 + 3 = 27"),
        ("and 20%?", "20% of 80 = 16"),
        ("what about 25%", "25% of 80 = 20"),
        ("how about 12.5 percent?", "12.5% of 80 = 10"),
        ("20% instead", "20% of 80 = 16"),
    ],
)
async def test_follow_ups_on_the_previous_result(text: str, answer: str) -> None:
    assert await Calculator().run(text, FIFTEEN_PERCENT) == answer


@pytest.mark.parametrize(
    "text",
    ["times 2", "double it", "now add 5", "what's that squared", "divide it by 4"],
)
async def test_a_follow_up_without_history_declines(text: str) -> None:
    with pytest.raises(NothingToCompute, match=r"no earlier result.*expected arithmetic"):
        await Calculator().run(text)


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("and 20%?", "20% = 0.2"),
        ("plus 10%", "+10% = 0.1"),
        ("what's 10% of that", "10% = 0.1"),
    ],
)
async def test_without_history_a_follow_up_reads_as_a_first_turn(text: str, answer: str) -> None:
    assert await Calculator().run(text) == answer
    assert await Calculator().run(text, ()) == answer


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("and 3 * 3?", "3 * 3 = 9"),
        ("what is 2 + 2", "2 + 2 = 4"),
        ("what is 50%?", "50% = 0.5"),
        ("what is 2 + 2? is that right", "2 + 2 = 4"),
        ("increase 80 by 5%", "80 increased by 5% = 84"),
    ],
)
async def test_a_whole_request_ignores_the_history(text: str, answer: str) -> None:
    assert await Calculator().run(text, FIFTEEN_PERCENT) == answer


@pytest.mark.parametrize(
    "text",
    ["tell me a joke", "is that right?", "times banana", "add 5 to 3", "-4"],
)
async def test_other_messages_still_decline(text: str) -> None:
    with pytest.raises(NothingToCompute, match="expected arithmetic"):
        await Calculator().run(text, FIFTEEN_PERCENT)


async def test_the_most_recent_result_is_used() -> None:
    history = (
        *FIFTEEN_PERCENT,
        *_turns(("user", "times 2"), ("assistant", "12 * 2 = 24")),
    )
    assert await Calculator().run("halve it", history) == "24 / 2 = 12"
    # The percentage base stays that of the most recent percentage.
    assert await Calculator().run("and 20%?", history) == "20% of 80 = 16"


async def test_a_chain_of_percentages_keeps_its_base() -> None:
    history = (
        *FIFTEEN_PERCENT,
        *_turns(("user", "and 20%?"), ("assistant", "20% of 80 = 16")),
    )
    assert await Calculator().run("what about 50%", history) == "50% of 80 = 40"


async def test_answers_without_a_result_are_skipped() -> None:
    history = (
        *FIFTEEN_PERCENT,
        *_turns(
            ("user", "tell me a joke"),
            ("assistant", "Why did the chicken cross the road? To get to the other side."),
            ("user", "convert 5 miles to km"),
            ("assistant", "5 mi = 8.047 km"),
        ),
    )
    assert await Calculator().run("times 2", history) == "12 * 2 = 24"


async def test_only_assistant_turns_hold_results() -> None:
    history = _turns(("user", "2 + 2 = 4"), ("system", "1 + 1 = 2"))
    with pytest.raises(NothingToCompute, match="no earlier result"):
        await Calculator().run("times 2", history)


async def test_percentages_after_an_increase() -> None:
    history = _turns(("user", "increase 80 by 15%"), ("assistant", "80 increased by 15% = 92"))
    assert await Calculator().run("and 20%?", history) == "80 increased by 20% = 96"
    assert await Calculator().run("times 2", history) == "92 * 2 = 184"


async def test_a_new_share_needs_a_plain_percentage() -> None:
    # "15% of 80 + 1" is (15% of 80) + 1: there is no base to take 20% of.
    history = _turns(("user", "15% of 80 + 1"), ("assistant", "15% of 80 + 1 = 13"))
    assert await Calculator().run("and 20%?", history) == "20% = 0.2"
    history = _turns(("assistant", "(5 + 10)% of (80 + 20) = 15"))
    assert await Calculator().run("and 20%?", history) == "20% of (80 + 20) = 20"


@pytest.mark.parametrize(
    ("answer", "text", "expected"),
    [
        ("5 - 9 = -4", "squared", "(-4)^2 = 16"),
        ("5 - 9 = -4", "to the power of 2", "(-4)^2 = 16"),
        ("5 - 9 = -4", "times 2", "-4 * 2 = -8"),
        ("5 - 9 = -4", "plus 10%", "(-4) increased by 10% = -4.4"),
        ("2^200 = 1.60694e+60", "times 2", "1.60694e+60 * 2 = 3.21388e+60"),
        ("2^200 = 1.60694e+60", "plus 10%", "1.60694e+60 increased by 10% = 1.76763e+60"),
        ("x = 1.5e-07.", "times 2", "1.5e-07 * 2 = 3e-7"),
        ("The total is 1,234 + 1 = 1,235.", "times 2", "1235 * 2 = 2470"),
        ("Sure:\n3 + 4 = 7\nAnything else?", "times 2", "7 * 2 = 14"),
        ("1 / 3 = 0.333333", "times 3", "0.333333 * 3 = 0.999999"),
    ],
)
async def test_results_as_written(answer: str, text: str, expected: str) -> None:
    history = _turns(("user", "earlier"), ("assistant", answer))
    assert await Calculator().run(text, history) == expected


async def test_impossible_follow_ups_are_refused() -> None:
    with pytest.raises(ToolInputError, match="division by zero"):
        await Calculator().run("divide it by 0", FIFTEEN_PERCENT)
    huge = _turns(("assistant", "2^900 = 8.45271e+270"))
    with pytest.raises(ToolInputError, match="too large"):
        await Calculator().run("cubed", huge)


async def test_the_history_looked_at_is_bounded() -> None:
    recent = [("user", "hi"), ("assistant", "hello")] * MAX_HISTORY_TURNS
    history = (*FIFTEEN_PERCENT, *_turns(*recent))
    with pytest.raises(NothingToCompute, match="no earlier result"):
        await Calculator().run("times 2", history)
    long_answer = _turns(("assistant", "x" * 3000 + " = 5"))
    with pytest.raises(NothingToCompute, match="no earlier result"):
        await Calculator().run("times 2", long_answer)


async def test_no_eval_through_the_history() -> None:
    history = _turns(("assistant", "__import__('os').system('true') = 1"))
    assert await Calculator().run("times 2", history) == "1 * 2 = 2"
    poisoned = _turns(("assistant", "__import__('os').system('true')% of 80 = 1"))
    assert await Calculator().run("and 20%?", poisoned) == "20% = 0.2"
    sneaky = _turns(("assistant", "15% of open('x') = 1"))
    assert await Calculator().run("and 20%?", sneaky) == "20% = 0.2"


@pytest.mark.parametrize(
    ("text", "followup"),
    [
        ("times 2", OnResult("", " times 2")),
        ("And, now times 2?", OnResult("", " times 2")),
        ("what's that squared", OnResult("", " squared")),
        ("double it", OnResult("", " times 2")),
        ("divide it by 4", OnResult("", " divided by 4")),
        ("plus 10%", ChangeResult("10", increase=True)),
        ("take off 5 pct", ChangeResult("5", increase=False)),
        ("and 20%?", NewShare("20")),
        ("what's 10% of that", Substitute(("what's 10% of ", ""))),
        ("tell me a joke", None),
        ("add 5 to 3", None),
        ("and", None),
        ("", None),
    ],
)
def test_read_followup(text: str, followup: object) -> None:
    assert read_followup(text) == followup


def test_results_are_read_newest_first() -> None:
    history = _turns(
        ("assistant", "1 + 1 = 2"),
        ("assistant", "no number here"),
        ("assistant", "2 * 3 = 6"),
        ("assistant", "a == 4"),
    )
    assert list(results(history)) == [Result("2 * 3", "6"), Result("1 + 1", "2")]


def test_resolve_needs_an_earlier_result() -> None:
    assert resolve(OnResult("", " times 2"), ()) is None
    assert resolve(NewShare("20"), FIFTEEN_PERCENT[:2]) is None
    assert resolve(OnResult("", " times 2"), FIFTEEN_PERCENT) == "12*2"


def test_resolve_refuses_arithmetic_that_ignores_the_result() -> None:
    with pytest.raises(NothingToCompute, match="does not use the earlier result"):
        resolve(Substitute(("what is 2 + 2? is ", " right")), FIFTEEN_PERCENT)
