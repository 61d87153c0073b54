"""Keeps a replica's `VectorIndex` in step with the records in Redis.

`full_load()` first reads the change stream's position (XINFO STREAM: the last id and how
many entries were ever added), then loads every record (SCAN + pipelined HGETALL) and
drops what Redis no longer has; `follow()` then reads the stream from that position
(XREAD BLOCK) and re-reads each changed record, so nothing that changed during the load
is missed. An entry names only an id (and the store that wrote it): its record's current
state in Redis is the truth (absent: removed). A store skips the entries of its own writes,
which its index already holds. If the stream was trimmed past entries this replica had not read,
`follow()` raises `Resync` and the store reloads everything.

A record read from Redis must not overwrite a newer local write: the store brackets each
write with `begin()` / `end()`, and a re-read record is applied only if no write of its
id was in flight, or ended, after the read began; such an id is read again shortly after,
since Redis may by then hold a later write of another replica.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import anyio.to_thread
from redis.asyncio import Redis

from gateway.memory.index import VectorIndex
from gateway.memory.records import Exemplar
from gateway.memory.redis_wire import (
    RedisDown,
    RedisKeys,
    RedisReplyError,
    as_text,
    decode,
    guarded,
)

logger = logging.getLogger(__name__)

Raw = Mapping[bytes | str, bytes | str]
_SCAN_COUNT = 1000
_READ_COUNT = 1000
_RECHECK_MS = 20


class Resync(Exception):
    """The change stream no longer holds entries this replica has not read."""


class Follower:
    def __init__(
        self,
        client: Redis,
        keys: RedisKeys,
        index: VectorIndex,
        *,
        timeout_s: float,
        block_ms: int,
        origin: str = "",
        purge_interval_s: float = 60.0,
    ) -> None:
        self._client = client
        self._origin = origin.encode()
        self._keys = keys
        self._index = index
        self._timeout = timeout_s
        self._block_ms = block_ms
        self._purge_interval = purge_interval_s
        # Entries ever added to the stream up to the position read so far.
        self._consumed = 0
        # Local writes: in flight per id, and (while Redis is being read) the write number
        # each id last ended with.
        self._guard = threading.Lock()
        self._pending: Counter[str] = Counter()
        self._ended: dict[str, int] = {}
        self._writes = 0
        self._readers = 0
        self._recheck: set[str] = set()
        # Full loads done (the first, and one per recovery or trimmed stream).
        self.loads = 0

    def begin(self, ids: Iterable[str]) -> None:
        """A local write of `ids` starts (before the local index changes)."""
        with self._guard:
            self._pending.update(ids)

    def end(self, ids: Iterable[str]) -> None:
        """The local write of `ids` reached Redis, was queued, or failed."""
        with self._guard:
            self._writes += 1
            for exemplar_id in ids:
                self._pending[exemplar_id] -= 1
                if self._pending[exemplar_id] <= 0:
                    del self._pending[exemplar_id]
                if self._readers:
                    self._ended[exemplar_id] = self._writes

    @contextmanager
    def _reading(self) -> Iterator[int]:
        """Around a read from Redis: yields the mark that `_newer_locally` compares with."""
        with self._guard:
            self._readers += 1
            mark = self._writes
        try:
            yield mark
        finally:
            with self._guard:
                self._readers -= 1
                if not self._readers:  # later reads start after every recorded write
                    self._ended.clear()

    def _newer_locally(self, exemplar_id: str, mark: int) -> bool:
        with self._guard:
            return exemplar_id in self._pending or self._ended.get(exemplar_id, 0) > mark

    async def full_load(self) -> str:
        """Load every record; returns the stream position to follow from."""
        position, self._consumed = await self._stream_state()
        with self._reading() as mark:
            seen: set[str] = set()
            cursor = 0
            while True:
                cursor, keys = await guarded(
                    "SCAN",
                    self._timeout,
                    self._client.scan(cursor, match=self._keys.scan_pattern, count=_SCAN_COUNT),
                )
                ids = [self._keys.id_of(key) for key in keys]
                if ids:
                    await self.refresh(ids)
                    seen.update(ids)
                if cursor == 0:
                    break
            stale = await anyio.to_thread.run_sync(self._index.ids)
            stale -= seen
            if stale:
                keep = functools.partial(self._newer_locally, mark=mark)
                await anyio.to_thread.run_sync(self._index.apply, (), stale, keep)
        self.loads += 1
        return position

    async def follow(self, position: str, link_up: Callable[[], bool]) -> None:
        """Apply the stream's changes from `position` on, until Redis fails (`RedisDown`)."""
        next_purge = time.monotonic() + self._purge_interval
        deadline = self._block_ms / 1000 + self._timeout
        while True:
            if not link_up():
                raise RedisDown("a write to redis failed")
            # Ids set aside because a local write was in flight are read again soon.
            block = min(self._block_ms, _RECHECK_MS) if self._recheck else self._block_ms
            reply: object = await guarded(
                "XREAD",
                deadline,
                self._client.xread({self._keys.stream: position}, count=_READ_COUNT, block=block),
            )
            entries = _entries(reply)
            changed = list(self._recheck)
            if entries:
                await self._check_gap(len(entries))
                changed += [
                    as_text(fields[b"id"])
                    for _, fields in entries
                    if b"id" in fields and not self._mine(fields)
                ]
                position = as_text(entries[-1][0])
            if changed:
                await self.refresh(list(dict.fromkeys(changed)))
            if time.monotonic() >= next_purge:
                await anyio.to_thread.run_sync(self._index.purge_expired)
                next_purge = time.monotonic() + self._purge_interval

    def _mine(self, fields: Mapping[bytes, bytes]) -> bool:
        return bool(self._origin) and fields.get(b"origin") == self._origin

    async def refresh(self, ids: Sequence[str]) -> None:
        """Re-read `ids` from Redis into the index (absent ones are removed).

        An id with a local write in flight, or ended during the read, is left as the index
        has it and read again by `follow()`: Redis may hold a later write of another
        replica whose entry this replica has already read.
        """
        with self._reading() as mark:
            replies = await self._hgetall(ids)
            skipped = await anyio.to_thread.run_sync(self._apply, ids, replies, mark)
        self._recheck.difference_update(ids)
        self._recheck.update(skipped)

    async def fetch(self, ids: Sequence[str]) -> dict[str, Exemplar]:
        """The records among `ids` that Redis holds and that decode, by id."""
        replies = await self._hgetall(ids)
        return {ex.id: ex for ex in _decoded(ids, replies) if ex is not None}

    async def _hgetall(self, ids: Sequence[str]) -> list[Raw]:
        pipe = self._client.pipeline(transaction=False)
        for exemplar_id in ids:
            pipe.hgetall(self._keys.record(exemplar_id))
        replies: list[Raw] = await guarded("HGETALL", self._timeout, pipe.execute())
        return replies

    def _apply(self, ids: Sequence[str], replies: Sequence[Raw], mark: int) -> set[str]:
        """(worker thread) Upsert what Redis holds, remove what it does not; returns the
        ids left alone because the index holds a newer local write."""
        records = _decoded(ids, replies)
        present = [ex for ex in records if ex is not None]
        gone = [i for i, ex in zip(ids, records, strict=True) if ex is None]
        skipped: set[str] = set()

        def keep(exemplar_id: str) -> bool:
            newer = self._newer_locally(exemplar_id, mark)
            if newer:
                skipped.add(exemplar_id)
            return newer

        try:
            self._index.apply(present, gone, keep)
        except ValueError:  # a vector of another dimension: apply the rest one by one
            for exemplar in present:
                try:
                    self._index.apply([exemplar], (), keep)
                except ValueError as exc:
                    logger.warning("skipped a redis record", extra={"error": str(exc)})
            self._index.apply((), gone, keep)
        return skipped

    async def _stream_state(self) -> tuple[str, int]:
        """The stream's last id and how many entries it ever had ("0-0", 0 if none)."""
        try:
            info = await guarded(
                "XINFO STREAM", self._timeout, self._client.xinfo_stream(self._keys.stream)
            )
        except RedisReplyError:  # no such key yet
            return "0-0", 0
        return as_text(info["last-generated-id"]), int(info.get("entries-added", 0))

    async def _check_gap(self, read: int) -> None:
        """Raise `Resync` if entries after the last position were trimmed before being read."""
        try:
            info = await guarded(
                "XINFO STREAM", self._timeout, self._client.xinfo_stream(self._keys.stream)
            )
        except RedisReplyError:
            return
        unread = int(info.get("entries-added", 0)) - self._consumed
        if unread > int(info["length"]):
            raise Resync(f"{unread} unread entries, {info['length']} left in the stream")
        self._consumed += read


def _entries(reply: object) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The entries of an XREAD reply for one stream, in either protocol's shape:
    RESP2 [[name, [(id, fields), ...]]], RESP3 {name: [[(id, fields), ...]]}."""
    if isinstance(reply, Mapping):
        return [tuple(entry) for batches in reply.values() for batch in batches for entry in batch]
    if isinstance(reply, list):
        return [tuple(entry) for _, entries in reply for entry in entries]
    raise RedisReplyError(f"unexpected XREAD reply: {reply!r:.200}")


def _decoded(ids: Sequence[str], replies: Sequence[Raw]) -> list[Exemplar | None]:
    out: list[Exemplar | None] = []
    for exemplar_id, raw in zip(ids, replies, strict=True):
        if not raw:
            out.append(None)
            continue
        try:
            out.append(decode(exemplar_id, raw))
        except ValueError as exc:
            logger.warning("skipped a malformed redis record", extra={"error": str(exc)})
            out.append(None)
    return out
