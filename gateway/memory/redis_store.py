"""`RedisStore`: exemplars in Redis, shared by every replica, searched in-process.

Layout in `redis_wire.py`. Every replica keeps a `VectorIndex` in step with Redis: `start()`
reads the change stream's position, loads every record (SCAN + pipelined HGETALL) and a
background task then follows the stream (XREAD BLOCK) from that position, re-reading each
changed record, so a write on one replica is searchable on the others well within a
second. A write updates the local index first (read-your-writes), then Redis: the hash
and a stream entry in one MULTI/EXEC.

Faults: every call has a deadline (`timeout_s`; create the client with `socket_timeout`
and `socket_connect_timeout` of about a second, more than `sync_block_ms`, and
`decode_responses=False`). While Redis is unreachable the store serves reads from its
index, queues writes (at most `queue_limit`; the oldest is dropped, logged and counted,
when full) and `status()` says degraded. A reconnect loop (ping with backoff) then
flushes the queue in order and reloads everything, since the stream may have been
trimmed meanwhile. No Redis exception reaches the caller.

Vector search runs in Redis where the server has a search module and `vector_search` says
so ("auto": tenants of at least `ft_min_records` records; "redis": always; "local":
never); otherwise, and whenever that fails, in the local index.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import Literal

import anyio
import anyio.to_thread
from redis.asyncio import Redis

from gateway.memory.index import VectorIndex
from gateway.memory.reads import IndexReads
from gateway.memory.records import Exemplar, Hit, StoreStatus, Vector
from gateway.memory.redis_search import Algorithm, RedisVectorSearch
from gateway.memory.redis_sync import Follower, Resync
from gateway.memory.redis_wire import RedisDown, RedisKeys, RedisReplyError, encode, guarded

logger = logging.getLogger(__name__)

VectorSearch = Literal["auto", "local", "redis"]
_WRITE_BATCH = 500
# Extra neighbours asked of Redis, for hits the local index finds expired.
_KNN_SLACK = 8
# From this many records of a tenant, its unfiltered-by-expert searches walk the HNSW graph.
_BATCHES_MIN_RECORDS = 10_000


class _Write:
    """One queued write: an upsert (`exemplar`) or a removal (`exemplar` None)."""

    __slots__ = ("exemplar", "id", "seq")

    def __init__(self, seq: int, exemplar_id: str, exemplar: Exemplar | None) -> None:
        self.seq = seq
        self.id = exemplar_id
        self.exemplar = exemplar


class RedisStore(IndexReads):
    """An `ExemplarStore` in Redis under `{prefix}:{namespace}`; see the module docstring.

    The client stays the caller's: `aclose()` stops this store's tasks, not the client.
    """

    def __init__(
        self,
        client: Redis,
        *,
        namespace: str,
        dim: int | None = None,
        prefix: str = "taskgate",
        queue_limit: int = 10_000,
        vector_search: VectorSearch = "auto",
        ft_min_records: int = 50_000,
        clock: Callable[[], float] = time.time,
        sync_block_ms: int = 200,
        timeout_s: float = 1.0,
        stream_maxlen: int = 100_000,
        ft_algorithm: Algorithm = "HNSW",
        retry_max_s: float = 5.0,
    ) -> None:
        _check_client(client, sync_block_ms)
        if queue_limit < 1:
            raise ValueError("queue_limit must be at least 1")
        if vector_search not in ("auto", "local", "redis"):
            raise ValueError(f"vector_search must be auto, local or redis, not {vector_search!r}")
        self._client = client
        self._keys = RedisKeys(prefix, namespace)
        self._index = VectorIndex(dim, clock)
        self._clock = clock
        self._timeout = timeout_s
        self._queue: deque[_Write] = deque()
        self._queue_limit = queue_limit
        self._seq = itertools.count()
        self._dropped = 0
        self._stream_maxlen = stream_maxlen
        self._mode = vector_search
        self._ft_min = ft_min_records
        self._search = RedisVectorSearch(
            client, self._keys, algorithm=ft_algorithm, timeout_s=timeout_s
        )
        # Tags this store's stream entries, so that it skips its own writes when following.
        self._origin = uuid.uuid4().hex
        self._sync = Follower(
            client,
            self._keys,
            self._index,
            timeout_s=timeout_s,
            block_ms=sync_block_ms,
            origin=self._origin,
        )
        self._retry_max = retry_max_s
        self._link_up = False  # writes go straight to Redis
        self._synced = False  # the index has caught up since the last outage
        self._detail = "not started"
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Load everything from Redis; if it is unreachable, start degraded and keep trying."""
        if self._task is not None:
            return
        position: str | None = None
        try:
            position = await self._recover()
        except RedisDown as exc:
            self._degrade(exc)
        self._task = asyncio.create_task(self._supervise(position), name="redis-store-sync")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            # A cancellation that lands as a read timeout fires can be swallowed inside the
            # client (asyncio.timeout on Python 3.11): cancel until the task has ended.
            while not task.done():
                task.cancel()
                await asyncio.wait([task], timeout=0.5)
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._queue:
            logger.warning(
                "redis store closed with queued writes that never reached redis",
                extra={"action": "close", "queued_writes": len(self._queue)},
            )

    # -- the ExemplarStore contract --------------------------------------------------------

    async def add(self, exemplars: Sequence[Exemplar]) -> None:
        batch = list(exemplars)
        if not batch:
            return
        ids = [ex.id for ex in batch]
        self._sync.begin(ids)
        try:
            await anyio.to_thread.run_sync(self._index.upsert, batch)
            await self._write([(ex.id, ex) for ex in batch])
        finally:
            self._sync.end(ids)
        await self._prepare_search_index()

    async def remove(self, ids: Sequence[str]) -> int:
        """Removes `ids`; counts those live here, or, unknown here, present in Redis."""
        unique = list(dict.fromkeys(ids))
        if not unique:
            return 0
        self._sync.begin(unique)
        try:
            found = await anyio.to_thread.run_sync(self._index.remove, unique)
            deleted = await self._write([(exemplar_id, None) for exemplar_id in unique])
        finally:
            self._sync.end(unique)
        return sum(found.get(i, i in deleted) for i in unique)

    async def search(
        self,
        vector: Vector,
        k: int,
        *,
        expert: str | None = None,
        tenant: str | None = None,
        good_only: bool = False,
    ) -> list[Hit]:
        if k > 0 and self._redis_searches(tenant, expert):
            query = self._index.query_vector(vector)
            hits = await self._search_in_redis(query, k, expert, tenant, good_only)
            if hits is not None:
                return hits
        return await super().search(vector, k, expert=expert, tenant=tenant, good_only=good_only)

    def status(self) -> StoreStatus:
        ok = self._link_up and self._synced
        module = {None: "unknown", True: "yes", False: "no"}[self._search.available]
        extra = {
            "backend": "redis",
            "vector_search": self._mode,
            "search_module": module,
            "dropped_writes": str(self._dropped),
            "full_loads": str(self._sync.loads),
        }
        detail = "" if ok else (self._detail or "catching up with redis")
        return StoreStatus(ok, detail, len(self._queue), len(self._index), extra)

    # -- writes --------------------------------------------------------------------------

    async def _write(self, changes: list[tuple[str, Exemplar | None]]) -> set[str]:
        """Send changes to Redis, or queue them; the removed ids whose keys Redis deleted."""
        writes = [_Write(next(self._seq), exemplar_id, ex) for exemplar_id, ex in changes]
        deleted: set[str] = set()
        for start in range(0, len(writes), _WRITE_BATCH):
            if not self._link_up or self._queue:
                self._enqueue(writes[start:])
                break
            try:
                deleted |= await self._send(writes[start : start + _WRITE_BATCH])
            except RedisDown as exc:
                self._degrade(exc)
                self._enqueue(writes[start:])
                break
        return deleted

    async def _send(self, writes: Sequence[_Write]) -> set[str]:
        pipe = self._client.pipeline(transaction=True)
        deletes: list[tuple[int, str]] = []  # the removals' DEL replies: position, id
        queued = 0
        for write in writes:
            key = self._keys.record(write.id)
            if write.exemplar is None:
                deletes.append((queued, write.id))
            pipe.delete(key)
            queued += 1
            if write.exemplar is not None:
                pipe.hset(key, mapping=encode(write.exemplar))  # type: ignore[arg-type]
                queued += 1
                if write.exemplar.expires_at is not None:
                    pipe.pexpireat(key, int(write.exemplar.expires_at * 1000))
                    queued += 1
            stream = self._keys.stream
            pipe.xadd(
                stream,
                {"id": write.id, "origin": self._origin},
                maxlen=self._stream_maxlen,
                approximate=True,
            )
            queued += 1
        results = await guarded("write", self._timeout, pipe.execute())
        return {exemplar_id for position, exemplar_id in deletes if int(results[position])}

    def _enqueue(self, writes: Sequence[_Write]) -> None:
        dropped = 0
        for write in writes:
            if len(self._queue) >= self._queue_limit:
                self._queue.popleft()
                dropped += 1
            self._queue.append(write)
        if dropped:
            self._dropped += dropped
            logger.error(
                "redis write queue full: dropped the oldest queued writes",
                extra={"action": "queue_drop", "dropped": dropped, "dropped_total": self._dropped},
            )

    async def _flush(self) -> None:
        """Send the queued writes in order; writes queued meanwhile go after them."""
        while self._queue:
            batch = list(itertools.islice(self._queue, _WRITE_BATCH))
            await self._send(batch)
            last = batch[-1].seq
            while self._queue and self._queue[0].seq <= last:
                self._queue.popleft()
        self._link_up = True

    # -- sync and recovery ---------------------------------------------------------------

    async def _recover(self) -> str:
        """Ping, flush the queue, reload everything; the stream position to follow from."""
        await guarded("PING", self._timeout, self._client.ping())
        await self._flush()
        if self._mode != "local" and self._search.available is None:
            await self._search.detect()
        position = await self._sync.full_load()
        await self._prepare_search_index()
        if self._synced is False:
            logger.info(
                "redis store in sync",
                extra={"action": "sync", "records": len(self._index), "store": self._keys.base},
            )
        self._synced = True
        self._detail = ""
        return position

    async def _supervise(self, position: str | None) -> None:
        delay = 0.05
        while True:
            try:
                if position is None:
                    position = await self._recover()
                    delay = 0.05
                await self._sync.follow(position, lambda: self._link_up)
            except Resync:
                logger.warning("redis change stream trimmed past this replica; reloading")
            except RedisDown as exc:
                self._degrade(exc)
                await anyio.sleep(delay)
                delay = min(delay * 2, self._retry_max)
            except Exception as exc:  # keep the sync loop alive whatever happens
                logger.exception("redis store sync failed", extra={"action": "sync"})
                self._degrade(RedisDown(f"sync: {exc!r}"))
                await anyio.sleep(self._retry_max)
            position = None

    def _degrade(self, exc: RedisDown) -> None:
        if self._link_up or self._synced or self._detail == "not started":
            logger.warning(
                "redis unavailable: serving from the local index, queueing writes",
                extra={"action": "degraded", "error": str(exc), "store": self._keys.base},
            )
        self._link_up = False
        self._synced = False
        self._detail = str(exc)

    # -- vector search in Redis ----------------------------------------------------------

    async def _prepare_search_index(self) -> None:
        """Create the search index once the dimension is known (before records pile up)."""
        dim = self._index.dim
        if self._mode == "local" or not self._search.available or dim is None:
            return
        if self._search.ready_dim != dim and self._link_up:
            try:
                await self._search.ensure_index(dim)
            except RedisReplyError as exc:
                logger.warning("redis search index not created", exc_info=exc)
            except RedisDown as exc:
                self._degrade(exc)

    def _redis_searches(self, tenant: str | None, expert: str | None) -> bool:
        if self._mode == "local" or not (self._link_up and self._synced):
            return False
        if not self._search.available or self._index.dim is None or "" in (tenant, expert):
            return False
        return self._mode == "redis" or self._index.tenant_size(tenant) >= self._ft_min

    async def _search_in_redis(
        self, vector: Vector, k: int, expert: str | None, tenant: str | None, good_only: bool
    ) -> list[Hit] | None:
        # A tenant filter alone passes a large share of a large index: walk the graph.
        # (RediSearch's own estimate picked brute force over 100,000 records: 9 ms, not 1.)
        broad = expert is None and not good_only
        broad = broad and self._index.tenant_size(tenant) >= _BATCHES_MIN_RECORDS
        try:
            found = await self._search.knn(
                vector,
                k + _KNN_SLACK,
                expert=expert,
                tenant=tenant,
                good_only=good_only,
                policy="BATCHES" if broad else None,
            )
        except RedisReplyError as exc:
            logger.warning("redis vector search failed; searching locally", exc_info=exc)
            return None
        except RedisDown as exc:
            self._degrade(exc)
            return None
        if found is None:
            return None
        ids = [exemplar_id for exemplar_id, _ in found]
        known = await anyio.to_thread.run_sync(self._index.get_many, ids)
        missing = [exemplar_id for exemplar_id in ids if exemplar_id not in known]
        if missing:
            try:
                known.update(await self._sync.fetch(missing))
            except RedisDown as exc:
                self._degrade(exc)
        now = self._clock()
        hits = [Hit(known[i], score) for i, score in found if i in known]
        return [hit for hit in hits if not hit.exemplar.expired(now)][:k]


def _check_client(client: Redis, block_ms: int) -> None:
    options = client.connection_pool.connection_kwargs
    if options.get("decode_responses"):
        raise ValueError("RedisStore needs a client with decode_responses=False (raw vectors)")
    timeout = options.get("socket_timeout")
    if timeout is not None and timeout * 1000 <= block_ms:
        raise ValueError(f"socket_timeout {timeout}s must exceed sync_block_ms {block_ms}ms")
