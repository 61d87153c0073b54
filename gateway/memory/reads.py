"""The read half of the `ExemplarStore` contract, answered from an in-process `VectorIndex`
in a worker thread (a large search never blocks the event loop). `LocalStore` and
`RedisStore` both keep such an index and share these methods.

A search of a small index runs inline, unless a write holds the index: it takes
microseconds, less than the hop to a worker thread and back, and routing searches the
tenant's learned exemplars on every request (the profile of routed requests showed 5% of
the gateway's CPU in that hop).
"""

from __future__ import annotations

import anyio.to_thread

from gateway.memory.index import VectorIndex
from gateway.memory.records import Exemplar, Hit, Source, Vector

# Up to this many rows a search costs well under 100 µs (a [rows, 384] float32 product).
INLINE_SEARCH_ROWS = 2048


class IndexReads:
    _index: VectorIndex

    async def get(self, exemplar_id: str) -> Exemplar | None:
        return await anyio.to_thread.run_sync(self._index.get, exemplar_id)

    async def search(
        self,
        vector: Vector,
        k: int,
        *,
        expert: str | None = None,
        tenant: str | None = None,
        good_only: bool = False,
    ) -> list[Hit]:
        if len(self._index) <= INLINE_SEARCH_ROWS:
            found = self._index.search_now(
                vector, k, expert=expert, tenant=tenant, good_only=good_only
            )
            if found is not None:
                return found

        def run() -> list[Hit]:
            return self._index.search(vector, k, expert=expert, tenant=tenant, good_only=good_only)

        return await anyio.to_thread.run_sync(run)

    async def count(self, *, expert: str | None = None, tenant: str | None = None) -> int:
        def run() -> int:
            return self._index.count(expert=expert, tenant=tenant)

        return await anyio.to_thread.run_sync(run)

    async def list_records(
        self,
        *,
        tenant: str | None = None,
        expert: str | None = None,
        source: Source | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Exemplar]:
        def run() -> list[Exemplar]:
            return self._index.list_records(
                tenant=tenant, expert=expert, source=source, limit=limit, offset=offset
            )

        return await anyio.to_thread.run_sync(run)
