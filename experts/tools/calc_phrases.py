"""Reading arithmetic out of plain words ("what is 15% of 80"), before anything is evaluated.

The message is rewritten into a Python-syntax expression ("times" -> "*", "x% of y" ->
`__percent_of__(x) * y`, "2^10" -> "2 ** 10", "1,234" -> "1234"), and the arithmetic part is
picked out of the surrounding words; `experts.tools.arithmetic` then evaluates it from its
AST. Commas between groups of three digits are thousands separators ("max(1,234)" reads as
one number; write "max(1, 234)"). A bare "%" after a number means /100 ("50%" is 0.5), and
"%" between two operands is the remainder ("17 % 5" is 2). "-3 squared" is (-3)^2 = 9,
while "-3^2" keeps the usual precedence and is -9.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence

from experts.tools.arithmetic import parse
from experts.tools.base import NothingToCompute, check_length
from experts.tools.functions import (
    CONSTANTS,
    DECREASE,
    FUNCTIONS,
    INCREASE,
    MARKERS,
    PERCENT,
    PERCENT_OF,
)

EXPECTED = (
    "expected arithmetic such as '15% of 80', 'compute 3.5 * (12 - 4)' or '2 to the power of 10'"
)

_NUM = r"(?<![\d.])(?:\d++(?:\.\d*+)?|\.\d++)"  # possessive: no backtracking
_Rewrite = tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]


def _power_word(match: re.Match[str]) -> str:
    exponent = "2" if match.group("word") == "squared" else "3"
    minus, base = match.group("minus"), match.group("base")
    if minus is None:
        return f"{base}^{exponent}"
    before = match.string[: match.start()].rstrip()
    binary = bool(before) and (before[-1].isdigit() or before[-1] == ")")
    if binary or base == ")":
        return f"{minus}{base}^{exponent}"
    return f"(-{base})^{exponent}"


# Applied in order to the lower-cased message. Every pattern is free of nested repetition.
_REWRITES: tuple[_Rewrite, ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"_", " "),  # no identifier of the user's may look like a marker
        (r"[\u00d7\u2715\u2716]|(?<=[\d)])\s*x\s*(?=[\d(.])", " * "),
        (r"[\u00f7\u2215]", " / "),
        (r"[\u2212\u2013\u2014](?=\s*[\d(.])", "-"),
        (r"\u00b2", "^2"),
        (r"\u00b3", "^3"),
        (r"\u221a", " sqrt "),
        (r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?!\d|,\d)", lambda m: m.group().replace(",", "")),
        (r"\b(?:per\s*cent|percent|pct)\b", "%"),
        (r"\bmultiplied\s+by\b|\btimes\b", " * "),
        (r"\bdivided\s+by\b|(?<=[\d)])\s+over\s+(?=[\d(.])", " / "),
        (r"\bplus\b", " + "),
        (r"\bminus\b", " - "),
        (rf"\bto\s+the\s+({_NUM})(?:st|nd|rd|th)(?:\s+power)?\b", r" ^ \1"),
        (r"\b(?:raised\s+)?to\s+the\s+power(?:\s+of)?\b|\braised\s+to\b", " ^ "),
        (
            rf"(?P<minus>-\s*)?(?P<base>{_NUM}|\))\s*(?P<word>squared|cubed)\b",
            _power_word,
        ),
        (r"\b(?:the\s+)?square\s+root\s+of\b|\bsqrt\s+of\b", " sqrt "),
        (r"\b(?:the\s+)?cube\s+root\s+of\b", " cbrt "),
        (rf"\b(?:sqrt|cbrt)\s+({_NUM})", lambda m: f"{m.group().split()[0]}({m.group(1)})"),
        (
            rf"\b(increase|raise|decrease|reduce|lower)\s+({_NUM})\s+by\s+({_NUM})\s*%",
            lambda m: _change(m.group(1), m.group(2), m.group(3)),
        ),
        (
            rf"({_NUM})\s+(increased|decreased|reduced)\s+by\s+({_NUM})\s*%",
            lambda m: _change(m.group(2), m.group(1), m.group(3)),
        ),
        (rf"({_NUM})\s*%\s*of\b", rf"{PERCENT_OF}(\1) * "),
        (rf"({_NUM})\s*%(?!\s*[\w.(])", rf"{PERCENT}(\1)"),
        (r"\b(?:mod|modulo)\b", " % "),
        (r"\^", " ** "),
    )
)


def _change(verb: str, whole: str, percent: str) -> str:
    marker = INCREASE if verb.startswith(("increase", "raise")) else DECREASE
    return f"{marker}({whole}, {percent})"


_TOKEN = re.compile(
    r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)|(?P<name>[a-z_]\w*)"
    r"|(?P<op>\*\*|//|[-+*/%(),]))"
)
_NAMES = frozenset(FUNCTIONS) | frozenset(MARKERS) | frozenset(CONSTANTS)
_OPERATORS = frozenset({"+", "-", "*", "/", "//", "%", "**"})
_LEADING_JUNK = frozenset({"*", "/", "//", "%", "**", ",", ")"})
_TRAILING_JUNK = frozenset({"+", "-", "*", "/", "//", "%", "**", ",", "("})


def rewrite(text: str) -> str:
    """The message in Python syntax, with the calculator's markers for percentages."""
    rewritten = text.lower()
    for pattern, replacement in _REWRITES:
        rewritten = pattern.sub(replacement, rewritten)
    return rewritten


def find_expression(text: str) -> str:
    """The arithmetic in `text`, as a Python-syntax expression (raises `NothingToCompute`).

    Words around the arithmetic split it into candidate runs of tokens; the longest run
    that reads as an expression wins.
    """
    check_length(text, "calculator")
    candidates = sorted(_candidates(rewrite(text)), key=len, reverse=True)
    for tokens in candidates:
        expression = _join(tokens)
        try:
            parse(expression)
        except NothingToCompute:
            continue
        return expression
    raise NothingToCompute(f"found no arithmetic in the message; {EXPECTED}")


def _join(tokens: Sequence[str]) -> str:
    """Tokens back into text, with a blank only where two words would otherwise merge."""
    parts: list[str] = []
    for token in tokens:
        if parts and parts[-1][-1].isalnum() and (token[0].isalnum() or token[0] == "."):
            parts.append(" ")
        parts.append(token)
    return "".join(parts)


def _candidates(text: str) -> Iterator[list[str]]:
    """Runs of known tokens, split at unknown words, stray characters and top-level commas."""
    run: list[str] = []
    depth = 0
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        token = _token_text(match)
        if match is not None and token is not None and not (token == "," and depth == 0):
            depth += {"(": 1, ")": -1}.get(token, 0)
            run.append(token)
            position = match.end()
            continue
        yield from _qualified(run)
        run, depth = [], 0
        position = match.end() if match is not None else _skip(text, position)
    yield from _qualified(run)


def _token_text(match: re.Match[str] | None) -> str | None:
    """The token's text, or None for a word the calculator does not know."""
    if match is None:
        return None
    name = match.group("name")
    if name is not None and name not in _NAMES:
        return None
    return match.group("num") or name or match.group("op")


def _skip(text: str, position: int) -> int:
    """Skip blanks and then one foreign character, or a whole foreign word."""
    while position < len(text) and text[position].isspace():
        position += 1
    if position < len(text) and text[position].isalpha():
        while position < len(text) and (text[position].isalnum() or text[position] == "_"):
            position += 1
        return position
    return position + 1


def _qualified(run: Sequence[str]) -> Iterator[list[str]]:
    tokens = list(run)
    while tokens and tokens[0] in _LEADING_JUNK:
        tokens.pop(0)
    while tokens and tokens[-1] in _TRAILING_JUNK:
        tokens.pop()
    has_operand = any(
        token[0].isdigit() or token[0] == "." or token in CONSTANTS for token in tokens
    )
    has_work = any(token in _OPERATORS for token in tokens[1:]) or any(
        token in _NAMES for token in tokens
    )
    if has_operand and has_work:
        yield tokens
