"""The calculator's whitelist: functions, constants and the percent markers.

Angles are in radians. Every function takes and returns `Real` (`Fraction` or `float`)
and stays exact where that is cheap (`sqrt(16)` is exactly 4, `round(2.5)` is 3).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from types import MappingProxyType

from experts.tools.base import NothingToCompute, ToolInputError
from experts.tools.formatting import Real

PERCENT = "__percent__"
PERCENT_OF = "__percent_of__"
INCREASE = "__increase__"
DECREASE = "__decrease__"

# The largest n whose n! stays within the calculator's MAX_ABS (10**300): 166! is 9.0e297.
MAX_FACTORIAL = 166
MAX_ARGS = 20
# Trigonometric results closer to zero than this are float noise (sin(pi) is 1.2e-16).
_TRIG_NOISE = 1e-15


@dataclass(frozen=True, slots=True)
class Function:
    apply: Callable[..., Real]
    min_args: int = 1
    max_args: int = 1


def _sqrt(x: Real) -> Real:
    if x < 0:
        raise ToolInputError("the square root of a negative number is not a real number")
    if isinstance(x, Fraction):
        top, bottom = math.isqrt(x.numerator), math.isqrt(x.denominator)
        if top * top == x.numerator and bottom * bottom == x.denominator:
            return Fraction(top, bottom)
    return math.sqrt(x)


def _cbrt(x: Real) -> Real:
    if isinstance(x, Fraction) and max(x.numerator.bit_length(), x.denominator.bit_length()) < 900:
        top = round(abs(x.numerator) ** (1 / 3))
        bottom = round(x.denominator ** (1 / 3))
        if top**3 == abs(x.numerator) and bottom**3 == x.denominator:
            return Fraction(top, bottom) * (1 if x >= 0 else -1)
    return math.cbrt(float(x))


def _round(x: Real, places: Real = Fraction(0)) -> Real:
    """Round half away from zero, as people do (round(2.5) is 3)."""
    if not (isinstance(places, Fraction) and places.denominator == 1 and abs(places) <= 15):
        raise ToolInputError("round() takes a whole number of places between -15 and 15")
    scale = Fraction(10) ** places.numerator
    scaled = Fraction(x) * scale
    magnitude = math.floor(abs(scaled) + Fraction(1, 2))
    return Fraction(magnitude if scaled >= 0 else -magnitude) / scale


def _min(*values: Real) -> Real:
    return min(values)


def _max(*values: Real) -> Real:
    return max(values)


def _floor(x: Real) -> Real:
    return Fraction(math.floor(x))


def _ceil(x: Real) -> Real:
    return Fraction(math.ceil(x))


def _log(x: Real, base: Real | None = None) -> Real:
    if x <= 0 or (base is not None and (base <= 0 or base == 1)):
        raise ToolInputError("the logarithm is only defined for positive numbers (and base != 1)")
    return math.log(x) if base is None else math.log(x, base)


def _positive(function: Callable[[float], float]) -> Callable[[Real], Real]:
    def apply(x: Real) -> Real:
        if x <= 0:
            raise ToolInputError("the logarithm is only defined for positive numbers")
        return function(float(x))

    return apply


def _trig(function: Callable[[float], float]) -> Callable[[Real], Real]:
    def apply(x: Real) -> Real:
        result = function(float(x))
        return 0.0 if abs(result) < _TRIG_NOISE else result

    return apply


def _factorial(x: Real) -> Real:
    if not (isinstance(x, Fraction) and x.denominator == 1 and 0 <= x <= MAX_FACTORIAL):
        raise ToolInputError(f"factorial() takes a whole number from 0 to {MAX_FACTORIAL}")
    return Fraction(math.factorial(x.numerator))


def _percent(x: Real) -> Real:
    return x / 100


def _increase(whole: Real, percent: Real) -> Real:
    return whole * (1 + percent / 100)


def _decrease(whole: Real, percent: Real) -> Real:
    return whole * (1 - percent / 100)


FUNCTIONS: Mapping[str, Function] = MappingProxyType(
    {
        "sqrt": Function(_sqrt),
        "cbrt": Function(_cbrt),
        "abs": Function(abs),
        "round": Function(_round, 1, 2),
        "floor": Function(_floor),
        "ceil": Function(_ceil),
        "min": Function(_min, 1, MAX_ARGS),
        "max": Function(_max, 1, MAX_ARGS),
        "log": Function(_log, 1, 2),
        "ln": Function(_positive(math.log)),
        "log10": Function(_positive(math.log10)),
        "log2": Function(_positive(math.log2)),
        "exp": Function(math.exp),
        "sin": Function(_trig(math.sin)),
        "cos": Function(_trig(math.cos)),
        "tan": Function(_trig(math.tan)),
        "asin": Function(math.asin),
        "acos": Function(math.acos),
        "atan": Function(math.atan),
        "factorial": Function(_factorial),
    }
)

MARKERS: Mapping[str, Function] = MappingProxyType(
    {
        PERCENT: Function(_percent),
        PERCENT_OF: Function(_percent),
        INCREASE: Function(_increase, 2, 2),
        DECREASE: Function(_decrease, 2, 2),
    }
)

CONSTANTS: Mapping[str, Real] = MappingProxyType({"pi": math.pi, "e": math.e, "tau": math.tau})


def call(name: str, args: Sequence[Real]) -> Real:
    """Apply a whitelisted function or marker, translating Python's math errors."""
    function = FUNCTIONS.get(name) or MARKERS.get(name)
    if function is None:
        raise NothingToCompute(f"unknown function {name!r}")
    if not function.min_args <= len(args) <= function.max_args:
        raise ToolInputError(f"{name}() takes {_arity(function)}, got {len(args)}")
    try:
        result: Real = function.apply(*args)
    except ValueError as exc:
        raise ToolInputError(f"{name}() is not defined for {_show(args)}") from exc
    except OverflowError as exc:
        raise ToolInputError(f"the result of {name}() is too large") from exc
    except ZeroDivisionError as exc:
        raise ToolInputError("division by zero") from exc
    return result


def _arity(function: Function) -> str:
    if function.min_args == function.max_args:
        count = function.min_args
        return f"{count} argument{'s' if count != 1 else ''}"
    return f"{function.min_args} to {function.max_args} arguments"


def _show(args: Sequence[Real]) -> str:
    return ", ".join(str(float(arg)) for arg in args)
