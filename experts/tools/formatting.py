"""Numbers as people write them: no float noise, a fixed number of significant digits."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction
from typing import TypeAlias

Real: TypeAlias = Fraction | float

# Exact integers up to this many digits are written out in full.
MAX_EXACT_DIGITS = 40
# Other values are written positionally while their leading digit sits between
# 10**-5 and 10**14, and in scientific notation outside.
_MIN_POSITIONAL_EXPONENT = -5
_MAX_POSITIONAL_EXPONENT = 14


def format_number(value: Real, digits: int) -> str:
    """Write `value` with `digits` significant digits, trailing zeros stripped.

    Integers stay integers (`Fraction(1024)` -> "1024"), and a rounded value never loses
    its integer digits (86400.4 with 4 digits -> "86400"). Halves round away from zero.
    """
    if digits < 1:
        raise ValueError("digits must be at least 1")
    if isinstance(value, Fraction) and value.denominator == 1:
        text = str(value.numerator)
        if len(text.lstrip("-")) <= MAX_EXACT_DIGITS:
            return text
    with localcontext() as ctx:
        ctx.prec = 80
        ctx.rounding = ROUND_HALF_UP
        exact = _to_decimal(value)
        if exact.is_zero():
            return "0"
        exponent = exact.adjusted()
        if _MIN_POSITIONAL_EXPONENT <= exponent <= _MAX_POSITIONAL_EXPONENT:
            places = max(digits - 1 - exponent, 0)
            return _strip_zeros(format(exact.quantize(Decimal(1).scaleb(-places)), "f"))
        ctx.prec = digits
        rounded = +exact
        return format(rounded.normalize(), "e")


def _to_decimal(value: Real) -> Decimal:
    if isinstance(value, Fraction):
        return Decimal(value.numerator) / Decimal(value.denominator)
    # The shortest repr, not the binary expansion: 273.15 must round like 273.15.
    return Decimal(repr(value))


def _strip_zeros(text: str) -> str:
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
