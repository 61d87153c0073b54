"""Reading unit conversions out of plain words, before pint sees anything.

Two phrasings are understood, clause by clause:

- "<number> <unit> to|in|into|as <unit>": "convert 5 miles to km", "what is 3 feet in
  meters", "100 fahrenheit in celsius"; "a mile to km" and "convert miles to km" mean 1.
- "how many|much <unit> (are there) in|per <number|a|an|one> <unit>": "how many ounces in
  2 kg", "how many seconds in a day".

A follow-up turn names one side only and takes the other from the user's earlier turns:

- a target: "and in feet?", "what about in meters?", "in celsius?", "how about yards";
- a quantity: "and 10 miles?", "what about 3 kg?", "how about a mile?".

Arithmetic on quantities ("12 kg times 4") is read by `experts.tools.unit_arithmetic`,
with the same numbers (`NUMBER`, `read_value`) and clauses (`clauses`).

Only candidate triples come out of here; which unit names are real is pint's business.
Every pattern is free of nested repetition and clauses are capped in length, so the work
stays small for any input.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

from experts.base import Message
from experts.tools.base import earlier_turns

EXPECTED = (
    "expected a conversion such as 'convert 5 miles to km' or 'how many ounces in 2 kg', "
    "or arithmetic on quantities such as '12 kg times 4'"
)
MAX_CLAUSE_CHARS = 200
MAX_CONVERSIONS = 10

NUMBER = (
    r"[-+]?(?:\d+\s*/\s*\d+|(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
    r"(?:e[-+]?\d{1,3})?(?![\d,.])"
)
# A unit: starts with a letter; digits only as exponents ("m^2", "m**-1", "km²").
_UNIT = re.compile(r"(?:[^\W\d_]|[°µμ])(?:[^\W\d]|[°µμ/*^.\s]|(?<=[\^*])-?\d)*")
_CLAUSES = re.compile(r"[;?!\n]+|[,.](?=\s|$)")
_POLITE = re.compile(r"(?:\s+(?:please|pls|thanks|thank\s+you))+$", re.IGNORECASE)
_TO = re.compile(r"\s+(?:to|into|in|as)(?=\s)", re.IGNORECASE)
_FROM = re.compile(
    rf"(?P<value>{NUMBER})|\b(?P<one>a|an|one)\b|\b(?P<verb>convert|change|turn)\b",
    re.IGNORECASE,
)
_HOW_MANY = re.compile(r"\bhow\s+(?:many|much)\s+", re.IGNORECASE)
_IN = re.compile(r"\s+(?:(?:are|is)\s+(?:there\s+)?)?(?:in|per)(?=\s)", re.IGNORECASE)
_AMOUNT = re.compile(
    rf"(?:(?P<value>{NUMBER})\s*|(?:a|an|one)\s+)?(?P<unit>.+)", re.IGNORECASE | re.DOTALL
)
_PRONOUNS = frozenset({"it", "that", "this", "them", "those", "these", "they"})
_LEAD = r"(?P<lead>(?:(?:and|so|ok|okay|now|then|also|well|but)[\s,]+)*)"
_TARGET = re.compile(
    rf"{_LEAD}(?P<ask>(?:(?:what|how)\s+about|what(?:'s|\u2019s|\s+is|\s+are)\s+(?:it|that|this"
    r"|those|they)|how\s+(?:much|many)\s+is\s+(?:it|that|this)|convert\s+(?:it|that|this|them))"
    r"\s+)?(?P<into>(?:in|into|to|as)\s+)?(?P<unit>.+)",
    re.IGNORECASE | re.DOTALL,
)
_QUANTITY = re.compile(
    rf"{_LEAD}(?:(?:what|how)\s+about\s+|(?:and\s+)?for\s+)?"
    rf"(?:(?P<value>{NUMBER})\s*|(?:a|an|one)\s+)(?P<unit>.+)",
    re.IGNORECASE | re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class Conversion:
    """One candidate: convert `value` `source` units into `target` units."""

    value: Fraction
    source: str
    target: str


@dataclass(frozen=True, slots=True)
class Quantity:
    """An amount of a unit, as written: 5 "miles"."""

    value: Fraction
    unit: str


@dataclass(frozen=True, slots=True)
class NewTarget:
    """A follow-up naming only the unit to convert into: "and in feet?"."""

    unit: str


@dataclass(frozen=True, slots=True)
class NewQuantity:
    """A follow-up naming only the quantity to convert: "and 10 miles?"."""

    quantity: Quantity


UnitFollowup = NewTarget | NewQuantity


@dataclass(frozen=True, slots=True)
class Reading:
    """What one earlier user turn names: the quantities and the target units in it."""

    quantities: tuple[Quantity, ...] = ()
    targets: tuple[str, ...] = ()


def find_conversions(text: str) -> list[Conversion]:
    """Every candidate conversion in `text`, most specific phrasing first."""
    found: list[Conversion] = []
    for clause in clauses(text):
        found.extend(_how_many(clause))
        found.extend(_value_to_unit(clause))
        if len(found) >= MAX_CONVERSIONS:
            break
    return found[:MAX_CONVERSIONS]


def find_followup(text: str) -> UnitFollowup | None:
    """The one side of a conversion a follow-up turn names, or None when it is not one.

    Call it on a turn that holds no whole conversion (`find_conversions` found none).
    """
    for clause in clauses(text):
        amount = _QUANTITY.fullmatch(clause)
        if amount is not None and _is_unit(amount.group("unit")):
            value = read_value(amount.group("value"))
            if value is not None:
                return NewQuantity(Quantity(value, amount.group("unit").strip()))
        target = _TARGET.fullmatch(clause)
        if (
            target is not None
            and _is_unit(target.group("unit"))
            and any(target.group(part) for part in ("lead", "ask", "into"))
        ):
            return NewTarget(target.group("unit").strip())
    return None


def earlier_readings(history: Sequence[Message]) -> Iterator[Reading]:
    """What the earlier user turns name, most recent first (turns that name nothing skipped)."""
    for text in earlier_turns(history, "user"):
        conversions = find_conversions(text)
        if conversions:
            yield Reading(
                quantities=tuple(Quantity(c.value, c.source) for c in conversions),
                targets=tuple(c.target for c in conversions),
            )
            continue
        followup = find_followup(text)
        if isinstance(followup, NewTarget):
            yield Reading(targets=(followup.unit,))
        elif isinstance(followup, NewQuantity):
            yield Reading(quantities=(followup.quantity,))


def clauses(text: str) -> Iterator[str]:
    """The clauses of `text` a request may sit in, polite endings dropped, long ones skipped."""
    for raw in _CLAUSES.split(text):
        clause = _POLITE.sub("", raw.strip())
        if clause and len(clause) <= MAX_CLAUSE_CHARS:
            yield clause


def _how_many(clause: str) -> Iterator[Conversion]:
    keyword = _HOW_MANY.search(clause)
    if keyword is None:
        return
    rest = clause[keyword.end() :]
    for link in _IN.finditer(rest):
        target = rest[: link.start()].strip()
        amount = _AMOUNT.fullmatch(rest[link.end() :].strip())
        if amount is None or not _is_unit(target):
            continue
        source = amount.group("unit").strip()
        value = read_value(amount.group("value"))
        if value is not None and _is_unit(source):
            yield Conversion(value, source, target)


def _value_to_unit(clause: str) -> Iterator[Conversion]:
    for link in _TO.finditer(clause):
        target = clause[link.end() :].strip()
        if not _is_unit(target):
            continue
        left = clause[: link.start()]
        for start in reversed(list(_FROM.finditer(left))):
            source = left[start.end() :].strip()
            if not _is_unit(source):
                continue
            value = read_value(start.group("value"))
            if value is not None:
                yield Conversion(value, source, target)
            break


def _is_unit(text: str) -> bool:
    """Whether `text` may name a unit ("convert it to feet" names none on the left)."""
    return (
        bool(text) and _UNIT.fullmatch(text) is not None and text.strip().lower() not in _PRONOUNS
    )


def read_value(text: str | None) -> Fraction | None:
    """The number as written (1 when there is none); None when it is not usable."""
    if text is None:
        return Fraction(1)
    try:
        return Fraction(text.replace(",", "").replace(" ", ""))
    except (ValueError, ZeroDivisionError):
        return None
