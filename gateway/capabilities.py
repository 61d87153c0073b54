"""What a chat request needs of an expert beyond text, and which experts can give it.

A request carrying `tools` (or tool turns), image/audio/file parts, `n` > 1 or `logprobs`
goes only to experts whose capabilities include that; the config declares them, with a
default per kind (`openai`: everything; tools and in-process models: text).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from experts.base import JSONValue, Message
from experts.specs import CAPABILITIES, Capability, ExpertSpec
from gateway.errors import InvalidRequest

# Content part types and the capability each needs; other types need none.
_PART_NEEDS: Mapping[str, Capability] = {
    "image_url": "images",
    "input_image": "images",
    "input_audio": "audio",
    "file": "files",
}


def request_needs(messages: Sequence[Message], extra: Mapping[str, JSONValue]) -> frozenset[str]:
    """The capabilities a request needs, from its messages' whole shape and its fields."""
    needs: set[str] = set()
    if _present(extra.get("tools")) or _present(extra.get("functions")):
        needs.add("tools")
    for message in messages:
        raw = message.raw or {}
        if message.role == "tool" or raw.get("role") == "function":
            needs.add("tools")
        if _present(raw.get("tool_calls")) or _present(raw.get("function_call")):
            needs.add("tools")
        content = raw.get("content")
        for part in content if isinstance(content, list) else []:
            kind = part.get("type") if isinstance(part, dict) else None
            if isinstance(kind, str) and kind in _PART_NEEDS:
                needs.add(_PART_NEEDS[kind])
    modalities = extra.get("modalities")
    if extra.get("audio") is not None or (
        isinstance(modalities, list) and "audio" in modalities
    ):
        needs.add("audio")
    n = extra.get("n")
    if isinstance(n, int) and n > 1:
        needs.add("n")
    if extra.get("logprobs") is True or extra.get("top_logprobs") is not None:
        needs.add("logprobs")
    return frozenset(needs)


def forces_tool_call(extra: Mapping[str, JSONValue]) -> bool:
    """Whether the answer must be a tool call (`tool_choice` required or named): a
    clarification question in plain text is then never an answer."""
    choice = extra.get("tool_choice", extra.get("function_call"))
    return choice == "required" or isinstance(choice, dict)


def lacking(spec: ExpertSpec, needs: Iterable[str]) -> list[str]:
    """What of `needs` the expert cannot take, in a fixed order."""
    have = spec.capability_set
    wanted = set(needs)
    return [c for c in CAPABILITIES if c in wanted and c not in have]


def capable(specs: Iterable[ExpertSpec], needs: frozenset[str]) -> frozenset[str]:
    """The names of the experts that can take a request with these needs."""
    return frozenset(spec.name for spec in specs if not lacking(spec, needs))


def check_capable(spec: ExpertSpec, needs: frozenset[str], specs: Sequence[ExpertSpec]) -> None:
    """A 400 that names what the named expert lacks and which experts can take it."""
    missing = lacking(spec, needs)
    if missing:
        raise incapable(f"expert '{spec.name}' cannot take {_listing(missing)}", needs, specs)


def incapable(what: str, needs: frozenset[str], specs: Sequence[ExpertSpec]) -> InvalidRequest:
    able = sorted(capable(specs, needs))
    wanted = [c for c in CAPABILITIES if c in needs]
    others = (
        f"experts that take {_listing(wanted)}: {', '.join(able)}"
        if able
        else f"no expert of this gateway takes {_listing(wanted)}"
    )
    return InvalidRequest(f"{what}; {others}", param="model", code="unsupported_capability")


def _listing(capabilities: Sequence[str]) -> str:
    return " and ".join(capabilities)


def _present(value: JSONValue | None) -> bool:
    return value is not None and value != [] and value != {}


# Request fields that make the answer structured (a tool call, JSON, a grammar).
_STRUCTURED = frozenset(
    {
        "tools",
        "tool_choice",
        "functions",
        "function_call",
        "guided_json",
        "guided_regex",
        "guided_choice",
        "guided_grammar",
        "structured_outputs",
    }
)


def plain_text(needs: frozenset[str], extra: Mapping[str, JSONValue]) -> bool:
    """Whether a request asks for plain text and nothing more: only those may be answered
    by a similar earlier request (a semantic cache hit)."""
    response_format = extra.get("response_format")
    text_format = response_format is None or response_format == {"type": "text"}
    return not needs and text_format and not (_STRUCTURED & extra.keys())
