"""format_number: integers as integers, significant digits without float noise."""

from __future__ import annotations

from fractions import Fraction

import pytest

from experts.tools.formatting import MAX_EXACT_DIGITS, format_number


@pytest.mark.parametrize(
    ("value", "digits", "expected"),
    [
        (Fraction(1024), 6, "1024"),
        (Fraction(-9), 6, "-9"),
        (Fraction(3, 10), 6, "0.3"),
        (0.1 + 0.2, 6, "0.3"),
        (Fraction(1, 3), 6, "0.333333"),
        (Fraction(2, 3), 6, "0.666667"),
        (Fraction(25, 2), 6, "12.5"),
        (Fraction(204, 5), 6, "40.8"),
        (28.0, 6, "28"),
        (8.04672, 4, "8.047"),
        (70.54792384, 4, "70.55"),
        (37.77777777777783, 4, "37.78"),
        (86400.4, 4, "86400"),
        (273.15, 4, "273.2"),
        (2.5, 1, "3"),
        (-2.5, 1, "-3"),
        (0.0, 6, "0"),
        (-0.0, 6, "0"),
        (1e-7, 6, "1e-7"),
        (0.000123456789, 6, "0.000123457"),
        (6.02214076e23, 6, "6.02214e+23"),
        (123456789.123, 6, "123456789"),
    ],
)
def test_format_number(value: Fraction | float, digits: int, expected: str) -> None:
    assert format_number(value, digits) == expected


def test_exact_integers_are_written_in_full_up_to_the_cap() -> None:
    assert format_number(Fraction(2**100), 6) == "1267650600228229401496703205376"
    assert format_number(Fraction(10**MAX_EXACT_DIGITS - 1), 6) == "9" * MAX_EXACT_DIGITS


def test_huge_integers_switch_to_scientific_notation() -> None:
    assert format_number(Fraction(2**200), 6) == "1.60694e+60"


def test_digits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="digits"):
        format_number(1.0, 0)
