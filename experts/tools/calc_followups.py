"""Calculator follow-ups: short turns that work on the conversation's previous result.

After "what is 15% of 80" -> "15% of 80 = 12", the next turn may say only what to do next:

- an operation on the previous result: "times 2", "minus 4", "squared", "double it",
  "halve it", "now add 5", "multiply that by 3", "divide it by 4", "what's that squared",
  "what's 10% of that" -> "12 * 2 = 24", ...; "plus x%" and "minus x%" mean "increased /
  decreased by x%" ("plus 10%" -> "12 increased by 10% = 13.2");
- another share of the previous percentage: "and 20%?", "what about 25%" -> "20% of 80 =
  16" (also after "80 increased by 15%").

The previous result is the number after "=" at the end of the most recent earlier assistant
turn that ends a line that way (the calculator's own "<expression> = <number>"); answers
without one (another expert's prose) are skipped. A follow-up only ever becomes an
ordinary expression, which `experts.tools.arithmetic` evaluates from its AST like any
other.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from experts.base import Message
from experts.tools.arithmetic import parse, render
from experts.tools.base import NothingToCompute, ToolError, earlier_turns
from experts.tools.calc_phrases import find_expression, rewrite
from experts.tools.functions import DECREASE, INCREASE, PERCENT_OF

_NUM = r"(?:\d+(?:\.\d+)?|\.\d+)"
_PERCENT_SIGN = r"\s*(?:%|percent\b|per\s*cent\b|pct\b)"
_REF = r"(?:it|that|this|the\s+(?:(?:previous|last)\s+)?(?:result|answer|total|number))"

_POLITE = ("please", "pls", "thanks", "thank you")
_LEAD = re.compile(
    r"(?:(?:and|now|then|so|ok|okay|also|next|well|but|what\s+about|how\s+about)(?:[\s,]+|$))+"
)
_NEW_SHARE = re.compile(rf"(?P<share>{_NUM}){_PERCENT_SIGN}(?:\s+(?:then|instead))?")
_REF_FIRST = re.compile(
    rf"(?:(?:what(?:'s|\u2019s|\s+is|\s+are)|how\s+much\s+is)\s+)?{_REF}(?:\s+|$)(?P<rest>.*)"
)
_OPERATOR = re.compile(
    r"(?:(?:times|multiplied\s+by|divided\s+by|over|plus|minus|mod|modulo|squared|cubed)\b"
    r"|(?:raised\s+)?to\s+the\b|raised\s+to\b|x(?=\s*[\d(.])|[*/^+\u00d7\u00f7]"
    r"|[-\u2212](?=\s))"
)
_CHANGE = re.compile(
    r"(?:(?P<up>plus|\+|add|increase(?:d)?\s+by)|(?P<down>minus|[-\u2212]|less|subtract"
    rf"|take\s+(?:away|off)|decrease(?:d)?\s+by))\s*(?P<share>{_NUM}){_PERCENT_SIGN}"
)
_REFERENCE = re.compile(rf"\b{_REF}\b")
_TO_FROM = re.compile(r"\b(?:to|from)\b")

# (pattern, text before the result, text after it); "{x}" is the pattern's group `x`.
_VERBS: tuple[tuple[re.Pattern[str], str, str], ...] = tuple(
    (re.compile(pattern), before, after)
    for pattern, before, after in (
        (rf"double(?:\s+{_REF})?", "", " times 2"),
        (rf"triple(?:\s+{_REF})?", "", " times 3"),
        (rf"quadruple(?:\s+{_REF})?", "", " times 4"),
        (rf"halve(?:\s+{_REF})?|half\s+(?:of\s+)?{_REF}", "", " divided by 2"),
        (rf"square(?:\s+{_REF})?", "", " squared"),
        (rf"cube(?:\s+{_REF})?", "", " cubed"),
        (rf"(?:take\s+)?(?:the\s+)?square\s+root(?:\s+of\s+{_REF})?", "sqrt(", ")"),
        (rf"(?:take\s+)?(?:the\s+)?cube\s+root(?:\s+of\s+{_REF})?", "cbrt(", ")"),
        (rf"add\s+(?P<x>.+?)(?:\s+to\s+{_REF})?", "", " plus {x}"),
        (
            rf"(?:subtract|deduct|take\s+away|take\s+off)\s+(?P<x>.+?)(?:\s+from\s+{_REF})?",
            "",
            " minus {x}",
        ),
        (rf"multiply(?:\s+{_REF})?\s+by\s+(?P<x>.+)", "", " times {x}"),
        (rf"divide(?:\s+{_REF})?\s+by\s+(?P<x>.+)", "", " divided by {x}"),
        (rf"(?:increase|raise)(?:\s+{_REF})?\s+by\s+(?P<x>.+)", "", " plus {x}"),
        (rf"(?:decrease|reduce|lower)(?:\s+{_REF})?\s+by\s+(?P<x>.+)", "", " minus {x}"),
        (rf"raise(?:\s+{_REF})?\s+to\s+(?P<x>the\s+.+)", "", " to {x}"),
        (rf"raise(?:\s+{_REF})?\s+to\s+(?P<x>.+)", "", " to the power of {x}"),
    )
)

# "<expression> = <number>" at the end of a line (an optional full stop after it).
_VALUE = r"[-\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e[-+]?\d+)?"
_RESULT = re.compile(rf"(?<![=<>!])=\s*(?P<value>{_VALUE})\s*[.!]?$", re.IGNORECASE)
_SHARE_OF = re.compile(r"(?P<share>[^%]+)% of (?P<base>.+)")
_CHANGED_BY = re.compile(r"(?P<base>.+) (?P<verb>increased|decreased) by (?P<share>[^%]+)%")
_PLAIN = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True, slots=True)
class OnResult:
    """Work on the previous result: `before` + the result + `after`, in plain words."""

    before: str
    after: str


@dataclass(frozen=True, slots=True)
class ChangeResult:
    """The previous result increased (or decreased) by `share` percent."""

    share: str
    increase: bool


@dataclass(frozen=True, slots=True)
class NewShare:
    """The previous percentage again, with `share` percent instead: "and 20%?"."""

    share: str


@dataclass(frozen=True, slots=True)
class Substitute:
    """A message that names the previous result ("what's 10% of that"): its pieces around
    each mention, to be joined with the result."""

    pieces: tuple[str, ...]


Followup = OnResult | ChangeResult | NewShare | Substitute


@dataclass(frozen=True, slots=True)
class Result:
    """A previous answer: the expression before "=" and the number after it, as written."""

    expression: str
    value: str


def read_followup(text: str) -> Followup | None:
    """What `text` asks of an earlier result, judged from its words alone (None: nothing)."""
    clause = _clean(text)
    lead = _LEAD.match(clause)
    if lead is not None:
        clause = clause[lead.end() :]
    if not clause:
        return None
    if (share := _NEW_SHARE.fullmatch(clause)) is not None:
        return NewShare(share.group("share"))
    ref_first = _REF_FIRST.fullmatch(clause)
    rest = ref_first.group("rest") if ref_first is not None else clause
    if (change := _CHANGE.fullmatch(rest)) is not None:
        return ChangeResult(change.group("share"), increase=change.group("up") is not None)
    if rest and _OPERATOR.match(rest) is not None:
        return OnResult("", f" {rest}")
    if (verb := _verb(clause)) is not None:
        return verb
    pieces = tuple(_REFERENCE.split(clause))
    return Substitute(pieces) if len(pieces) > 1 else None


def resolve(followup: Followup, history: Sequence[Message]) -> str | None:
    """The follow-up as an arithmetic expression, or None when history has nothing for it.

    Raises `NothingToCompute` when the words around the earlier result are no arithmetic.
    """
    if isinstance(followup, NewShare):
        return _new_share(followup.share, history)
    result = next(results(history), None)
    if result is None:
        return None
    if isinstance(followup, ChangeResult):
        marker = INCREASE if followup.increase else DECREASE
        return f"{marker}({result.value}, {followup.share})"
    number = result.value if _PLAIN.fullmatch(result.value) else f"({result.value})"
    if isinstance(followup, OnResult):
        phrase = f"{followup.before}{number}{followup.after}"
    else:
        phrase = number.join(followup.pieces)
    expression = find_expression(phrase)
    if re.search(rf"(?<![\w.]){re.escape(number)}(?![\w.])", expression) is None:
        raise NothingToCompute("the arithmetic in the message does not use the earlier result")
    return expression


def results(history: Sequence[Message]) -> Iterator[Result]:
    """The earlier assistant answers of the form "<expression> = <number>", newest first."""
    for text in earlier_turns(history, "assistant"):
        for line in reversed(text.splitlines()):
            match = _RESULT.search(line.rstrip())
            if match is not None:
                value = match.group("value").replace(",", "").replace("\u2212", "-")
                yield Result(expression=line[: match.start()].strip(), value=value.lower())
                break


def _clean(text: str) -> str:
    """Lower-cased, blanks collapsed, without closing punctuation and courtesies."""
    clause = " ".join(text.lower().split()).rstrip(" ?!.,")
    while clause.endswith(_POLITE):
        polite = next(word for word in _POLITE if clause.endswith(word))
        clause = clause[: -len(polite)].rstrip(" ?!.,")
    return clause


def _verb(clause: str) -> Followup | None:
    for pattern, before, after in _VERBS:
        match = pattern.fullmatch(clause)
        if match is None:
            continue
        operand = match.groupdict().get("x")
        if operand is None:
            return OnResult(before, after)
        if _TO_FROM.search(operand):
            return None  # "add 5 to 3" names both operands: not a follow-up
        share = re.fullmatch(rf"(?P<share>{_NUM}){_PERCENT_SIGN}", operand)
        if share is not None and after.startswith((" plus", " minus")):
            return ChangeResult(share.group("share"), increase=after.startswith(" plus"))
        return OnResult(before, after.format(x=operand))
    return None


def _new_share(share: str, history: Sequence[Message]) -> str | None:
    """The most recent earlier percentage ("15% of 80", "80 increased by 15%") at `share`%."""
    for result in results(history):
        split = _split_percentage(result.expression)
        if split is None:
            continue
        before, shown_share, after = split
        if _renders_as(f"{before}{rewrite(shown_share)}{after}", result.expression):
            return f"{before}{share}{after}"
    return None


def _split_percentage(shown: str) -> tuple[str, str, str] | None:
    """A shown percentage as (expression before its share, the share, expression after)."""
    if (match := _SHARE_OF.fullmatch(shown)) is not None:
        return f"{PERCENT_OF}(", match.group("share"), f") * ({rewrite(match.group('base'))})"
    if (match := _CHANGED_BY.fullmatch(shown)) is not None:
        marker = INCREASE if match.group("verb") == "increased" else DECREASE
        return f"{marker}({rewrite(match.group('base'))}, ", match.group("share"), ")"
    return None


def _renders_as(expression: str, shown: str) -> bool:
    """Whether `expression` is what the calculator showed as `shown` ("15% of 80 + 1" is
    (15% of 80) + 1, not 15% of (80 + 1))."""
    try:
        return render(parse(expression)) == shown
    except ToolError:
        return False
