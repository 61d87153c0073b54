"""Conversation memory in Redis, so a clarification answer may land on any replica.

Values are JSON strings with a Redis TTL. When Redis cannot be reached the memory keeps
working in process: what Redis did not take is kept here (a reply that returns to the
same replica still resolves) and reads fall back to it; nothing raises to the request
path. While Redis is well nothing is copied into the process: every answer leaves a turn
and a completion record, and copying them grew a busy gateway by ~100 MB and slowed it
down as the copies filled up (benchmarks/soak.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable
from dataclasses import asdict
from typing import TypeVar

from redis.asyncio import Redis

from gateway.memory.pending import (
    CompletionRecord,
    LocalConversationMemory,
    PendingClarification,
)
from gateway.memory.redis_wire import RedisDown, guarded

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RedisConversationMemory:
    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "taskgate",
        timeout_s: float = 1.0,
        fallback: LocalConversationMemory | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._timeout_s = timeout_s
        self._local = fallback if fallback is not None else LocalConversationMemory()

    def _key(self, kind: str, tenant: str, key: str) -> str:
        return f"{self._prefix}:conv:{kind}:{tenant}:{key}"

    async def _call(self, what: str, call: Awaitable[T]) -> T | None:
        try:
            return await guarded(what, self._timeout_s, call)
        except RedisDown as exc:
            logger.warning(
                "redis unavailable for conversation memory",
                extra={"action": what, "error": str(exc)},
            )
            return None

    async def _put(self, kind: str, tenant: str, key: str, value: str, ttl_s: float) -> bool:
        """Whether Redis took the value."""
        ttl_ms = max(int(ttl_s * 1000), 1)
        key = self._key(kind, tenant, key)
        return bool(await self._call(kind, self._client.set(key, value, px=ttl_ms)))

    async def _get(self, kind: str, tenant: str, key: str) -> str | None:
        raw = await self._call(kind, self._client.get(self._key(kind, tenant, key)))
        if raw is None:
            return None
        return raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)

    async def put_clarification(
        self, tenant: str, key: str, pending: PendingClarification, ttl_s: float
    ) -> None:
        if not await self._put("clarify", tenant, key, json.dumps(asdict(pending)), ttl_s):
            await self._local.put_clarification(tenant, key, pending, ttl_s)

    async def get_clarification(self, tenant: str, key: str) -> PendingClarification | None:
        raw = await self._get("clarify", tenant, key)
        if raw is None:
            return await self._local.get_clarification(tenant, key)
        data = json.loads(raw)
        return PendingClarification(
            data["question"], tuple(data["options"]), data["reason"], data["created"]
        )

    async def drop_clarification(self, tenant: str, key: str) -> None:
        await self._local.drop_clarification(tenant, key)
        await self._call("clarify", self._client.delete(self._key("clarify", tenant, key)))

    async def put_turn(self, tenant: str, key: str, expert: str, ttl_s: float) -> None:
        if not await self._put("turn", tenant, key, expert, ttl_s):
            await self._local.put_turn(tenant, key, expert, ttl_s)

    async def get_turn(self, tenant: str, key: str) -> str | None:
        remote = await self._get("turn", tenant, key)
        return remote if remote is not None else await self._local.get_turn(tenant, key)

    async def put_completion(self, record: CompletionRecord, ttl_s: float) -> None:
        value = json.dumps(asdict(record))
        if not await self._put("completion", record.tenant, record.id, value, ttl_s):
            await self._local.put_completion(record, ttl_s)

    async def get_completion(self, tenant: str, completion_id: str) -> CompletionRecord | None:
        raw = await self._get("completion", tenant, completion_id)
        if raw is None:
            return await self._local.get_completion(tenant, completion_id)
        return CompletionRecord(**json.loads(raw))
