"""The safe evaluator: only whitelisted syntax, bounded results, readable rendering."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from experts.tools.arithmetic import MAX_EXPRESSION_CHARS, MAX_NODES, calculate
from experts.tools.base import NothingToCompute, ToolInputError
from experts.tools.calculator import find_expression
from experts.tools.formatting import format_number


@pytest.mark.parametrize(
    "expression",
    [
        "(1).real",
        "sqrt.__class__",
        "().__class__.__bases__[0].__subclasses__()",
        "__import__('os').system('true')",
        "open('/dev/null')",
        "foo(1)",
        "x",
        "lambda: 1",
        "[x for x in (1, 2)]",
        "(x for x in ())",
        "{1: 2}",
        "'9' * 10",
        "b'1'",
        "True + 1",
        "1 if 1 else 2",
        "(a := 1)",
        "1 < 2",
        "1 & 2",
        "1 << 2",
        "~1",
        "not 1",
        "3j",
        "max(*(1, 2))",
        "round(2.5, ndigits=1)",
        "(lambda: 1)()",
        "sqrt(4)(2)",
        "f'{1}'",
        "1; 2",
        "import os",
    ],
)
def test_anything_but_arithmetic_is_refused_without_running(expression: str) -> None:
    with pytest.raises(NothingToCompute):
        calculate(expression)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("9**9**9**9", "too large"),
        ("10**10**10", "too large"),
        ("2**10000", "too large"),
        ("(-2)**100001", "too large"),
        ("10**300 * 10", "too large"),
        ("1e308 * 10", "too large"),
        ("1e400 + 1", "too large"),
        ("exp(10**6)", "too large"),
        ("factorial(10000)", "factorial"),
        ("1 / 0", "division by zero"),
        ("1 // 0", "division by zero"),
        ("1 % 0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("sqrt(-1)", "not a real number"),
        ("(-8) ** (1/3)", "not a real number"),
        ("log(0)", "positive"),
        ("asin(2)", "not defined"),
        ("round(1, 0.5)", "whole number"),
        ("sqrt(1, 2)", "takes 1 argument"),
        ("max()", "takes 1 to 20 arguments"),
    ],
)
def test_valid_expressions_that_cannot_be_computed_are_rejected(
    expression: str, message: str
) -> None:
    with pytest.raises(ToolInputError, match=message):
        calculate(expression)


def test_long_and_deep_expressions_are_refused() -> None:
    with pytest.raises(ToolInputError, match="too long"):
        calculate("1+" * MAX_EXPRESSION_CHARS + "1")
    with pytest.raises(ToolInputError, match="too long"):
        calculate("-" * (MAX_NODES + 1) + "1")
    assert calculate("(" * 90 + "1" + ")" * 90).value == 1


def test_tiny_exact_results_fall_back_to_floats() -> None:
    assert calculate("(1/3) ** 5000").value == 0.0
    assert calculate("2 ** -5000").value == 0.0


@pytest.mark.parametrize(
    ("expression", "rendered", "value"),
    [
        ("3.5*(12-4)", "3.5 * (12 - 4)", Fraction(28)),
        ("2**10", "2^10", Fraction(1024)),
        ("-3**2", "-3^2", Fraction(-9)),
        ("(-3)**2", "(-3)^2", Fraction(9)),
        ("2**3**2", "2^3^2", Fraction(512)),
        ("(2**3)**2", "(2^3)^2", Fraction(64)),
        ("2**-1", "2^-1", Fraction(1, 2)),
        ("10-(4-3)", "10 - (4 - 3)", Fraction(9)),
        ("10-4-3", "10 - 4 - 3", Fraction(3)),
        ("7//2 + 7%2", "7 // 2 + 7 % 2", Fraction(4)),
        ("0.1+0.2", "0.1 + 0.2", Fraction(3, 10)),
        ("sqrt(16)+1", "sqrt(16) + 1", Fraction(5)),
        ("max(1, 2+3, 4)", "max(1, 2 + 3, 4)", Fraction(5)),
        ("round(2.5)", "round(2.5)", Fraction(3)),
        ("round(-2.5)", "round(-2.5)", Fraction(-3)),
        ("round(3.14159, 2)", "round(3.14159, 2)", Fraction(314, 100)),
        ("abs(-4) + floor(2.7) + ceil(2.1)", "abs(-4) + floor(2.7) + ceil(2.1)", Fraction(9)),
        ("cbrt(27)", "cbrt(27)", Fraction(3)),
        ("__percent_of__(15) * 80", "15% of 80", Fraction(12)),
        ("__percent_of__(10) * (20 + 30)", "10% of (20 + 30)", Fraction(5)),
        ("__percent__(50)", "50%", Fraction(1, 2)),
        ("__increase__(80, 15)", "80 increased by 15%", Fraction(92)),
        ("__decrease__(80, 25)", "80 decreased by 25%", Fraction(60)),
    ],
)
def test_exact_evaluation_and_rendering(expression: str, rendered: str, value: Fraction) -> None:
    calculation = calculate(expression)
    assert calculation.expression == rendered
    assert calculation.value == value
    assert isinstance(calculation.value, Fraction)


def test_floats_for_functions_with_trig_noise_removed() -> None:
    assert format_number(calculate("sqrt(2)").value, 6) == "1.41421"
    assert calculate("sin(pi)").value == 0.0
    assert format_number(calculate("log(100, 10)").value, 6) == "2"
    assert format_number(calculate("e").value, 6) == "2.71828"


# --- property: the calculator agrees with Python's integer arithmetic -----------------

_OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}

_leaves = st.integers(min_value=-99, max_value=99).map(lambda n: (str(n), n))


def _combine(
    children: st.SearchStrategy[tuple[str, int]],
) -> st.SearchStrategy[tuple[str, int]]:
    def build(parts: tuple[tuple[str, int], str, tuple[str, int]]) -> tuple[str, int]:
        (left_text, left), op, (right_text, right) = parts
        return f"({left_text} {op} {right_text})", _OPERATIONS[op](left, right)

    return st.tuples(children, st.sampled_from(sorted(_OPERATIONS)), children).map(build)


# At least one operation: a lone number is not a question for the calculator.
_nested = _combine(st.recursive(_leaves, _combine, max_leaves=6))


@given(_nested)
def test_nested_expressions_agree_with_python(case: tuple[str, int]) -> None:
    text, expected = case
    calculation = calculate(find_expression(f"what is {text}?"))
    assert calculation.value == expected
    assert format_number(calculation.value, 6) == str(expected)


def _precedence_reference(numbers: list[int], ops: list[str]) -> int:
    """Sum of products: how + - * combine without parentheses."""
    total, term, sign = 0, numbers[0], 1
    for op, number in zip(ops, numbers[1:], strict=True):
        if op == "*":
            term *= number
        else:
            total += sign * term
            term, sign = number, (1 if op == "+" else -1)
    return total + sign * term


@given(
    st.lists(st.integers(min_value=0, max_value=999), min_size=2, max_size=15).flatmap(
        lambda numbers: st.tuples(
            st.just(numbers),
            st.lists(
                st.sampled_from(sorted(_OPERATIONS)),
                min_size=len(numbers) - 1,
                max_size=len(numbers) - 1,
            ),
        )
    )
)
def test_flat_expressions_follow_precedence(case: tuple[list[int], list[str]]) -> None:
    numbers, ops = case
    text = str(numbers[0]) + "".join(
        f" {op} {number}" for op, number in zip(ops, numbers[1:], strict=True)
    )
    assert calculate(find_expression(text)).value == _precedence_reference(numbers, ops)
