"""Unit follow-ups: a turn that names one side of a conversion takes the other from history."""

from __future__ import annotations

from fractions import Fraction

import pytest

from experts.base import Message
from experts.tools.base import MAX_HISTORY_TURNS, NothingToCompute, ToolInputError
from experts.tools.unit_phrases import (
    NewQuantity,
    NewTarget,
    Quantity,
    Reading,
    earlier_readings,
    find_followup,
)
from experts.tools.units import UnitConverter

pytestmark = pytest.mark.anyio


def _turns(*turns: tuple[str, str]) -> tuple[Message, ...]:
    return tuple(Message(role, text) for role, text in turns)


FIVE_MILES = _turns(
    ("system", "you convert units"),
    ("user", "convert 5 miles to km"),
    ("assistant", "5 mi = 8.047 km"),
)


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("and in feet?", "5 mi = 26400 ft"),
        ("what about in meters?", "5 mi = 8047 m"),
        ("and kilometres?", "5 mi = 8.047 km"),
        ("how about yards", "5 mi = 8800 yd"),
        ("and to inches", "5 mi = 316800 in"),
        ("what is that in feet?", "5 mi = 26400 ft"),
        ("convert it to feet please", "5 mi = 26400 ft"),
        ("ok, and in feet?", "5 mi = 26400 ft"),
        ("thanks! and in feet?", "5 mi = 26400 ft"),
        ("and in?", "5 mi = 316800 in"),
        ("and 10 miles?", "10 mi = 16.09 km"),
        ("what about 2 km?", "2 km = 2 km"),
        ("how about a mile?", "1 mi = 1.609 km"),
    ],
)
async def test_follow_ups(units: UnitConverter, text: str, answer: str) -> None:
    assert await units.run(text, FIVE_MILES) == answer


async def test_temperatures_follow_up(units: UnitConverter) -> None:
    history = _turns(("user", "100 fahrenheit in celsius"), ("assistant", "100 °F = 37.78 °C"))
    assert await units.run("in kelvin?", history) == "100 °F = 310.9 K"
    assert await units.run("what about 32 F?", history) == "32 °F = 0 °C"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("and in feet?", "found no quantity to convert to 'feet'"),
        ("in celsius?", "found no quantity to convert to 'celsius'"),
        ("and 10 miles?", "found no unit to convert 'miles' to"),
    ],
)
async def test_a_follow_up_without_history_declines(
    units: UnitConverter, text: str, message: str
) -> None:
    with pytest.raises(NothingToCompute, match=message):
        await units.run(text)
    with pytest.raises(NothingToCompute, match="expected a conversion"):
        await units.run(text, _turns(("user", "hello"), ("assistant", "hi! 5 mi = 8.047 km")))


async def test_a_pronoun_is_no_unit(units: UnitConverter) -> None:
    assert await units.run("convert it to feet", FIVE_MILES) == "5 mi = 26400 ft"
    with pytest.raises(NothingToCompute, match="found no quantity to convert to 'feet'"):
        await units.run("convert it to feet")


async def test_declining_a_follow_up_does_not_build_the_registry() -> None:
    converter = UnitConverter()
    with pytest.raises(NothingToCompute):
        await converter.run("and in feet?", _turns(("user", "tell me a joke")))
    assert converter._registry is None


async def test_a_whole_request_ignores_the_history(units: UnitConverter) -> None:
    assert await units.run("convert 2 km to m", FIVE_MILES) == "2 km = 2000 m"
    assert await units.run("and 3 feet to inches?", FIVE_MILES) == "3 ft = 36 in"
    with pytest.raises(ToolInputError, match="unknown unit 'blorps'"):
        await units.run("convert 3 feet to blorps", FIVE_MILES)


async def test_the_most_recent_quantity_is_used(units: UnitConverter) -> None:
    history = (
        *FIVE_MILES,
        *_turns(("user", "convert 3 kg to lb"), ("assistant", "3 kg = 6.614 lb")),
    )
    assert await units.run("and in ounces?", history) == "3 kg = 105.8 oz"
    with pytest.raises(ToolInputError, match=r"cannot convert 'kg' to 'feet'"):
        await units.run("and in feet?", history)


async def test_follow_ups_chain(units: UnitConverter) -> None:
    history = (
        *FIVE_MILES,
        *_turns(
            ("user", "and in feet?"),
            ("assistant", "5 mi = 26400 ft"),
            ("user", "what about 10 miles?"),
            ("assistant", "10 mi = 52800 ft"),
        ),
    )
    assert await units.run("and in yards?", history) == "10 mi = 17600 yd"
    assert await units.run("and 2 km?", history) == "2 km = 6562 ft"


async def test_turns_without_known_units_are_skipped(units: UnitConverter) -> None:
    history = (
        *FIVE_MILES,
        *_turns(
            ("user", "I have 3 apples to eat"),
            ("assistant", "Enjoy them."),
            ("assistant", "Also: 7 kg = 15.43 lb"),
        ),
    )
    # Only user turns hold quantities; "3 apples" is no quantity pint knows.
    assert await units.run("and in feet?", history) == "5 mi = 26400 ft"


@pytest.mark.parametrize("text", ["and in blorps?", "what about the weather?", "and 3 apples?"])
async def test_follow_ups_with_unknown_units_decline(units: UnitConverter, text: str) -> None:
    with pytest.raises(NothingToCompute, match="found no known unit"):
        await units.run(text, FIVE_MILES)


async def test_incompatible_follow_ups_are_refused(units: UnitConverter) -> None:
    with pytest.raises(ToolInputError, match=r"\[length\] is not \[temperature\]"):
        await units.run("in celsius?", FIVE_MILES)
    with pytest.raises(ToolInputError, match=r"cannot convert 'kg' to 'km'"):
        await units.run("what about 3 kg?", FIVE_MILES)


async def test_the_history_looked_at_is_bounded(units: UnitConverter) -> None:
    recent = [("user", "hi"), ("assistant", "hello")] * MAX_HISTORY_TURNS
    with pytest.raises(NothingToCompute, match="found no quantity"):
        await units.run("and in feet?", (*FIVE_MILES, *_turns(*recent)))


@pytest.mark.parametrize(
    ("text", "followup"),
    [
        ("and in feet?", NewTarget("feet")),
        ("What about in Celsius?", NewTarget("Celsius")),
        ("in km please", NewTarget("km")),
        ("and kilometres?", NewTarget("kilometres")),
        ("and 10 miles?", NewQuantity(Quantity(Fraction(10), "miles"))),
        ("how about a mile", NewQuantity(Quantity(Fraction(1), "mile"))),
        ("feet", None),
        ("hello there", None),
        ("and 10?", None),
        ("", None),
    ],
)
def test_find_followup(text: str, followup: object) -> None:
    assert find_followup(text) == followup


def test_earlier_readings_are_newest_first() -> None:
    history = _turns(
        ("user", "convert 5 miles to km"),
        ("assistant", "5 mi = 8.047 km"),
        ("user", "tell me a joke"),
        ("user", "and in feet?"),
    )
    assert list(earlier_readings(history)) == [
        Reading(targets=("feet",)),
        Reading(quantities=(Quantity(Fraction(5), "miles"),), targets=("km",)),
    ]
