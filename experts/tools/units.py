"""The unit conversion tool: "convert 5 miles to km" -> "5 mi = 8.047 km", with pint.

Results carry `min(precision, 4)` significant digits: a conversion factor's fifth digit is
noise to most readers ("5 mi = 8.047 km", not 8.04672), and a lower spec `precision`
still wins. The user's own number is echoed with the full `precision`. Integer digits are
never rounded away (1 day = 86400 s).

The phrasing (`experts.tools.unit_phrases`) is read before pint is touched, so a message
with no conversion in it is declined without building the unit registry.
"""

from __future__ import annotations

import logging
import math
import tokenize
from types import MappingProxyType

import anyio
import anyio.to_thread
import pint

from experts.tools.base import NothingToCompute, ToolInputError, check_length
from experts.tools.formatting import format_number
from experts.tools.unit_phrases import EXPECTED, Conversion, find_conversions

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

# What pint's parser raises on malformed unit text, besides its own errors.
_PARSE_ERRORS = (
    pint.errors.PintError,
    AssertionError,
    AttributeError,
    KeyError,
    SyntaxError,
    TypeError,
    ValueError,
    tokenize.TokenError,
)


class _NotAConversion(Exception):
    """Neither unit of a candidate is a unit: the words only looked like a conversion."""


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

    async def run(self, text: str) -> str:
        check_length(text, "unit converter")
        conversions = find_conversions(text)
        if not conversions:
            raise NothingToCompute(f"found no unit conversion in the message; {EXPECTED}")
        registry = await self._ensure_registry()
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

    async def aclose(self) -> None:
        self._registry = None

    async def _ensure_registry(self) -> pint.UnitRegistry[float]:
        if self._registry is None:
            async with self._lock:
                if self._registry is None:
                    self._registry = await anyio.to_thread.run_sync(_build_registry)
                    logger.debug("unit registry built")
        return self._registry

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


def _parse_unit(registry: pint.UnitRegistry[float], text: str) -> pint.Unit | None:
    """The unit `text` names, or None when pint does not know it."""
    key = " ".join(text.lower().split())
    spellings = [ALIASES[key]] if key in ALIASES else [text, text.lower()]
    for spelling in spellings:
        try:
            unit: pint.Unit = registry.parse_units(spelling)
        except _PARSE_ERRORS:
            continue
        return unit
    return None


def _dimension(unit: pint.Unit) -> str:
    return "dimensionless" if unit.dimensionless else str(unit.dimensionality)


def _symbol(unit: pint.Unit, value_text: str) -> str:
    symbol = f"{unit:~P}"
    singular, plural = _WORDS.get(symbol, (symbol, symbol))
    return singular if value_text in ("1", "-1") else plural
