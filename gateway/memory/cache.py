"""The response cache: exact hits, then semantic hits; scoped by tenant and expert.

An exact hit matches the normalised messages, the expert and the sampling parameters. A
semantic hit needs a single-turn request whose text is at least `threshold` similar to a
cached one, with the same system prompt, parameters and numbers (so "15% of 80" never
answers "16% of 80"). Entries are records in an `ExemplarStore` of their own (source
"cache") with an expiry, so the Redis store shares them across replicas.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from gateway.memory.records import Exemplar, ExemplarStore, Vector

CacheKind = Literal["exact", "semantic"]
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


@dataclass(frozen=True, slots=True)
class CacheRequest:
    """What identifies a request for caching, computed once per request."""

    tenant: str
    expert: str
    # Hash of every message, the expert and the parameters: the exact key.
    exact_key: str
    # Hash of everything but the last user turn: semantic hits must share it.
    context_key: str
    # Semantic hits only for single-turn requests.
    semantic: bool
    # The last user turn, and its embedding (needed for semantic lookups and to store).
    text: str
    vector: Vector | None = None


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    content: str
    finish_reason: str
    usage: dict[str, int] | None
    kind: CacheKind
    # The whole `chat.completion` (tool calls, every choice, logprobs), when the expert
    # gave its answer in OpenAI's shape; replayed as it was.
    completion: dict[str, object] | None = None


def cache_request(
    tenant: str,
    expert: str,
    messages: Sequence[tuple[str, str]],
    params: Mapping[str, object],
    vector: Vector | None = None,
    *,
    shapes: Sequence[object] = (),
) -> CacheRequest:
    """Keys for a conversation; `vector` is the embedding of its last user turn.

    `messages` are (role, text) pairs, compared with their whitespace normalised; `shapes`
    is what else each message holds (content parts, tool calls, names), part of the
    exact key as it is."""
    normalised = [(role, " ".join(content.split())) for role, content in messages]
    users = [content for role, content in normalised if role == "user"]
    context = [pair for pair in normalised if pair[0] != "user"]
    text = users[-1] if users else ""
    key: dict[str, object] = {"expert": expert, "messages": normalised, "params": params}
    if shapes:
        key["shapes"] = list(shapes)
    exact = _digest(key)
    context_key = _digest({"expert": expert, "context": context, "params": params})
    single_turn = len(users) == 1 and all(role in ("system", "user") for role, _ in normalised)
    return CacheRequest(tenant, expert, exact, context_key, single_turn, text, vector)


class ResponseCache:
    def __init__(
        self,
        store: ExemplarStore,
        *,
        threshold: float = 0.95,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._threshold = threshold
        self._clock = clock

    async def lookup(self, request: CacheRequest, *, semantic: bool) -> CachedAnswer | None:
        exact = await self._store.get(_record_id(request.tenant, request.exact_key))
        if exact is not None and exact.tenant == request.tenant:
            return _answer(exact, "exact")
        if not (semantic and request.semantic):
            return None
        if request.vector is None:
            raise ValueError("a semantic lookup needs the request's embedding")
        hits = await self._store.search(
            request.vector, 4, expert=request.expert, tenant=request.tenant
        )
        for hit in hits:
            entry = _decode(hit.exemplar)
            if (
                hit.score >= self._threshold
                and entry is not None
                and entry.get("semantic") is True
                and entry["context"] == request.context_key
                and _numbers(hit.exemplar.text) == _numbers(request.text)
            ):
                return _answer(hit.exemplar, "semantic")
        return None

    async def store(
        self,
        request: CacheRequest,
        content: str,
        finish_reason: str,
        usage: dict[str, int] | None,
        ttl_s: float,
        completion: Mapping[str, object] | None = None,
    ) -> None:
        if request.vector is None:
            raise ValueError("storing an answer needs the request's embedding")
        now = self._clock()
        payload = {
            "completion": completion,
            "content": content,
            "finish_reason": finish_reason,
            "usage": usage,
            "context": request.context_key,
            "semantic": request.semantic,
        }
        record = Exemplar(
            id=_record_id(request.tenant, request.exact_key),
            tenant=request.tenant,
            expert=request.expert,
            text=request.text,
            embedding=request.vector,
            response=json.dumps(payload, separators=(",", ":")),
            source="cache",
            created=now,
            expires_at=now + ttl_s,
        )
        await self._store.add([record])


def _record_id(tenant: str, exact_key: str) -> str:
    return _digest({"tenant": tenant, "key": exact_key})


def _digest(value: object) -> str:
    raw = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:40]


def _decode(record: Exemplar) -> dict[str, object] | None:
    try:
        data = json.loads(record.response or "")
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _answer(record: Exemplar, kind: CacheKind) -> CachedAnswer | None:
    data = _decode(record)
    if data is None or not isinstance(data.get("content"), str):
        return None
    usage, completion = data.get("usage"), data.get("completion")
    return CachedAnswer(
        content=str(data["content"]),
        finish_reason=str(data.get("finish_reason") or "stop"),
        usage=usage if isinstance(usage, dict) else None,
        kind=kind,
        completion=completion if isinstance(completion, dict) else None,
    )


def _numbers(text: str) -> list[str]:
    return sorted(_NUMBER.findall(text))
