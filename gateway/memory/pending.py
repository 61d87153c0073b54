"""Short-lived conversation memory: pending clarifications, and which expert answered a turn.

Both are keyed by a hash of conversation text, scoped by tenant, and expire. The
protocol is small so that a shared store (Redis) can hold them and a reply may land on
any replica; `LocalConversationMemory` is the in-process default.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class PendingClarification:
    question: str
    # The experts the question offered, in the order it named them.
    options: tuple[str, ...]
    reason: str
    created: float


@dataclass(frozen=True, slots=True)
class CompletionRecord:
    """An answer the gateway gave, kept for a while so the user can rate it."""

    id: str
    tenant: str
    expert: str
    # The request text it answered (the routing text), and the answer.
    text: str
    answer: str
    created: float


def conversation_key(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.strip().encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:32]


class ConversationMemory(Protocol):
    async def put_clarification(
        self, tenant: str, key: str, pending: PendingClarification, ttl_s: float
    ) -> None: ...

    async def get_clarification(self, tenant: str, key: str) -> PendingClarification | None: ...

    async def drop_clarification(self, tenant: str, key: str) -> None: ...

    async def put_turn(self, tenant: str, key: str, expert: str, ttl_s: float) -> None: ...

    async def get_turn(self, tenant: str, key: str) -> str | None: ...

    async def put_completion(self, record: CompletionRecord, ttl_s: float) -> None: ...

    async def get_completion(self, tenant: str, completion_id: str) -> CompletionRecord | None: ...


_PURGE_PER_PUT = 4


class _ExpiringMap(Generic[V]):
    """A bounded map whose entries expire; the oldest go first when full."""

    def __init__(self, max_entries: int, clock: Callable[[], float]) -> None:
        self._items: OrderedDict[tuple[str, str], tuple[float, V]] = OrderedDict()
        self._max = max_entries
        self._clock = clock

    def put(self, key: tuple[str, str], value: V, ttl_s: float) -> None:
        now = self._clock()
        self._items[key] = (now + ttl_s, value)
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)
        # The oldest entries sit first; drop the expired ones there (a few per put), so a
        # map stays as small as its TTL allows, not only as its bound.
        for _ in range(_PURGE_PER_PUT):
            oldest = next(iter(self._items.values()), None)
            if oldest is None or oldest[0] > now:
                break
            self._items.popitem(last=False)

    def get(self, key: tuple[str, str]) -> V | None:
        entry = self._items.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self._clock():
            del self._items[key]
            return None
        return value

    def drop(self, key: tuple[str, str]) -> None:
        self._items.pop(key, None)


class LocalConversationMemory:
    """In-process memory for one gateway process."""

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self._clarifications: _ExpiringMap[PendingClarification] = _ExpiringMap(max_entries, clock)
        self._turns: _ExpiringMap[str] = _ExpiringMap(max_entries, clock)
        self._completions: _ExpiringMap[CompletionRecord] = _ExpiringMap(max_entries, clock)

    async def put_clarification(
        self, tenant: str, key: str, pending: PendingClarification, ttl_s: float
    ) -> None:
        self._clarifications.put((tenant, key), pending, ttl_s)

    async def get_clarification(self, tenant: str, key: str) -> PendingClarification | None:
        return self._clarifications.get((tenant, key))

    async def drop_clarification(self, tenant: str, key: str) -> None:
        self._clarifications.drop((tenant, key))

    async def put_turn(self, tenant: str, key: str, expert: str, ttl_s: float) -> None:
        self._turns.put((tenant, key), expert, ttl_s)

    async def get_turn(self, tenant: str, key: str) -> str | None:
        return self._turns.get((tenant, key))

    async def put_completion(self, record: CompletionRecord, ttl_s: float) -> None:
        self._completions.put((record.tenant, record.id), record, ttl_s)

    async def get_completion(self, tenant: str, completion_id: str) -> CompletionRecord | None:
        return self._completions.get((tenant, completion_id))
