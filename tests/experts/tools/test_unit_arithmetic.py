"""Arithmetic on quantities in the units tool: phrasing, pint arithmetic, refusals, precedence."""

from __future__ import annotations

from fractions import Fraction

import pytest

from experts.base import ExpertDeclined, ExpertRejected, ExpertRequest, Message
from experts.specs import ToolSpec
from experts.tools import ToolExpert
from experts.tools.base import NothingToCompute, ToolInputError
from experts.tools.unit_arithmetic import Calculation, Scaling, Term, find_calculations
from experts.tools.units import UnitConverter

pytestmark = pytest.mark.anyio

# The examples the units tool is documented with, and their exact answers.
EXAMPLES = [
    ("how much is 12 kg times 4", "12 kg * 4 = 48 kg"),
    ("what is 12 meters divided by 4", "12 m / 4 = 3 m"),
    ("5 km minus 300 m", "5 km - 300 m = 4.7 km"),
    ("what is 12 inches plus 3 feet", "12 in + 3 ft = 48 in"),
    ("3 feet plus 2 meters in meters", "3 ft + 2 m = 2.914 m"),
    ("3 feet plus 2 meters to meters", "3 ft + 2 m = 2.914 m"),
    ("double 5 miles", "5 mi * 2 = 10 mi"),
    ("half of 3 liters", "3 L / 2 = 1.5 L"),
    ("twice 2 kg", "2 kg * 2 = 4 kg"),
    ("20% of 2 hours", "20% of 2 h = 0.4 h"),
    ("10 km divided by 2 km", "10 km / 2 km = 5"),
    ("12 kg times 4 in pounds", "12 kg * 4 = 105.8 lb"),
]

MORE = [
    ("what's 12 kg times 4?", "12 kg * 4 = 48 kg"),
    ("12 kg x 4", "12 kg * 4 = 48 kg"),
    ("12kg*4 =", "12 kg * 4 = 48 kg"),
    ("12 kg multiplied by 4, please", "12 kg * 4 = 48 kg"),
    ("4 times 12 kg", "4 * 12 kg = 48 kg"),
    ("12 kg \u00f7 4", "12 kg / 4 = 3 kg"),
    ("10 m over 4", "10 m / 4 = 2.5 m"),
    ("5 km \u2212 300 m", "5 km - 300 m = 4.7 km"),
    ("triple 2 cups", "2 cups * 3 = 6 cups"),
    ("half a mile in feet", "1 mi / 2 = 2640 ft"),
    ("20 percent of 2 hours in minutes", "20% of 2 h = 24 min"),
    ("what is a mile plus 300 m", "1 mi + 300 m = 1.186 mi"),
    ("2 km plus 300 m plus 50 m", "2 km + 300 m + 50 m = 2.35 km"),
    ("1 km plus 200 m times 3", "1 km + 200 m * 3 = 1.6 km"),
    ("10 kg divided by double 5", "10 kg / (5 * 2) = 1 kg"),
    ("half an hour plus 10 minutes", "1 h / 2 + 10 min = 0.6667 h"),
    ("1 km divided by 500 m", "1 km / 500 m = 2"),
    ("3/4 cup plus 1/4 cup", "0.75 cups + 0.25 cups = 1 cup"),
    ("0.1 m plus 0.2 m", "0.1 m + 0.2 m = 0.3 m"),
    ("2 kg minus 3 kg", "2 kg - 3 kg = -1 kg"),
    ("convert 2 kg plus 3 kg to lb", "2 kg + 3 kg = 11.02 lb"),
    ("3 ft plus 5 in in cm", "3 ft + 5 in = 104.1 cm"),
    ("3 ft plus 5 in", "3 ft + 5 in = 3.417 ft"),
    ("how many grams in 2 kg plus 300 g", "2 kg + 300 g = 2300 g"),
    ("300 K plus 5 K in celsius", "300 K + 5 K = 31.85 °C"),
    ("2 km/h times 3", "2 km/h * 3 = 6 km/h"),
    ("5 m^2 times 2", "5 m² * 2 = 10 m²"),
]


def _expert(precision: int = 6) -> ToolExpert:
    spec = ToolSpec.model_validate(
        {
            "name": "units",
            "kind": "tool",
            "tool": "units",
            "description": "unit conversion and arithmetic on quantities",
            "precision": precision,
        }
    )
    return ToolExpert(spec)


def _user(text: str) -> ExpertRequest:
    return ExpertRequest(messages=(Message("user", text),))


@pytest.mark.parametrize(("text", "answer"), EXAMPLES + MORE)
async def test_answers(units: UnitConverter, text: str, answer: str) -> None:
    assert await units.run(text) == answer


@pytest.mark.parametrize(("text", "answer"), EXAMPLES)
async def test_answers_through_the_expert(text: str, answer: str) -> None:
    result = await _expert().complete(_user(text))
    assert result.content == answer
    assert result.finish_reason == "stop"


async def test_numbers_follow_the_precision() -> None:
    precise = UnitConverter(precision=17)
    assert await precise.run("1.23456 miles times 3") == "1.23456 mi * 3 = 3.704 mi"
    rough = UnitConverter(precision=2)
    assert await rough.run("1.23456 miles times 3") == "1.2 mi * 3 = 3.7 mi"
    assert await rough.run("12.5 kg times 4") == "13 kg * 4 = 50 kg"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2 kg times 3 kg", r"cannot multiply 'kg' by 'kg' \(the answer would be in kg²\)"),
        ("100 km divided by 2 hours", r"cannot divide 'km' by 'h' \(the answer would be in km/h\)"),
        ("10 divided by 2 km", "cannot divide a plain number by 'km'"),
        ("3 kg plus 2 m", r"cannot add 'm' to 'kg': \[length\] is not \[mass\]"),
        ("3 kg minus 2 m", r"cannot subtract 'm' from 'kg': \[length\] is not \[mass\]"),
        ("5 km plus 300", r"cannot add a plain number to 'km': dimensionless is not \[length\]"),
        ("5 kg plus 2 kg in meters", r"cannot give the result in 'm': \[mass\] is not \[length\]"),
        ("20 C plus 5 C", "cannot do arithmetic on temperatures in °C or °F"),
        ("100 F minus 32 F", "cannot do arithmetic on temperatures"),
        ("double 30 celsius", "cannot do arithmetic on temperatures"),
        ("12 kg divided by 0", "division by zero"),
        ("1 km divided by 0 m", "division by zero"),
        ("5 apples plus 3 kg", "unknown unit 'apples'"),
        ("12 kg times 4 blorps", "unknown unit 'blorps'"),
        ("1e999 m plus 1 m", "the number is too large"),
        ("1e300 km times 1e300", "the result is too large"),
    ],
)
async def test_calculations_that_cannot_be_done(
    units: UnitConverter, text: str, message: str
) -> None:
    with pytest.raises(ToolInputError, match=message):
        await units.run(text)


async def test_refusals_through_the_expert_are_400() -> None:
    with pytest.raises(ExpertRejected) as caught:
        await _expert().complete(_user("3 kg plus 2 m"))
    assert caught.value.status == 400
    assert caught.value.message == "units: cannot add 'm' to 'kg': [length] is not [mass]"


@pytest.mark.parametrize(
    "text",
    [
        "what is 2 + 2",
        "20% of 80",
        "5 apples plus 3 apples",
        "double it",
        "what is 5 ft 3 in plus 2 in",
        "2 hours 30 minutes plus 1 hour",
        "x marks the spot",
    ],
)
async def test_no_calculation_on_units_declines(units: UnitConverter, text: str) -> None:
    with pytest.raises(NothingToCompute, match="or arithmetic on quantities"):
        await units.run(text)


async def test_a_declined_calculation_through_the_expert() -> None:
    with pytest.raises(ExpertDeclined, match="units: found no unit conversion"):
        await _expert().complete(_user("what is 2 + 2"))


async def test_plain_arithmetic_does_not_build_the_registry() -> None:
    converter = UnitConverter()
    with pytest.raises(NothingToCompute):
        await converter.run("what is 2 + 2")
    assert converter._registry is None


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("convert 5 miles to km", "5 mi = 8.047 km"),
        ("how many ounces in 2 kg", "2 kg = 70.55 oz"),
        ("-40 F to C", "-40 °F = -40 °C"),
        ("3/4 cup to ml", "0.75 cups = 177.4 mL"),
        ("convert 60 mph to km/h", "60 mph = 96.56 km/h"),
        ("10 kmh to m/s", "10 km/h = 2.778 m/s"),
        ("convert 5 m^2 to sq ft", "5 m² = 53.82 ft²"),
        ("what is a mile in km?", "1 mi = 1.609 km"),
    ],
)
async def test_conversions_are_not_calculations(
    units: UnitConverter, text: str, answer: str
) -> None:
    assert find_calculations(text) == []
    assert await units.run(text) == answer


async def test_follow_ups_still_read_the_conversation(units: UnitConverter) -> None:
    history = (Message("user", "convert 5 miles to km"), Message("assistant", "5 mi = 8.047 km"))
    assert await units.run("and in feet?", history) == "5 mi = 26400 ft"
    assert await units.run("and 10 miles?", history) == "10 mi = 16.09 km"
    # A whole calculation in the message wins over the conversation.
    assert await units.run("and 10 miles plus 2 miles?", history) == "10 mi + 2 mi = 12 mi"


def test_phrases_are_read_without_pint() -> None:
    assert find_calculations("how much is 12 kg times 4") == [
        Calculation((Term(Fraction(12), "kg"), Term(Fraction(4))), ("*",))
    ]
    assert find_calculations("20% of 2 hours") == [
        Calculation((Term(Fraction(2), "hours", Scaling("%", Fraction(20))),))
    ]
    assert find_calculations("half of a mile") == [
        Calculation((Term(Fraction(1), "mile", Scaling("/", Fraction(2))),))
    ]
    # Where the last unit ends and the target begins is left for pint to settle.
    assert find_calculations("3 ft plus 5 in in cm") == [
        Calculation((Term(Fraction(3), "ft"), Term(Fraction(5))), ("+",), "in cm"),
        Calculation((Term(Fraction(3), "ft"), Term(Fraction(5), "in")), ("+",), "cm"),
        Calculation((Term(Fraction(3), "ft"), Term(Fraction(5), "in in cm")), ("+",)),
    ]
    assert find_calculations("how many grams in 2 kg plus 3 kg")[0].target == "grams"


def test_scaling_factors() -> None:
    assert Scaling("*", Fraction(3)).factor == 3
    assert Scaling("/", Fraction(2)).factor == Fraction(1, 2)
    assert Scaling("%", Fraction(20)).factor == Fraction(1, 5)


@pytest.mark.parametrize(
    "text",
    [
        "1 m plus " * 22 + "1 m",
        "a " * 99,
        "1 " * 99,
        "double " * 28 + "5 m",
        "2 m plus 3 " + "in " * 60 + "m",
        "1 m plus 2 m; " * 200,
    ],
)
def test_adversarial_phrasing_is_bounded(text: str) -> None:
    assert len(find_calculations(text)) <= 10
