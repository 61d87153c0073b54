"""The gateway's memory as one collaborator: conversation state, exemplars, cached answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from gateway.memory.cache import ResponseCache
from gateway.memory.pending import ConversationMemory
from gateway.memory.records import ExemplarStore, StoreStatus


@dataclass(frozen=True, slots=True)
class Memory:
    conversation: ConversationMemory
    exemplars: ExemplarStore
    # The response cache and the store that holds its entries.
    cache: ResponseCache
    cache_store: ExemplarStore
    # Run last on close (e.g. closing the Redis client the stores share).
    closers: Sequence[Callable[[], Awaitable[None]]] = ()
    # That client, with the Redis backend: API keys and rate limits live beside the memory.
    redis: Redis | None = None

    async def start(self) -> None:
        await self.exemplars.start()
        await self.cache_store.start()

    async def aclose(self) -> None:
        await self.cache_store.aclose()
        await self.exemplars.aclose()
        for close in self.closers:
            await close()

    def status(self) -> StoreStatus:
        """The exemplar store's status, degraded if either store is."""
        exemplars, cache = self.exemplars.status(), self.cache_store.status()
        if not cache.ok and exemplars.ok:
            return StoreStatus(
                False, f"cache: {cache.detail}", cache.queued_writes, exemplars.records
            )
        return exemplars
