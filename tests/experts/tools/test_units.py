"""The unit conversion tool: phrasing, pint conversions, formatting and refusals."""

from __future__ import annotations

from fractions import Fraction

import anyio
import pytest

from experts.tools import units as units_module
from experts.tools.base import MAX_TEXT_CHARS, NothingToCompute, Tool, ToolInputError
from experts.tools.unit_phrases import Conversion, find_conversions
from experts.tools.units import UnitConverter

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("convert 5 miles to km", "5 mi = 8.047 km"),
        ("how many ounces in 2 kg", "2 kg = 70.55 oz"),
        ("how many ounces are there in 2 kg?", "2 kg = 70.55 oz"),
        ("100 fahrenheit in celsius", "100 °F = 37.78 °C"),
        ("32 degrees Fahrenheit to Celsius", "32 °F = 0 °C"),
        ("-40 F to C", "-40 °F = -40 °C"),
        ("0 c to k", "0 °C = 273.2 K"),
        ("what is 3 feet in meters", "3 ft = 0.9144 m"),
        ("1 gallon to liters", "1 gal = 3.785 L"),
        ("convert 60 mph to km/h", "60 mph = 96.56 km/h"),
        ("10 kmh to m/s", "10 km/h = 2.778 m/s"),
        ("how many seconds in a day", "1 day = 86400 s"),
        ("how many days in a year", "1 year = 365.3 days"),
        ("how many feet per mile", "1 mi = 5280 ft"),
        ("convert miles to km", "1 mi = 1.609 km"),
        ("what is a mile in km?", "1 mi = 1.609 km"),
        ("convert 5 in to cm", "5 in = 12.7 cm"),
        ("convert 1,234.5 m to km", "1234.5 m = 1.235 km"),
        ("3/4 cup to ml", "0.75 cups = 177.4 mL"),
        ("convert 1 fl oz to mL", "1 fl oz = 29.57 mL"),
        ("convert 5 m^2 to sq ft", "5 m² = 53.82 ft²"),
        ("5 km/h to mph, please", "5 km/h = 3.107 mph"),
        ("how much is 5 miles in km", "5 mi = 8.047 km"),
    ],
)
async def test_answers(units: UnitConverter, text: str, answer: str) -> None:
    assert await units.run(text) == answer


async def test_the_readme_example_contains_the_rounded_value(units: UnitConverter) -> None:
    assert "8.047 km" in await units.run("convert 5 miles to km")


async def test_results_keep_four_digits_unless_precision_is_lower() -> None:
    precise = UnitConverter(precision=17)
    assert await precise.run("convert 1.23456 miles to km") == "1.23456 mi = 1.987 km"
    rough = UnitConverter(precision=2)
    assert await rough.run("convert 5 miles to km") == "5 mi = 8 km"


async def test_works_without_start() -> None:
    converter = UnitConverter()
    assert await converter.run("convert 5 miles to km") == "5 mi = 8.047 km"
    await converter.aclose()
    assert await converter.run("convert 2 km to m") == "2 km = 2000 m"


async def test_each_converter_owns_its_registry() -> None:
    first, second = UnitConverter(), UnitConverter()
    await first.start()
    await second.start()
    assert first._registry is not None
    assert first._registry is not second._registry


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("convert 5 miles to blorps", "unknown unit 'blorps'"),
        ("I walked 5 miles to the store", "unknown unit 'the store'"),
        ("convert 5 kg to km", r"cannot convert 'kg' to 'km': \[mass\] is not \[length\]"),
        ("convert 100 fahrenheit to meters", "cannot convert"),
        ("1e999 m to km", "too large"),
    ],
)
async def test_conversions_that_cannot_be_done(
    units: UnitConverter, text: str, message: str
) -> None:
    with pytest.raises(ToolInputError, match=message):
        await units.run(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello there",
        "what is 2 + 2",
        "I need a taxi to the airport",
        "convert 5 m^99 to km",
        "a" * (MAX_TEXT_CHARS + 1),
    ],
)
async def test_nothing_to_convert(units: UnitConverter, text: str) -> None:
    with pytest.raises(NothingToCompute):
        await units.run(text)


async def test_declining_does_not_build_the_registry() -> None:
    converter = UnitConverter()
    with pytest.raises(NothingToCompute, match="expected a conversion"):
        await converter.run("tell me a joke")
    assert converter._registry is None


def test_phrases_are_read_without_pint() -> None:
    assert find_conversions("how many seconds in a day") == [
        Conversion(Fraction(1), "day", "seconds")
    ]
    assert find_conversions("convert 5 in to cm") == [Conversion(Fraction(5), "in", "cm")]
    assert find_conversions("5 km to m; 3 m to cm") == [
        Conversion(Fraction(5), "km", "m"),
        Conversion(Fraction(3), "m", "cm"),
    ]


def test_adversarial_phrasing_is_bounded() -> None:
    # Many connectors and numbers in one clause: every candidate is cheap to find.
    clause = "1 m to " * 28 + "km"
    assert len(find_conversions(clause)) <= 10
    long_clause = "convert 5 " + "m " * 150 + "to km"
    assert find_conversions(long_clause) == []


async def test_is_a_tool(units: UnitConverter) -> None:
    assert isinstance(units, Tool)
    assert units.name == "units"


async def test_concurrent_first_use_builds_one_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[int] = []
    real_build = units_module._build_registry

    def counting_build() -> object:
        builds.append(1)
        return real_build()

    monkeypatch.setattr(units_module, "_build_registry", counting_build)
    converter = UnitConverter()
    answers: list[str] = []

    async def ask() -> None:
        answers.append(await converter.run("convert 5 miles to km"))

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(ask)
    assert answers == ["5 mi = 8.047 km"] * 5
    assert builds == [1]
