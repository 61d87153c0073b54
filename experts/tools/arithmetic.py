"""Safe arithmetic on Python's AST: a whitelist of nodes, exact where cheap, never eval/exec.

Numbers are `Fraction`s while the arithmetic stays exact (+ - * / // % and integer
powers), so 0.1 + 0.2 is exactly 3/10; functions and fractional powers fall back to
floats. Every intermediate result is bounded (`MAX_ABS`, `MAX_BITS`), and powers are sized
before they are computed, so "9**9**9**9" is refused at once instead of eating memory.
Each of the at most `MAX_NODES` steps is small on its own, and a `Deadline` checked at every
node bounds them all together (`DEFAULT_TIME_LIMIT_S` of CPU time unless the caller says).

Besides the whitelisted functions, the expression may use the markers the calculator's
phrasing emits: `__percent__(x)` ("x%"), `__percent_of__(x) * y` ("x% of y"),
`__increase__(y, x)` and `__decrease__(y, x)` ("y increased/decreased by x%").
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from fractions import Fraction

from experts.tools.base import Deadline, NothingToCompute, ToolInputError
from experts.tools.formatting import Real
from experts.tools.functions import CONSTANTS, FUNCTIONS, MARKERS, PERCENT_OF, call

MAX_EXPRESSION_CHARS = 300
MAX_NODES = 200
MAX_ABS = 10**300
# Size cap, in bits, of the numerator and denominator of an exact result.
MAX_BITS = 2048


@dataclass(frozen=True, slots=True)
class Calculation:
    """An evaluated expression: its normalised, human-readable form and its value."""

    expression: str
    value: Real


def calculate(expression: str, deadline: Deadline | None = None) -> Calculation:
    """Evaluate `expression` (Python syntax plus the percent markers) safely.

    Raises `NothingToCompute` when it is not an arithmetic expression, `ToolInputError`
    when it is one that cannot be evaluated (division by zero, too large, a domain error,
    past the `deadline`; by default one of `DEFAULT_TIME_LIMIT_S` from now).
    """
    deadline = deadline if deadline is not None else Deadline()
    tree = parse(expression)
    return Calculation(expression=render(tree), value=evaluate(tree, deadline))


def parse(expression: str) -> ast.expr:
    """Parse and size-check an expression; raises `NothingToCompute` on bad syntax."""
    text = expression.strip()
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ToolInputError(
            f"the expression is too long (at most {MAX_EXPRESSION_CHARS} characters)"
        )
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise NothingToCompute(f"could not read {text!r} as an arithmetic expression") from exc
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ToolInputError(f"the expression is too long (at most {MAX_NODES} terms)")
    return tree.body


def evaluate(node: ast.expr, deadline: Deadline) -> Real:
    """The value of a whitelisted expression node, checking `deadline` at every node."""
    deadline.check()
    match node:
        case ast.Constant(value=bool()):
            raise NothingToCompute("true/false are not numbers")
        case ast.Constant(value=int() as number):
            return bounded(Fraction(number))
        case ast.Constant(value=float() as number):
            if not math.isfinite(number):
                raise ToolInputError("the number is too large")
            return bounded(Fraction(repr(number)))
        case ast.UnaryOp(op=ast.USub(), operand=operand):
            return -evaluate(operand, deadline)
        case ast.UnaryOp(op=ast.UAdd(), operand=operand):
            return evaluate(operand, deadline)
        case ast.BinOp(left=left, op=op, right=right):
            return binary(op, evaluate(left, deadline), evaluate(right, deadline))
        case ast.Name(id=name) if name in CONSTANTS:
            return CONSTANTS[name]
        case ast.Call(func=ast.Name(id=name), args=args, keywords=keywords) if (
            name in FUNCTIONS or name in MARKERS
        ):
            if keywords or any(isinstance(arg, ast.Starred) for arg in args):
                raise NothingToCompute(f"{name}() takes plain arguments only")
            return bounded(call(name, [evaluate(arg, deadline) for arg in args]))
        case ast.Name(id=name) | ast.Call(func=ast.Name(id=name)):
            raise NothingToCompute(f"unknown name {name!r}; known functions: {_known()}")
    raise NothingToCompute(f"{type(node).__name__} is not allowed in an arithmetic expression")


def binary(op: ast.operator, left: Real, right: Real) -> Real:
    """Apply one binary operator, translating Python's errors into tool errors."""
    try:
        match op:
            case ast.Add():
                result: Real | int | complex = left + right
            case ast.Sub():
                result = left - right
            case ast.Mult():
                result = left * right
            case ast.Div():
                result = left / right
            case ast.FloorDiv():
                result = left // right
            case ast.Mod():
                result = left % right
            case ast.Pow():
                result = power(left, right)
            case _:
                raise NothingToCompute(f"the operator {type(op).__name__} is not arithmetic")
    except ZeroDivisionError as exc:
        raise ToolInputError("division by zero") from exc
    except OverflowError as exc:
        raise ToolInputError("the result is too large") from exc
    return bounded(result)


def power(base: Real, exponent: Real) -> Real:
    """`base ** exponent`, exact for integer exponents unless the result would be huge."""
    if (
        isinstance(base, Fraction)
        and isinstance(exponent, Fraction)
        and exponent.denominator == 1
        and _exact_power_fits(base, exponent.numerator)
    ):
        result: Real = base**exponent.numerator
        return result
    base_f, exponent_f = float(base), float(exponent)
    if base_f < 0 and not exponent_f.is_integer():
        raise ToolInputError("a negative number to a fractional power is not a real number")
    if base_f == 0 and exponent_f < 0:
        raise ZeroDivisionError
    return math.pow(base_f, exponent_f)  # raises OverflowError instead of returning inf


def bounded(value: Real | int | complex) -> Real:
    """Check an intermediate result: real, finite, not too large, not too many digits."""
    if isinstance(value, complex):
        raise ToolInputError("the result is not a real number")
    if isinstance(value, int):
        value = Fraction(value)
    if isinstance(value, float):
        if math.isnan(value):
            raise ToolInputError("the result is undefined")
        if math.isinf(value) or abs(value) > MAX_ABS:
            raise ToolInputError("the result is too large")
        return value
    if abs(value) > MAX_ABS:
        raise ToolInputError("the result is too large")
    if value.denominator.bit_length() > MAX_BITS:
        return float(value)  # tiny or very precise: exactness is not worth the digits
    return value


def _exact_power_fits(base: Fraction, exponent: int) -> bool:
    if abs(base.numerator) <= 1 and base.denominator == 1:
        return True  # 0, 1 and -1 stay small whatever the exponent
    size = max(abs(base.numerator).bit_length(), base.denominator.bit_length())
    return size * abs(exponent) <= MAX_BITS


def _known() -> str:
    return ", ".join(sorted(FUNCTIONS)) + "; constants: " + ", ".join(sorted(CONSTANTS))


# ---------------------------------------------------------------------------------------
# Rendering: the normalised expression shown in the answer.

_SUM, _PRODUCT, _UNARY, _POWER, _ATOM = 1, 2, 3, 4, 5
_LOWEST = 0
_SYMBOLS: dict[type[ast.operator], tuple[str, int]] = {
    ast.Add: (" + ", _SUM),
    ast.Sub: (" - ", _SUM),
    ast.Mult: (" * ", _PRODUCT),
    ast.Div: (" / ", _PRODUCT),
    ast.FloorDiv: (" // ", _PRODUCT),
    ast.Mod: (" % ", _PRODUCT),
    ast.Pow: ("^", _POWER),
}


def render(node: ast.expr) -> str:
    """Write an evaluated expression back as people write it: `2^10`, `15% of 80`."""
    return _render(node)[0]


def _render(node: ast.expr) -> tuple[str, int]:
    match node:
        case ast.Constant(value=value):
            return repr(value), _ATOM
        case ast.Name(id=name):
            return name, _ATOM
        case ast.UnaryOp(op=op, operand=operand):
            sign = "-" if isinstance(op, ast.USub) else "+"
            return sign + _wrap(operand, _UNARY), _UNARY
        case ast.BinOp(
            left=ast.Call(func=ast.Name(id=name), args=[share]), op=ast.Mult(), right=whole
        ) if name == PERCENT_OF:
            return f"{_wrap(share, _ATOM)}% of {_wrap(whole, _PRODUCT + 1)}", _PRODUCT
        case ast.BinOp(left=left, op=op, right=right):
            symbol, level = _SYMBOLS.get(type(op), (" ? ", _SUM))
            if level == _POWER:  # right-associative, and 2^-1 needs no parentheses
                return _wrap(left, _POWER + 1) + symbol + _wrap(right, _UNARY), _POWER
            return _wrap(left, level) + symbol + _wrap(right, level + 1), level
        case ast.Call(func=ast.Name(id=name), args=args):
            return _render_call(name, args)
    return ast.unparse(node), _ATOM


def _render_call(name: str, args: list[ast.expr]) -> tuple[str, int]:
    parts = [_wrap(arg, _ATOM if name in MARKERS else _LOWEST) for arg in args]
    if name in MARKERS and len(parts) == 1:
        return f"{parts[0]}%", _ATOM
    if name in MARKERS and len(parts) == 2:
        verb = "increased" if name == "__increase__" else "decreased"
        return f"{parts[0]} {verb} by {parts[1]}%", _LOWEST
    return f"{name}({', '.join(parts)})", _ATOM


def _wrap(node: ast.expr, level: int) -> str:
    text, own = _render(node)
    return text if own >= level else f"({text})"
