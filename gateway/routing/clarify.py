"""Clarification questions, and resolving the user's answer to one of the offered experts.

A question names each option in plain words (the expert's `ask` phrase, else its
description) followed by its name, in the order of the `options`; the answer resolves by
expert name, by ordinal ("the second one"), or by similarity to the options' descriptions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

_ORDINALS: dict[str, int] = {
    "first": 0, "1st": 0, "one": 0, "1": 0, "former": 0, "a": 0,
    "second": 1, "2nd": 1, "two": 1, "2": 1, "b": 1,
    "third": 2, "3rd": 2, "three": 2, "3": 2, "c": 2,
    "fourth": 3, "4th": 3, "four": 3, "4": 3,
    "fifth": 4, "5th": 4, "five": 4, "5": 4,
}  # fmt: skip
_LAST = {"last", "latter", "final"}
_WORD = re.compile(r"[a-z0-9]+(?:st|nd|rd|th)?")
# Short answers only: "the second one", "option 2", "2", "the latter please".
_MAX_ORDINAL_WORDS = 5


@dataclass(frozen=True, slots=True)
class ExpertProfile:
    name: str
    description: str
    ask: str | None = None

    @property
    def phrase(self) -> str:
        return self.ask if self.ask else f"help with {self.description}"

    @property
    def text(self) -> str:
        """What a reply is compared with when it resolves by similarity."""
        return f"{self.ask}: {self.description}" if self.ask else self.description


def question_for(
    options: Sequence[ExpertProfile], reason: Literal["close_margin", "no_match"]
) -> str:
    phrases = [f"{profile.phrase} ({profile.name})" for profile in options]
    if len(phrases) == 1:
        choice = f"Do you want me to {phrases[0]}?"
    else:
        choice = "Do you want me to " + ", to ".join(phrases[:-1]) + f", or to {phrases[-1]}?"
    if reason == "no_match":
        return f"I'm not sure which of my experts fits this. {choice} You can also rephrase."
    return choice


def resolve_by_name(reply: str, options: Sequence[str], all_experts: Sequence[str]) -> str | None:
    """An expert named in the reply; the offered options first, then any other expert."""
    lowered = reply.lower()
    for pool in (options, all_experts):
        named = [name for name in pool if _mentions(lowered, name.lower())]
        if len(named) == 1:
            return named[0]
    return None


def _mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def resolve_by_ordinal(reply: str, options: Sequence[str]) -> str | None:
    words = _WORD.findall(reply.lower())
    if not words or len(words) > _MAX_ORDINAL_WORDS:
        return None
    picks = {len(options) - 1 for w in words if w in _LAST}
    picks |= {_ORDINALS[w] for w in words if w in _ORDINALS and w not in {"a", "one"}}
    if not picks and words in (["a"], ["one"]):
        picks = {_ORDINALS[words[0]]}
    if len(picks) != 1:
        return None
    index = picks.pop()
    return options[index] if 0 <= index < len(options) else None
