"""The calculator tool: plain-language arithmetic in, "expression = result" out."""

from __future__ import annotations

import pytest

from experts.tools.base import MAX_TEXT_CHARS, NothingToCompute, Tool, ToolInputError
from experts.tools.calculator import Calculator, find_expression

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("what is 15% of 80", "15% of 80 = 12"),
        ("compute 3.5 * (12 - 4)", "3.5 * (12 - 4) = 28"),
        ("what is 17% of 240", "17% of 240 = 40.8"),
        ("2^10", "2^10 = 1024"),
        ("2 to the power of 10", "2^10 = 1024"),
        ("2 raised to the power of 10", "2^10 = 1024"),
        ("2 to the 10th power", "2^10 = 1024"),
        ("what's 7 times 6", "7 * 6 = 42"),
        ("7 x 6", "7 * 6 = 42"),
        ("7 multiplied by 6", "7 * 6 = 42"),
        ("what is 100 divided by 8", "100 / 8 = 12.5"),
        ("increase 80 by 15%", "80 increased by 15% = 92"),
        ("80 decreased by 25%", "80 decreased by 25% = 60"),
        ("sqrt(16) + 1", "sqrt(16) + 1 = 5"),
        ("what is the square root of 2?", "sqrt(2) = 1.41421"),
        ("12 plus 30 minus 2", "12 + 30 - 2 = 40"),
        ("calculate (2+3)*4", "(2 + 3) * 4 = 20"),
        ("what is 1,234 + 1", "1234 + 1 = 1235"),
        ("1,234,567 * 2", "1234567 * 2 = 2469134"),
        ("-3 squared", "(-3)^2 = 9"),
        ("what is -3 squared?", "(-3)^2 = 9"),
        ("5 - 3 squared", "5 - 3^2 = -4"),
        ("-3^2", "-3^2 = -9"),
        ("(2+3) squared", "(2 + 3)^2 = 25"),
        ("2 cubed", "2^3 = 8"),
        ("0.1 + 0.2", "0.1 + 0.2 = 0.3"),
        ("1/3", "1 / 3 = 0.333333"),
        ("what is 50%?", "50% = 0.5"),
        ("50% + 1", "50% + 1 = 1.5"),
        ("what is 15 percent of 80", "15% of 80 = 12"),
        ("17 % 5", "17 % 5 = 2"),
        ("17 mod 5", "17 % 5 = 2"),
        ("10 \u00f7 4", "10 / 4 = 2.5"),
        ("3 \u00d7 4", "3 * 4 = 12"),
        ("9 \u2212 4", "9 - 4 = 5"),
        ("what is pi?", "pi = 3.14159"),
        ("2**100", "2^100 = 1267650600228229401496703205376"),
        ("I have 3 apples; what is 2 + 2?", "2 + 2 = 4"),
        ("max(3, 7, 2) please", "max(3, 7, 2) = 7"),
        ("round(2.5)", "round(2.5) = 3"),
    ],
)
async def test_answers(text: str, answer: str) -> None:
    assert await Calculator().run(text) == answer


async def test_precision_sets_significant_digits() -> None:
    assert await Calculator(precision=3).run("2/3") == "2 / 3 = 0.667"
    assert await Calculator(precision=12).run("2/3") == "2 / 3 = 0.666666666667"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "tell me a joke",
        "I have 3 apples",
        "what is 5?",
        "2 +",
        "lambda: 1",
        "__import__('os').system('true')",
        "(1).real",
        "[x for x in range(3)]",
        "open('/etc/passwd')",
        "exec('x = 1')",
    ],
)
async def test_nothing_to_compute(text: str) -> None:
    with pytest.raises(NothingToCompute, match="expected arithmetic"):
        await Calculator().run(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("what is 10 / 0", "division by zero"),
        ("9**9**9**9", "too large"),
        ("9^9^9^9", "too large"),
        ("2 to the power of 100000", "too large"),
        ("sqrt(-4)", "not a real number"),
        ("1+" * 200 + "1", "too long"),
    ],
)
async def test_computations_that_cannot_be_done(text: str, message: str) -> None:
    with pytest.raises(ToolInputError, match=message):
        await Calculator().run(text)


async def test_arithmetic_inside_code_is_only_arithmetic() -> None:
    assert await Calculator().run("eval('2 ** 3')") == "2^3 = 8"


async def test_very_long_messages_are_refused_before_parsing() -> None:
    with pytest.raises(NothingToCompute, match="too long"):
        await Calculator().run("1+" * 500_000 + "1")
    with pytest.raises(NothingToCompute, match="too long"):
        await Calculator().run("(" * (MAX_TEXT_CHARS + 1))


def test_find_expression_picks_the_arithmetic_out_of_words() -> None:
    assert find_expression("please compute 3.5 * (12 - 4) for me, thanks") == "3.5*(12-4)"
    assert find_expression("what is 15% of 80") == "__percent_of__(15)*80"
    assert find_expression("underscores _percent_(5) + 1 are not markers") == "(5)+1"


async def test_is_a_tool() -> None:
    calculator = Calculator()
    assert isinstance(calculator, Tool)
    assert calculator.name == "calculator"
    await calculator.start()
    await calculator.aclose()
