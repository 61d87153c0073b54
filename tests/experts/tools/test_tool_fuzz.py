"""Fuzzing the calculator and the unit converter through their public entry point, `run`.

Whatever the text (and the conversation before it), a tool answers with a line of text or
raises one of its own errors (`NothingToCompute`, `ToolInputError`); any other exception is
a bug. Hypothesis' per-example deadline is no timing assertion: it is a thousand times what
an answer takes, there to surface work that grows out of proportion with the input (the
kind of input that once made pint compute 9**387420489) instead of letting it hang the run.

Every input these tests found gets its own regression test in `test_tool_limits.py`.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experts.base import Message
from experts.tools.base import ToolError
from experts.tools.calculator import Calculator
from experts.tools.units import UnitConverter

pytestmark = pytest.mark.anyio

FUZZ = settings(
    max_examples=150,
    deadline=timedelta(seconds=2),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


async def _answers_or_refuses(
    tool: Calculator | UnitConverter, text: str, history: tuple[Message, ...] = ()
) -> None:
    try:
        answer = await tool.run(text, history)
    except ToolError as error:
        assert error.message
    else:
        assert isinstance(answer, str)
        assert answer


# --- strategies ------------------------------------------------------------------------

# Any text at all, lone surrogates included (JSON's "\ud800" escapes decode to them).
_any_text = st.text(st.characters(exclude_categories=()), max_size=400)

_NUMBERS = st.one_of(
    st.integers(min_value=-(10**400), max_value=10**400).map(str),
    st.integers(min_value=0, max_value=10**6).map(str),
    st.tuples(st.integers(0, 999), st.integers(-999, 999)).map(lambda t: f"{t[0]}e{t[1]}"),
    st.decimals(allow_nan=False, allow_infinity=False, places=8).map(str),
    st.sampled_from(["0", ".5", "3.", "1,234", "0.1", "pi", "e", "tau", "1e308", "1e-308"]),
)
_BINARY = st.sampled_from(
    ["+", "-", "*", "/", "//", "%", "**", "^", " times ", " plus ", " minus ", " x ",
     " divided by ", " over ", " mod ", " to the power of ", " raised to ", "% of "]
)  # fmt: skip
_FUNCTIONS = st.sampled_from(
    ["sqrt", "cbrt", "abs", "round", "floor", "ceil", "min", "max", "log", "ln", "log10",
     "log2", "exp", "sin", "cos", "tan", "asin", "acos", "atan", "factorial", "nosuch",
     "__percent__", "__increase__"]
)  # fmt: skip


def _grow(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(inner, _BINARY, inner).map("".join),
        st.tuples(_FUNCTIONS, st.lists(inner, max_size=3)).map(
            lambda call: f"{call[0]}({', '.join(call[1])})"
        ),
        inner.map(lambda text: f"({text})"),
        inner.map(lambda text: f"-{text}"),
        inner.map(lambda text: f"{text}%"),
        inner.map(lambda text: f"{text} squared"),
        inner.map(lambda text: f"the square root of {text}"),
        st.tuples(inner, inner).map(lambda pair: f"increase {pair[0]} by {pair[1]}%"),
    )


_expressions = st.recursive(_NUMBERS, _grow, max_leaves=24)
_phrased = st.tuples(
    st.sampled_from(["", "what is ", "compute ", "how much is ", "please calculate "]),
    _expressions,
    st.sampled_from(["", "?", " please", " = ", "!!"]),
).map("".join)
_FOLLOWUPS = st.sampled_from(
    ["times 2", "and 20%?", "plus 10%", "minus 5%", "what's that squared", "double it",
     "halve it", "square root of it", "divide it by 0", "raise it to 9^9^9", "add 1e999",
     "what's 10% of that", "it to the power of 99999", "factorial of that"]
)  # fmt: skip
_earlier_answers = st.one_of(_expressions, _NUMBERS).map(lambda value: f"the answer = {value}")
_histories = st.lists(
    st.one_of(
        st.builds(Message, st.just("assistant"), _earlier_answers),
        st.builds(Message, st.sampled_from(["user", "assistant", "system"]), _phrased),
        st.builds(Message, st.sampled_from(["user", "assistant"]), _any_text),
    ),
    max_size=4,
).map(tuple)

_UNITS = st.sampled_from(
    ["m", "km", "kg", "miles", "s", "h", "ft", "in", "°C", "F", "kelvin", "L", "km/h", "mph",
     "m^2", "m²", "m^-1", "m**2", "m^9^9", "m**9**9", "m⁹⁹⁹⁹⁹⁹", "square m", "cubic feet",
     "kg^99", "N*m", "light years", "it", "nosuch"]
)  # fmt: skip
_SUPERSCRIPTS = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
_exponents = st.one_of(st.integers(0, 9), st.integers(0, 9), st.integers(0, 10**12))
# Units with numbers in them, chained or long: "m^9^9^9", "square m⁹⁹⁹⁹⁹⁹⁹⁹⁹⁹⁹⁹", "m*0^-1".
_unit_exponents = st.tuples(
    st.sampled_from(["m", "kg", "s", "ft", "km", "square m", "cubic ft"]),
    st.lists(
        st.tuples(st.sampled_from(["^", "**", "^-", "", "⁻", "*", "/"]), _exponents).map(
            lambda power: (
                f"{power[0]}{power[1]}"
                if power[0] not in ("", "⁻")
                else power[0] + str(power[1]).translate(_SUPERSCRIPTS)
            )
        ),
        min_size=1,
        max_size=4,
    ).map("".join),
).map("".join)
_quantities = st.tuples(_NUMBERS, st.just(" "), st.one_of(_UNITS, _unit_exponents)).map("".join)
_unit_questions = st.one_of(
    st.tuples(
        st.sampled_from(["convert ", "", "what is "]),
        _quantities,
        st.sampled_from([" to ", " in ", " into ", " as "]),
        st.one_of(_UNITS, _unit_exponents),
    ).map("".join),
    st.tuples(
        st.just("how many "), st.one_of(_UNITS, _unit_exponents), st.just(" in "), _quantities
    ).map("".join),
    st.tuples(
        st.sampled_from(["", "double ", "half of ", "20% of "]),
        _quantities,
        _BINARY,
        st.one_of(_quantities, _NUMBERS),
        st.sampled_from(["", " in km", " in m^9^9", " to mg^99"]),
    ).map("".join),
    st.tuples(st.sampled_from(["and in ", "what about ", "and "]), _quantities).map("".join),
)


# --- the calculator --------------------------------------------------------------------


@FUZZ
@given(text=_any_text)
async def test_calculator_any_text(text: str) -> None:
    await _answers_or_refuses(Calculator(), text)


@FUZZ
@given(text=st.one_of(_expressions, _phrased))
async def test_calculator_generated_expressions(text: str) -> None:
    await _answers_or_refuses(Calculator(), text)


@FUZZ
@given(text=st.one_of(_FOLLOWUPS, _phrased, _any_text), history=_histories)
async def test_calculator_followups(text: str, history: tuple[Message, ...]) -> None:
    await _answers_or_refuses(Calculator(), text, history)


# --- the unit converter ----------------------------------------------------------------


@FUZZ
@given(text=st.one_of(_unit_questions, _any_text))
async def test_units_any_question(units: UnitConverter, text: str) -> None:
    await _answers_or_refuses(units, text)


@FUZZ
@given(text=_unit_questions, history=st.lists(_unit_questions, max_size=3))
async def test_units_followups(units: UnitConverter, text: str, history: list[str]) -> None:
    turns = tuple(Message("user", turn) for turn in history)
    await _answers_or_refuses(units, text, turns)
