"""The unit conversion tool: "convert 5 miles to km" -> "5 mi = 8.047 km", with pint.

Results carry `min(precision, 4)` significant digits: a conversion factor's fifth digit is
noise to most readers ("5 mi = 8.047 km", not 8.04672), and a lower spec `precision`
still wins. The user's own number is echoed with the full `precision`. Integer digits are
never rounded away (1 day = 86400 s).

The phrasing (`experts.tools.unit_phrases`) is read before pint is touched, so a message
with no conversion in it is declined without building the unit registry.

Arithmetic on quantities ("12 kg times 4", "5 km minus 300 m in miles", "half of 3 liters";
see `experts.tools.unit_arithmetic` for what is read and what is refused) is tried before
a conversion, and answers in the first quantity's unit unless the message names one:
"12 kg * 4 = 48 kg", "12 in + 3 ft = 48 in". A message with no operator between or
before its quantities is a conversion, answered as before.

A follow-up that names only a target ("and in feet?") converts the quantity of the most
recent earlier user turn that names a known one ("convert 5 miles to km" -> 5 miles); one
that names only a quantity ("and 10 miles?") converts into the most recent earlier known
target. A whole conversion in the message always wins over the history.
"""

from __future__ import annotations

import logging
import math
import re
import tokenize
from collections.abc import Sequence
from types import MappingProxyType

import anyio
import anyio.to_thread
import pint
import pint.util
from pint.facets.plain import PlainUnit

from experts.base import Message
from experts.tools.base import NothingToCompute, ToolInputError, check_length
from experts.tools.formatting import Real, format_number
from experts.tools.unit_arithmetic import Calculation, compute, echo, express, find_calculations
from experts.tools.unit_phrases import (
    EXPECTED,
    Conversion,
    NewTarget,
    Reading,
    UnitFollowup,
    earlier_readings,
    find_conversions,
    find_followup,
)

logger = logging.getLogger(__name__)

UNIT_DIGITS = 4
_TEMPERATURE = "[temperature]"
MAX_ABS = 10**300

# Spellings pint does not know (or reads as something else), by lower-cased phrase.
_DEGF, _DEGC, _KMH = "degF", "degC", "km/h"
ALIASES = MappingProxyType(
    {
        **dict.fromkeys(
            (
                "f",
                "°f",
                "fahrenheit",
                "degf",
                "deg f",
                "degree fahrenheit",
                "degrees fahrenheit",
                "degrees f",
                "degree f",
            ),
            _DEGF,
        ),
        **dict.fromkeys(
            (
                "c",
                "°c",
                "celsius",
                "celcius",
                "degc",
                "deg c",
                "degree celsius",
                "degrees celsius",
                "degrees c",
                "degree c",
                "centigrade",
                "degrees centigrade",
            ),
            _DEGC,
        ),
        **dict.fromkeys(("k", "kelvins", "degrees kelvin", "degree kelvin"), "kelvin"),
        **dict.fromkeys(("kmh", "km/hr", "kmph", "kph", "kilometers an hour"), _KMH),
        **dict.fromkeys(("fl oz", "fl. oz", "fluid ounce", "fluid ounces"), "fluid_ounce"),
        **dict.fromkeys(("nautical mile", "nautical miles"), "nautical_mile"),
        **dict.fromkeys(("light year", "light years"), "light_year"),
        **dict.fromkeys(
            ("metric ton", "metric tons", "metric tonne", "metric tonnes"), "metric_ton"
        ),
        "mpg": "mile/gallon",
    }
)

# pint symbols that read badly on their own, as (singular, plural).
_WORDS = MappingProxyType(
    {
        "d": ("day", "days"),
        "a": ("year", "years"),
        "week": ("week", "weeks"),
        "month": ("month", "months"),
        "cp": ("cup", "cups"),
        "acre": ("acre", "acres"),
        "ton": ("ton", "tons"),
        "floz": ("fl oz", "fl oz"),
        "l": ("L", "L"),
        "ml": ("mL", "mL"),
    }
)

# What pint's parser raises on malformed unit text, besides its own errors. It works out
# the numbers in the text, so "m*0^-1" divides by zero.
_PARSE_ERRORS = (
    pint.errors.PintError,
    ArithmeticError,
    AssertionError,
    AttributeError,
    KeyError,
    SyntaxError,
    TypeError,
    ValueError,
    tokenize.TokenError,
)

# pint evaluates the numbers in a unit's text exactly, as Python does: "m^9^9^9" would be
# 9**387420489, and "square m⁹⁹⁹⁹⁹⁹⁹⁹⁹⁹⁹⁹" 2**999999999999. Every exponent in what pint is
# about to read must be a plain number of at most two digits, not raised again.
_POWER = re.compile(r"\*\*")
_SMALL_EXPONENT = re.compile(r"\(?+[-+]?+\d{1,2}+(?:\.\d+)?+\)?+(?![\w.(]|\*\*)")
LARGE_EXPONENT = (
    "a unit's exponents have at most two digits and are not raised again ('m^2', not 'm^2^3')"
)


class _NotAConversion(Exception):
    """No unit a candidate names is a unit: the words only looked like a conversion."""


def _build_registry() -> pint.UnitRegistry[float]:
    return pint.UnitRegistry()


class UnitConverter:
    """The `units` tool. Owns one pint registry, built in a worker thread on first need."""

    def __init__(self, precision: int = 6) -> None:
        self._precision = precision
        self._registry: pint.UnitRegistry[float] | None = None
        self._lock = anyio.Lock()

    @property
    def name(self) -> str:
        return "units"

    async def start(self) -> None:
        await self._ensure_registry()

    async def run(self, text: str, history: Sequence[Message] = ()) -> str:
        check_length(text, "unit converter")
        calculations = find_calculations(text)
        if calculations:
            answer = self._first_calculation(await self._ensure_registry(), calculations)
            if answer is not None:
                return answer
        conversions = find_conversions(text)
        if conversions:
            return self._first(await self._ensure_registry(), conversions)
        followup = find_followup(text)
        if followup is None:
            raise NothingToCompute(f"found no unit conversion in the message; {EXPECTED}")
        readings = list(earlier_readings(history))
        if not any(_side(reading, followup) for reading in readings):
            raise NothingToCompute(_missing(followup))
        registry = await self._ensure_registry()
        conversion = _complete(registry, followup, readings)
        if conversion is None:
            raise NothingToCompute(_missing(followup))
        return self._convert(registry, conversion)

    async def aclose(self) -> None:
        self._registry = None

    async def _ensure_registry(self) -> pint.UnitRegistry[float]:
        if self._registry is None:
            async with self._lock:
                if self._registry is None:
                    self._registry = await anyio.to_thread.run_sync(_build_registry)
                    logger.debug("unit registry built")
        return self._registry

    def _first(self, registry: pint.UnitRegistry[float], conversions: list[Conversion]) -> str:
        """The answer to the first candidate whose units are units."""
        first_error: ToolInputError | None = None
        for conversion in conversions:
            try:
                return self._convert(registry, conversion)
            except _NotAConversion:
                continue
            except ToolInputError as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        raise NothingToCompute(f"found no known units in the message; {EXPECTED}")

    def _first_calculation(
        self, registry: pint.UnitRegistry[float], calculations: list[Calculation]
    ) -> str | None:
        """The answer to the first candidate whose units are units (None when none are)."""
        first_error: ToolInputError | None = None
        for calculation in calculations:
            try:
                return self._calculate(registry, calculation)
            except _NotAConversion:
                continue
            except ToolInputError as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return None

    def _calculate(self, registry: pint.UnitRegistry[float], calculation: Calculation) -> str:
        """The worked calculation and its result ("12 kg * 4 = 48 kg")."""
        units = [
            None if term.unit is None else _parse_unit(registry, term.unit)
            for term in calculation.terms
        ]
        target = None if calculation.target is None else _parse_unit(registry, calculation.target)
        named = [(term.unit, unit) for term, unit in zip(calculation.terms, units, strict=True)]
        named.append((calculation.target, target))
        written = [(text, unit) for text, unit in named if text is not None]
        if all(unit is None for _, unit in written):
            raise _NotAConversion
        unknown = next((text for text, unit in written if unit is None), None)
        if unknown is not None:
            raise ToolInputError(f"unknown unit {unknown!r}")
        if any(abs(term.value) > MAX_ABS for term in calculation.terms):
            raise ToolInputError("the number is too large")
        quantities = [
            registry.Quantity(float(term.value), unit)
            for term, unit in zip(calculation.terms, units, strict=True)
        ]
        result = express(compute(quantities, calculation), units, target)
        magnitude = float(result.magnitude)
        if not math.isfinite(magnitude):
            raise ToolInputError("the result is too large")
        amounts = [
            self._amount(term.value, unit)
            for term, unit in zip(calculation.terms, units, strict=True)
        ]
        worked = echo(calculation, amounts, self._precision)
        return f"{worked} = {self._amount(magnitude, result.units, UNIT_DIGITS)}"

    def _amount(self, value: Real, unit: PlainUnit | None, digits: int | None = None) -> str:
        """`value` and its unit as an answer writes them: "5 mi", "1 day", "5"."""
        text = format_number(value, min(self._precision, digits or self._precision))
        symbol = "" if unit is None else _symbol(unit, text)
        return f"{text} {symbol}" if symbol else text

    def _convert(self, registry: pint.UnitRegistry[float], conversion: Conversion) -> str:
        source = _parse_unit(registry, conversion.source)
        target = _parse_unit(registry, conversion.target)
        if source is None and target is None:
            raise _NotAConversion
        if source is None or target is None:
            unknown = conversion.source if source is None else conversion.target
            raise ToolInputError(f"unknown unit {unknown!r}")
        if abs(conversion.value) > MAX_ABS:
            raise ToolInputError("the number is too large")
        try:
            result = registry.Quantity(float(conversion.value), source).to(target)
            magnitude = float(result.magnitude)
        except pint.errors.DimensionalityError as exc:
            raise ToolInputError(
                f"cannot convert {conversion.source!r} to {conversion.target!r}: "
                f"{_dimension(source)} is not {_dimension(target)}"
            ) from exc
        except (pint.errors.PintError, ArithmeticError, ValueError) as exc:
            raise ToolInputError(
                f"cannot convert {conversion.source!r} to {conversion.target!r}: {exc}"
            ) from exc
        if not math.isfinite(magnitude):
            raise ToolInputError("the result is too large")
        if _dimension(target) == _TEMPERATURE:
            # Offsets cancel in floating point (32 degF is 5.7e-14 degC): keep 9 decimals.
            magnitude = round(magnitude, 9)
        value_text = format_number(conversion.value, self._precision)
        result_text = format_number(magnitude, min(self._precision, UNIT_DIGITS))
        return (
            f"{value_text} {_symbol(source, value_text)} = "
            f"{result_text} {_symbol(target, result_text)}"
        )


def _side(reading: Reading, followup: UnitFollowup) -> tuple[str, ...]:
    """The unit names of the side of a conversion `followup` lacks, as `reading` has them."""
    if isinstance(followup, NewTarget):
        return tuple(quantity.unit for quantity in reading.quantities)
    return reading.targets


def _complete(
    registry: pint.UnitRegistry[float], followup: UnitFollowup, readings: Sequence[Reading]
) -> Conversion | None:
    """The follow-up made whole from the most recent reading with a known unit for it.

    The follow-up's own unit must be known as well: "and what about the weather?" reads
    like a target, and is declined rather than refused as an unknown unit.
    """
    own = followup.unit if isinstance(followup, NewTarget) else followup.quantity.unit
    if _parse_unit(registry, own) is None:
        raise NothingToCompute(f"found no known unit in the message; {EXPECTED}")
    for reading in readings:
        if isinstance(followup, NewTarget):
            for quantity in reading.quantities:
                if _parse_unit(registry, quantity.unit) is not None:
                    return Conversion(quantity.value, quantity.unit, followup.unit)
        else:
            for target in reading.targets:
                if _parse_unit(registry, target) is not None:
                    quantity = followup.quantity
                    return Conversion(quantity.value, quantity.unit, target)
    return None


def _missing(followup: UnitFollowup) -> str:
    if isinstance(followup, NewTarget):
        return (
            f"found no quantity to convert to {followup.unit!r}, in the message or earlier in "
            f"the conversation; {EXPECTED}"
        )
    return (
        f"found no unit to convert {followup.quantity.unit!r} to, in the message or earlier "
        f"in the conversation; {EXPECTED}"
    )


def _parse_unit(registry: pint.UnitRegistry[float], text: str) -> pint.Unit | None:
    """The unit `text` names, or None when pint does not know it.

    Raises `ToolInputError` when pint would have to work out huge powers to read it.
    """
    key = " ".join(text.lower().split())
    spellings = [ALIASES[key]] if key in ALIASES else [text, text.lower()]
    if not _small_exponents(text):
        raise ToolInputError(f"cannot read the unit {text!r}: {LARGE_EXPONENT}")
    for spelling in spellings:
        try:
            unit: pint.Unit = registry.parse_units(spelling)
        except _PARSE_ERRORS:
            continue
        return unit
    return None


def _small_exponents(text: str) -> bool:
    """Whether every power in `text`, as pint will read it, has a small plain exponent."""
    evaluated = "".join(pint.util.string_preprocessor(text).split())
    return all(
        _SMALL_EXPONENT.match(evaluated, power.end()) for power in _POWER.finditer(evaluated)
    )


def _dimension(unit: pint.Unit) -> str:
    return "dimensionless" if unit.dimensionless else str(unit.dimensionality)


def _symbol(unit: PlainUnit, value_text: str) -> str:
    symbol = f"{unit:~P}"
    singular, plural = _WORDS.get(symbol, (symbol, symbol))
    return singular if value_text in ("1", "-1") else plural
