"""The tools' bounds on work: the calculator's deadline, and inputs that once escaped them.

Each input in a `test_found_*` list is a regression: it once hung a tool or raised an
exception that was neither `NothingToCompute` nor `ToolInputError`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from fractions import Fraction

import pytest

from experts.tools.arithmetic import MAX_ABS, calculate
from experts.tools.base import DEFAULT_TIME_LIMIT_S, Deadline, ToolInputError
from experts.tools.calculator import Calculator
from experts.tools.functions import MAX_FACTORIAL
from experts.tools.units import LARGE_EXPONENT, UnitConverter

pytestmark = pytest.mark.anyio


def _ticks() -> Callable[[], float]:
    """A clock that advances one second each time it is read."""
    counter: Iterator[int] = iter(range(10**9))
    return lambda: float(next(counter))


# --- the deadline ----------------------------------------------------------------------


def test_a_deadline_is_checked_at_every_node() -> None:
    # Made at tick 0 with a limit of 4: the checks at ticks 1 to 3 pass, the fourth fails.
    assert calculate("1 + 2", Deadline(4, clock=_ticks())).value == 3  # 3 nodes
    with pytest.raises(ToolInputError, match="too long"):
        calculate("1 + 2 + 3", Deadline(4, clock=_ticks()))  # 5 nodes
    with pytest.raises(ToolInputError, match="too long"):
        calculate("sqrt(sqrt(16))", Deadline(3, clock=_ticks()))  # 3 nodes


def test_a_passed_deadline_says_what_the_limit_was() -> None:
    deadline = Deadline(0.05, clock=_ticks())
    with pytest.raises(ToolInputError, match=r"takes too long \(the limit is 50 ms\)"):
        deadline.check()


@pytest.mark.parametrize("limit", [0, -1, math.nan])
def test_a_time_limit_must_be_positive(limit: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        Deadline(limit)
    with pytest.raises(ValueError, match="positive"):
        Calculator(time_limit_s=limit)


async def test_ordinary_sums_fit_the_default_limit() -> None:
    assert DEFAULT_TIME_LIMIT_S == 0.05
    expression = " + ".join(["sqrt(2) * 3 / 7"] * 12)  # near the node limit
    assert (await Calculator().run(expression)).startswith("sqrt(2) * 3 / 7 + ")


# --- the calculator: unbounded-looking inputs are bounded -------------------------------


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("10**-10**10", "10^-10^10 = 0"),
        ("2 ** -5000", "2^-5000 = 0"),
        (f"factorial({MAX_FACTORIAL})", None),
        ("((((((((((((((((((((1 + 1))))))))))))))))))))", "1 + 1 = 2"),
        ("9" * 290 + "+1", "9" * 290 + " + 1 = 1e+290"),
        ("1e-999 * 5", "0.0 * 5 = 0"),
    ],
)
async def test_extreme_but_answerable(text: str, answer: str | None) -> None:
    result = await Calculator().run(text)
    if answer is not None:
        assert result == answer


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("9**9**9", "too large"),
        ("9^9^9^9^9^9", "too large"),
        ("(9**9)**(9**9)", "too large"),
        (f"factorial({MAX_FACTORIAL + 1})", f"from 0 to {MAX_FACTORIAL}"),
        ("factorial(10**9)", "factorial"),
        ("factorial(factorial(20))", "factorial"),
        ("factorial(2.5)", "factorial"),
        ("9" * 297 + "**9", "too large"),
        ("9" * 400 + "+1", "too long"),
        ("1e999 + 1", "too large"),
        ("exp(exp(exp(10)))", "too large"),
        ("round(1, 10**9)", "whole number"),
        ("(" * 150 + "1+1" + ")" * 150, "too long"),
        ("-" * 250 + "1 + 1", "too long"),
        ("sqrt(" * 60 + "2" + ")" * 60, "too long"),
        ("1" + "+1" * 150, "too long"),
    ],
)
async def test_extreme_inputs_are_refused(text: str, message: str) -> None:
    with pytest.raises(ToolInputError, match=message):
        await Calculator().run(text)


def test_every_allowed_factorial_is_within_the_calculator_s_range() -> None:
    assert math.factorial(MAX_FACTORIAL) <= MAX_ABS < math.factorial(MAX_FACTORIAL + 1)
    assert calculate(f"factorial({MAX_FACTORIAL})").value == math.factorial(MAX_FACTORIAL)
    assert isinstance(calculate(f"factorial({MAX_FACTORIAL})").value, Fraction)


# --- the unit converter: what pint would evaluate is bounded first ---------------------


@pytest.mark.parametrize(
    "text",
    [
        # pint worked out 9**9**9 exactly (hung).
        "convert 5 m^9^9^9 to km",
        "5 m**9**9**9 to km",
        "convert 5 m^-9^9^9 to km",
        "how many m^9^9^9^9 in 2 km",
        "12 kg^9^9^9 times 4",
        "convert 5 square m⁹⁹⁹⁹⁹⁹⁹⁹⁹⁹⁹⁹ to km",
        # Answered with absurd dimensions ("5 m⁹⁹⁹⁹⁹⁹⁹⁹ = 0 km⁹⁹⁹⁹⁹⁹⁹⁹").
        "convert 5 m⁹⁹⁹⁹⁹⁹⁹⁹ to km⁹⁹⁹⁹⁹⁹⁹⁹",
    ],
)
async def test_found_unit_exponents_are_refused(units: UnitConverter, text: str) -> None:
    with pytest.raises(ToolInputError, match=r"exponents have at most two digits") as caught:
        await units.run(text)
    assert LARGE_EXPONENT in caught.value.message


@pytest.mark.parametrize(
    "text",
    [
        # pint raised ZeroDivisionError while reading the unit.
        "convert 5 m*0^-1 to km",
        "how many km in 5 m*0^-1",
        "convert 5 m*0**-1 to km",
    ],
)
async def test_found_units_that_divide_by_zero_are_unknown(units: UnitConverter, text: str) -> None:
    with pytest.raises(ToolInputError, match="unknown unit"):
        await units.run(text)


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("convert 5 m^2 to km^2", "5 m² = 5e-6 km²"),
        ("convert 5 m² to km²", "5 m² = 5e-6 km²"),
        ("convert 3 m**-1 to km**-1", "3 1/m = 3000 1/km"),
        ("convert 5 square meters to square feet", "5 m² = 53.82 ft²"),
    ],
)
async def test_ordinary_exponents_still_work(units: UnitConverter, text: str, answer: str) -> None:
    assert await units.run(text) == answer
