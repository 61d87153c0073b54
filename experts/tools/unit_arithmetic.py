"""Arithmetic on quantities: "12 kg times 4" -> 12 kg * 4, read from words, worked with pint.

The phrasing is read before pint is touched. A calculation is a chain of terms joined by
operators, optionally followed by the unit to answer in:

- a term is a number with or without unit words ("12 kg", "4", "a mile"), optionally
  scaled: "double|twice 5 miles" (* 2), "triple|thrice" (* 3), "half (of) 3 liters" (/ 2),
  "20% of 2 hours" (* 20/100);
- operators: plus, +, minus, -, times, x, *, multiplied by, divided by, /, over, and the
  multiplication and division signs. `*` and `/` bind before `+` and `-`, and a scaling
  word binds to its own term only;
- "... in|to|into|as <unit>" after the last term names the answer's unit, as does a
  leading "how many <unit> (are there) in".

Words before the first term are a lead-in ("how much is", "what's"). A chain of a single
term counts only when it is scaled ("double 5 miles"); at least one term must name a unit.

Only a quantity times or divided by a plain number, or a ratio of two like quantities
("10 km divided by 2 km" -> 5), is worked out: "2 kg times 3 kg" is refused rather than
answered in kg², and so is "100 km divided by 2 hours". Adding or subtracting quantities
of different kinds ("3 kg plus 2 m"), and any arithmetic on temperatures in °C or °F
(whose zero is not absolute), is refused too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from types import MappingProxyType
from typing import Literal, TypeAlias

import pint
from pint.facets.plain import PlainUnit

from experts.tools.base import ToolInputError
from experts.tools.formatting import format_number
from experts.tools.unit_phrases import NUMBER, clauses, read_value

Operator: TypeAlias = Literal["+", "-", "*", "/"]
Amount: TypeAlias = "pint.Quantity[float]"
MAX_CALCULATIONS = 10
TEMPERATURES = (
    "cannot do arithmetic on temperatures in °C or °F, whose zero is not absolute; use kelvin"
)

_OPERATORS: MappingProxyType[str, Operator] = MappingProxyType(
    {
        "plus": "+",
        "+": "+",
        "minus": "-",
        "-": "-",
        "\u2212": "-",
        "times": "*",
        "x": "*",
        "*": "*",
        "\u00d7": "*",
        "multiplied by": "*",
        "divided by": "/",
        "over": "/",
        "/": "/",
        "\u00f7": "/",
    }
)
_TOKEN = re.compile(
    r"(?P<space>\s+)"
    rf"|(?P<percent>{NUMBER})\s*(?:%|per\s?cent(?!\w))"
    rf"|(?P<number>{NUMBER})"
    r"|(?P<op>(?:plus|minus|times|multiplied\s+by|divided\s+by|over|x)(?!\w)|[-+*/\u2212\u00d7\u00f7])"
    r"|(?P<prefix>(?:double|twice|triple|thrice|half)(?!\w))"
    # A unit word: letters, "km/h", "N*m", "m^2", "m**-1"; never ending in an operator.
    r"|(?P<word>(?:[^\W\d_]|[°µμ])(?:[^\W\d]|[°µμ]|[/*.](?=[^\W\d]|[°µμ])|(?:\^|\*\*)-?\d{1,2})*)"
    r"|(?P<other>.)",
    re.IGNORECASE | re.DOTALL,
)
_TRAILER = re.compile(r"\s*(?:=|\bequals?)\s*$", re.IGNORECASE)
_HOW_MANY_IN = re.compile(
    r"\bhow\s+(?:many|much)\s+(?P<unit>.+?)\s+(?:(?:are|is)\s+(?:there\s+)?)?(?:in|per)\s*$",
    re.IGNORECASE | re.DOTALL,
)
_ARTICLES = frozenset({"a", "an", "one"})
_CONNECTORS = frozenset({"in", "to", "into", "as"})


@dataclass(frozen=True, slots=True)
class Scaling:
    """How a term is scaled: "double" is ("*", 2), "half of" ("/", 2), "20% of" ("%", 20)."""

    operator: Literal["*", "/", "%"]
    number: Fraction

    @property
    def factor(self) -> Fraction:
        if self.operator == "*":
            return self.number
        return 1 / self.number if self.operator == "/" else self.number / 100


_SCALINGS = MappingProxyType(
    {
        "double": Scaling("*", Fraction(2)),
        "twice": Scaling("*", Fraction(2)),
        "triple": Scaling("*", Fraction(3)),
        "thrice": Scaling("*", Fraction(3)),
        "half": Scaling("/", Fraction(2)),
    }
)


@dataclass(frozen=True, slots=True)
class Term:
    """One operand as written: `value` `unit` (None for a plain number), maybe scaled."""

    value: Fraction
    unit: str | None = None
    scaling: Scaling | None = None


@dataclass(frozen=True, slots=True)
class Calculation:
    """`terms` joined by `operators` (one fewer), answered in `target` when it is named."""

    terms: tuple[Term, ...]
    operators: tuple[Operator, ...] = ()
    target: str | None = None


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str
    start: int


@dataclass(frozen=True, slots=True)
class _Chain:
    """A calculation whose last term keeps all its words: the target is not split off yet."""

    terms: tuple[Term, ...]
    operators: tuple[Operator, ...]
    last_words: tuple[str, ...]


def find_calculations(text: str) -> list[Calculation]:
    """The candidate readings of the first clause of `text` that holds arithmetic on units.

    The readings differ only in where the last term's unit ends and the target begins
    ("3 ft plus 5 in in cm"); which unit names are real is pint's business.
    """
    for clause in clauses(text):
        clause = _TRAILER.sub("", clause)
        tokens = [token for token in _tokens(clause) if token.kind != "space"]
        chain, start = _first_chain(tokens)
        if chain is None:
            continue
        lead = _HOW_MANY_IN.search(clause[:start])
        found = list(_readings(chain, lead.group("unit") if lead else None))
        if found:
            return found[:MAX_CALCULATIONS]
    return []


def compute(quantities: Sequence[Amount], calculation: Calculation) -> Amount:
    """The value of `calculation` over its terms' `quantities` (plain numbers unitless)."""
    if any(_has_offset(quantity) for quantity in quantities):
        raise ToolInputError(TEMPERATURES)
    try:
        values = [
            _scale(quantity, term.scaling)
            for quantity, term in zip(quantities, calculation.terms, strict=True)
        ]
        addends = [values[0]]
        signs: list[Operator] = []
        for operator, value in zip(calculation.operators, values[1:], strict=True):
            if operator in ("*", "/"):
                addends[-1] = _multiply(addends[-1], operator, value)
            else:
                signs.append(operator)
                addends.append(value)
        result = addends[0]
        for operator, value in zip(signs, addends[1:], strict=True):
            result = _add(result, operator, value)
    except pint.errors.OffsetUnitCalculusError as exc:
        raise ToolInputError(TEMPERATURES) from exc
    except ZeroDivisionError as exc:
        raise ToolInputError("division by zero") from exc
    except OverflowError as exc:
        raise ToolInputError("the result is too large") from exc
    return result


def express(result: Amount, units: Sequence[pint.Unit | None], target: pint.Unit | None) -> Amount:
    """`result` in `target`, else in the first of `units` of its kind (plain when unitless)."""
    if target is not None:
        try:
            return result.to(target)
        except pint.errors.DimensionalityError as exc:
            raise ToolInputError(
                f"cannot give the result in {_name(target)}: "
                f"{_dimension(result)} is not {_dimension(target)}"
            ) from exc
    if result.dimensionless:
        return result.to("dimensionless")
    for unit in units:
        if unit is not None and unit.dimensionality == result.dimensionality:
            return result.to(unit)
    return result


def echo(calculation: Calculation, amounts: Sequence[str], precision: int) -> str:
    """The calculation as it is worked out, from each term's amount as written ("5 mi")."""
    parts: list[str] = []
    for index, (term, amount) in enumerate(zip(calculation.terms, amounts, strict=True)):
        text = amount if term.scaling is None else _scaled(amount, term.scaling, precision)
        if index == 0:
            parts.append(text)
            continue
        operator = calculation.operators[index - 1]
        if operator == "/" and term.scaling is not None:
            text = f"({text})"
        parts.append(f"{operator} {text}")
    return " ".join(parts)


def _scaled(amount: str, scaling: Scaling, precision: int) -> str:
    number = format_number(scaling.number, precision)
    if scaling.operator == "%":
        return f"{number}% of {amount}"
    return f"{amount} {scaling.operator} {number}"


def _tokens(clause: str) -> Iterator[_Token]:
    for match in _TOKEN.finditer(clause):
        kind = match.lastgroup or "other"
        if kind == "percent":
            yield _Token(kind, match.group("percent"), match.start())
        else:
            yield _Token(kind, match.group(), match.start())


def _first_chain(tokens: Sequence[_Token]) -> tuple[_Chain | None, int]:
    """The chain the clause ends with, and where it starts; the lead-in holds no number.

    "what is a mile plus 300 m" starts at "a"; "5 ft 3 in plus 2 in" has no chain, rather
    than "3 in plus 2 in" with "5 ft" dropped.
    """
    for index, token in enumerate(tokens):
        if token.kind in ("number", "percent", "prefix") or (
            token.kind == "word" and token.text.lower() in _ARTICLES
        ):
            chain = _chain(tokens[index:])
            if chain is not None:
                return chain, token.start
            if token.kind in ("number", "percent"):
                break
    return None, 0


def _chain(tokens: Sequence[_Token]) -> _Chain | None:
    """The terms and operators `tokens` hold from first to last, or None when they are not.

    A chain needs an operator, or a scaled single term.
    """
    terms: list[Term] = []
    operators: list[Operator] = []
    index = 0
    words: tuple[str, ...] = ()
    while True:
        step = _term(tokens, index)
        if step is None:
            return None
        term, words, index = step
        terms.append(term if not words else replace(term, unit=" ".join(words)))
        if index == len(tokens):
            break
        if tokens[index].kind != "op":
            return None
        operators.append(_OPERATORS[" ".join(tokens[index].text.lower().split())])
        index += 1
    if not operators and terms[0].scaling is None:
        return None
    return _Chain(tuple(terms), tuple(operators), words)


def _term(tokens: Sequence[_Token], index: int) -> tuple[Term, tuple[str, ...], int] | None:
    """The term starting at `index`, its unit words and the index after them."""
    scaling: Scaling | None = None
    token = _at(tokens, index)
    if token.kind == "percent":
        number = read_value(token.text)
        if number is None or _at(tokens, index + 1).text.lower() != "of":
            return None
        scaling, index = Scaling("%", number), index + 2
    elif token.kind == "prefix":
        scaling = _SCALINGS[token.text.lower()]
        index += 2 if _at(tokens, index + 1).text.lower() == "of" else 1
    token = _at(tokens, index)
    if token.kind == "number":
        value = read_value(token.text)
    elif token.kind == "word" and token.text.lower() in _ARTICLES:
        value = Fraction(1) if _at(tokens, index + 1).kind == "word" else None
    else:
        return None
    if value is None:
        return None
    index += 1
    words: list[str] = []
    while _at(tokens, index).kind == "word":
        words.append(tokens[index].text)
        index += 1
    return Term(value, None, scaling), tuple(words), index


def _at(tokens: Sequence[_Token], index: int) -> _Token:
    return tokens[index] if index < len(tokens) else _Token("end", "", -1)


def _readings(chain: _Chain, asked: str | None) -> Iterator[Calculation]:
    """The chain with each possible target split off its last term, then with none."""
    words = chain.last_words
    for index, word in enumerate(words[:-1]):
        if word.lower() in _CONNECTORS:
            yield from _named(chain, words[:index], " ".join(words[index + 1 :]))
    if asked is not None:
        yield from _named(chain, words, asked.strip())
    yield from _named(chain, words, None)


def _named(chain: _Chain, words: Sequence[str], target: str | None) -> Iterator[Calculation]:
    """The chain with its last term's unit `words`, if any term then names a unit."""
    last = replace(chain.terms[-1], unit=" ".join(words) if words else None)
    terms = (*chain.terms[:-1], last)
    if any(term.unit is not None for term in terms):
        yield Calculation(terms, chain.operators, target)


def _has_offset(quantity: Amount) -> bool:
    """Whether the quantity's unit starts from an arbitrary zero (°C, °F), unlike kelvin."""
    zero = type(quantity)(0.0, quantity.units)
    return bool(zero.to_base_units().magnitude != 0)


def _scale(quantity: Amount, scaling: Scaling | None) -> Amount:
    if scaling is None:
        return quantity
    scaled: Amount = quantity * float(scaling.factor)
    return scaled


def _multiply(left: Amount, operator: Operator, right: Amount) -> Amount:
    """`left * right` or `left / right`, when the answer is a plain number or of a kind in it."""
    result: Amount = left * right if operator == "*" else left / right
    if result.dimensionless:
        return result.to("dimensionless")
    if right.dimensionless or (operator == "*" and left.dimensionless):
        return result
    verb = "multiply" if operator == "*" else "divide"
    raise ToolInputError(
        f"cannot {verb} {_name(left.units)} by {_name(right.units)} (the answer would be in "
        f"{result.units:~P}); a quantity can be multiplied or divided by a plain number, or "
        "divided by a quantity of the same kind"
    )


def _add(left: Amount, operator: Operator, right: Amount) -> Amount:
    try:
        result: Amount = left + right if operator == "+" else left - right
        return result
    except pint.errors.DimensionalityError as exc:
        name = _name(right.units)
        link = f"add {name} to" if operator == "+" else f"subtract {name} from"
        raise ToolInputError(
            f"cannot {link} {_name(left.units)}: {_dimension(right)} is not {_dimension(left)}"
        ) from exc


def _name(unit: PlainUnit) -> str:
    symbol = f"{unit:~P}"
    return repr(symbol) if symbol else "a plain number"


def _dimension(value: PlainUnit | Amount) -> str:
    return "dimensionless" if value.dimensionless else str(value.dimensionality)
