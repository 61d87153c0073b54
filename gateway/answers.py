"""Answers in OpenAI's shape: collected from a delta stream, merged from chunks, split into
chunks.

An expert that speaks the whole protocol hands over its answer as the upstream sent it
(`Delta.chunk`, `Delta.completion`); experts that produce text give the text view alone.
`Answer` collects either kind. Chunks merge into a `chat.completion` the way OpenAI's
own client accumulates a stream (strings concatenate, tool calls merge by `index`, lists
extend, anything else is replaced), so a streamed answer can be cached and replayed
whole; `split_completion` turns a whole answer back into chunks, and merging them gives
the answer back exactly.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

from experts.base import Delta, JSONObject, JSONValue, Usage

# Keys whose value a later chunk repeats rather than continues: never concatenated.
_REPLACED: frozenset[str] = frozenset({"index", "type", "role", "id", "name"})
# Chunk-level keys that are not part of the merged answer.
_PER_CHUNK: frozenset[str] = frozenset({"id", "object", "created", "model", "choices", "usage"})


class Answer:
    """What a delta stream said: the first choice's text view, its finish reason, usage,
    the expert's `meta`, and the whole answer when the expert gave it in OpenAI's shape."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.meta: Mapping[str, JSONValue] = {}
        self._chunks: list[Mapping[str, JSONValue]] = []
        self._completion: Mapping[str, JSONValue] | None = None

    def add(self, delta: Delta) -> None:
        self._parts.append(delta.content)
        self.finish_reason = delta.finish_reason or self.finish_reason
        self.usage = delta.usage or self.usage
        self.meta = delta.meta or self.meta
        if delta.chunk is not None:
            self._chunks.append(delta.chunk)
        if delta.completion is not None:
            self._completion = delta.completion

    @property
    def text(self) -> str:
        return "".join(self._parts)

    @property
    def started(self) -> bool:
        return bool(self._parts)

    def completion(self) -> JSONObject | None:
        """The whole `chat.completion`, or None for an answer given as text alone."""
        if self._completion is not None:
            return dict(self._completion)
        if self._chunks:
            return merge_chunks(self._chunks)
        return None

    def tool_call_ids(self) -> list[str]:
        """The ids of the tool calls the answer makes (any choice), without merging it."""
        ids: list[str] = []
        if self._completion is not None:
            for choice in _objects(self._completion.get("choices")):
                ids += _call_ids(choice.get("message"))
        for chunk in self._chunks:
            for choice in _objects(chunk.get("choices")):
                ids += _call_ids(choice.get("delta"))
        return ids


def merge_chunks(chunks: Iterable[Mapping[str, JSONValue]]) -> JSONObject:
    """Streamed `chat.completion.chunk`s as the one `chat.completion` they spell."""
    top: JSONObject = {}
    choices: dict[int, JSONObject] = {}
    for chunk in chunks:
        for key, value in chunk.items():
            if key == "usage" and value is not None:
                top["usage"] = copy.deepcopy(value)
            elif key not in _PER_CHUNK and (value is not None or key not in top):
                top[key] = copy.deepcopy(value)
        for item in _objects(chunk.get("choices")):
            index = item.get("index", 0)
            choice = choices.setdefault(index if isinstance(index, int) else 0, {})
            for key, value in item.items():
                if key == "delta" and isinstance(value, dict):
                    message = choice.setdefault("message", {})
                    assert isinstance(message, dict)
                    _accumulate(message, value)
                elif key == "logprobs" and isinstance(value, dict):
                    logprobs = choice.get("logprobs")
                    if not isinstance(logprobs, dict):
                        logprobs = choice["logprobs"] = {}
                    _accumulate(logprobs, value)
                elif key != "delta" and (value is not None or key not in choice):
                    choice[key] = copy.deepcopy(value)
    body: JSONObject = {"object": "chat.completion", **top}
    body["choices"] = [_finish_choice(choices[i]) for i in sorted(choices)]
    if "usage" in top:
        body["usage"] = top["usage"]
    return body


def split_completion(completion: Mapping[str, JSONValue]) -> list[JSONObject]:
    """A whole answer as chunks (without `id`, `created`, `model`): per choice, its
    message, then its tool calls, then its finish reason; usage in a last chunk of no
    choices. `merge_chunks` of them is the answer again."""
    extra: JSONObject = {
        k: copy.deepcopy(v) for k, v in completion.items() if k not in _PER_CHUNK
    }
    chunks: list[JSONObject] = []
    for choice in _objects(completion.get("choices")):
        index = choice.get("index", 0)
        message = choice.get("message")
        fields = dict(message) if isinstance(message, dict) else {}
        calls = fields.pop("tool_calls", None)
        first: JSONObject = {"index": index, "delta": copy.deepcopy(fields)}
        if "logprobs" in choice:
            first["logprobs"] = copy.deepcopy(choice["logprobs"])
        chunks.append({**extra, "choices": [first]})
        if isinstance(calls, list):
            numbered: list[JSONValue] = [
                {"index": i, **copy.deepcopy(call)} if isinstance(call, dict) else call
                for i, call in enumerate(calls)
            ]
            calls_delta: JSONObject = {"index": index, "delta": {"tool_calls": numbered}}
            chunks.append({**extra, "choices": [calls_delta]})
        last: JSONObject = {
            k: copy.deepcopy(v)
            for k, v in choice.items()
            if k not in ("index", "message", "logprobs")
        }
        chunks.append({**extra, "choices": [{"index": index, "delta": {}, **last}]})
    if completion.get("usage") is not None:
        chunks.append({**extra, "choices": [], "usage": copy.deepcopy(completion["usage"])})
    return chunks


def _accumulate(into: JSONObject, delta: Mapping[str, JSONValue]) -> None:
    for key, value in delta.items():
        have = into.get(key)
        if key not in into:
            into[key] = copy.deepcopy(value)
        elif value is None:
            continue
        elif isinstance(have, str) and isinstance(value, str) and key not in _REPLACED:
            into[key] = have + value
        elif isinstance(have, dict) and isinstance(value, dict):
            _accumulate(have, value)
        elif isinstance(have, list) and isinstance(value, list):
            _extend(have, value)
        else:
            into[key] = copy.deepcopy(value)


def _extend(have: list[JSONValue], more: list[JSONValue]) -> None:
    """Items with an `index` merge into the item of that index; others are appended."""
    for item in more:
        if isinstance(item, dict) and isinstance(item.get("index"), int):
            same = next(
                (x for x in have if isinstance(x, dict) and x.get("index") == item["index"]),
                None,
            )
            if same is not None:
                _accumulate(same, item)
                continue
        have.append(copy.deepcopy(item))


def _finish_choice(choice: JSONObject) -> JSONObject:
    """A merged choice in `chat.completion` shape: tool calls lose their stream `index`."""
    message = choice.get("message")
    if not isinstance(message, dict):
        message = {}
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        message["tool_calls"] = [
            {k: v for k, v in call.items() if k != "index"} if isinstance(call, dict) else call
            for call in calls
        ]
    ordered: JSONObject = {"index": choice.get("index", 0), "message": message}
    ordered.update({k: v for k, v in choice.items() if k not in ("index", "message")})
    return ordered


def _call_ids(message: JSONValue | None) -> list[str]:
    calls = message.get("tool_calls") if isinstance(message, dict) else None
    return [str(c["id"]) for c in _objects(calls) if isinstance(c.get("id"), str) and c["id"]]


def _objects(value: JSONValue | None) -> list[JSONObject]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []
