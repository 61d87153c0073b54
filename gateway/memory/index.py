"""`VectorIndex`: the in-process exemplar index both stores search.

Records live in one contiguous float32 matrix per tenant (rows appended, a removed row
filled by the last one), so a search over a tenant is a single matrix-vector product,
masked by expert, good and expiry, and cut to the top k with `np.argpartition`. Metadata
is kept once per record without its vector; an `Exemplar` is built (its vector copied
out of the matrix) only for what a read returns. Matrices grow in place (see
`segment.py`), so 1M x 384 vectors cost about 1.5 GB and no second copy.

The index is synchronous and thread-safe (many readers or one writer). The stores call it
from worker threads (`anyio.to_thread`) so that a large search never blocks the event
loop; no view of a matrix outlives the lock it was taken under.
"""

from __future__ import annotations

import heapq
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from gateway.memory.records import Exemplar, Hit, Source, Vector
from gateway.memory.rwlock import RWLock
from gateway.memory.segment import MIN_ROWS, Matrix, Segment

# A record without its vector, in the order a snapshot stores it:
# (id, expert, text, response, source, created, good, expires_at).
MetaRow = tuple[str, str, str, str | None, Source, float, bool, float | None]


@dataclass(slots=True)
class _Meta:
    id: str
    tenant: str
    expert: str
    text: str
    response: str | None
    source: Source
    created: float
    good: bool
    expires_at: float | None
    row: int


class VectorIndex:
    """All records by id, one matrix per tenant. `dim` None: set by the first record."""

    def __init__(self, dim: int | None = None, clock: Callable[[], float] = time.time) -> None:
        self._dim = dim
        self._clock = clock
        self._lock = RWLock()
        self._records: dict[str, _Meta] = {}
        self._segments: dict[str, Segment] = {}
        self._codes: dict[str, int] = {}

    @property
    def dim(self) -> int | None:
        return self._dim

    def __len__(self) -> int:
        return len(self._records)

    # -- writes -------------------------------------------------------------------------

    def upsert(self, exemplars: Sequence[Exemplar]) -> None:
        """Add or replace records by id. Raises ValueError for a vector of the wrong shape."""
        self.apply(exemplars, (), _never)

    def _check_dim(self, dim: int) -> None:
        if self._dim is None:
            self._dim = dim
        elif dim != self._dim:
            raise ValueError(f"embedding has {dim} dimensions, the store {self._dim}")

    def _upsert_one(self, exemplar: Exemplar, vector: Vector) -> None:
        meta = self._records.get(exemplar.id)
        if meta is not None and meta.tenant != exemplar.tenant:
            self._drop(meta)
            meta = None
        segment = self._segment(exemplar.tenant)
        if meta is None:
            segment.reserve(segment.size + 1)
            row = segment.size
            segment.size += 1
            segment.ids.append(exemplar.id)
        else:
            row = meta.row
        segment.vectors[row] = vector
        segment.expert[row] = self._code(exemplar.expert)
        segment.good[row] = exemplar.good
        segment.expires[row] = np.inf if exemplar.expires_at is None else exemplar.expires_at
        self._records[exemplar.id] = _Meta(
            exemplar.id,
            sys.intern(exemplar.tenant),
            sys.intern(exemplar.expert),
            exemplar.text,
            exemplar.response,
            exemplar.source,
            exemplar.created,
            exemplar.good,
            exemplar.expires_at,
            row,
        )

    def remove(self, ids: Iterable[str]) -> dict[str, bool]:
        """Remove records by id; for each one it held: whether it was live (not expired)."""
        now = self._clock()
        found: dict[str, bool] = {}
        with self._lock.write():
            for exemplar_id in ids:
                meta = self._records.get(exemplar_id)
                if meta is not None:
                    found[exemplar_id] = not _expired(meta, now)
                    self._drop(meta)
        return found

    def apply(
        self,
        present: Sequence[Exemplar],
        gone: Iterable[str],
        keep: Callable[[str], bool],
    ) -> None:
        """Apply changes read elsewhere (upsert `present`, remove `gone`) in one step, except
        for ids where `keep(id)` says the index holds something newer. ValueError as `upsert`.
        """
        vectors = [_as_vector(exemplar.embedding) for exemplar in present]
        with self._lock.write():
            for vector in vectors:
                self._check_dim(vector.shape[0])
            for exemplar, vector in zip(present, vectors, strict=True):
                if not keep(exemplar.id):
                    self._upsert_one(exemplar, vector)
            for exemplar_id in gone:
                meta = self._records.get(exemplar_id)
                if meta is not None and not keep(exemplar_id):
                    self._drop(meta)

    def purge_expired(self) -> int:
        """Drop expired records for good; returns how many."""
        now = self._clock()
        with self._lock.write():
            expired = [
                segment.ids[row]
                for segment in self._segments.values()
                for row in np.flatnonzero(segment.expires[: segment.size] <= now).tolist()
            ]
            for exemplar_id in expired:
                self._drop(self._records[exemplar_id])
        return len(expired)

    def clear(self) -> None:
        with self._lock.write():
            self._records.clear()
            self._segments.clear()
            self._codes.clear()

    def _drop(self, meta: _Meta) -> None:
        """Remove a record: the tenant's last row moves into its place."""
        del self._records[meta.id]
        segment = self._segments[meta.tenant]
        last = segment.size - 1
        row = meta.row
        if row != last:
            moved_id = segment.ids[last]
            segment.vectors[row] = segment.vectors[last]
            segment.expert[row] = segment.expert[last]
            segment.good[row] = segment.good[last]
            segment.expires[row] = segment.expires[last]
            segment.ids[row] = moved_id
            self._records[moved_id].row = row
        segment.ids.pop()
        segment.size = last
        if last == 0:
            del self._segments[meta.tenant]
        else:
            segment.reserve(last)

    def _segment(self, tenant: str) -> Segment:
        segment = self._segments.get(tenant)
        if segment is None:
            assert self._dim is not None
            vectors = np.empty((MIN_ROWS, self._dim), dtype=np.float32)
            segment = self._segments[tenant] = Segment(vectors, 0)
        return segment

    def _code(self, expert: str) -> int:
        return self._codes.setdefault(expert, len(self._codes))

    # -- reads --------------------------------------------------------------------------

    def search(
        self,
        vector: Vector,
        k: int,
        *,
        expert: str | None = None,
        tenant: str | None = None,
        good_only: bool = False,
    ) -> list[Hit]:
        """At most k hits by dot product (cosine for unit vectors), best first."""
        if k <= 0 or self._dim is None:
            return []
        query, now = self.query_vector(vector), self._clock()
        with self._lock.read():
            return self._search(query, k, expert, tenant, good_only, now)

    def search_now(
        self,
        vector: Vector,
        k: int,
        *,
        expert: str | None = None,
        tenant: str | None = None,
        good_only: bool = False,
    ) -> list[Hit] | None:
        """`search` without waiting: None while a writer holds or waits for the index."""
        if k <= 0 or self._dim is None:
            return []
        query, now = self.query_vector(vector), self._clock()
        with self._lock.read_now() as held:
            return self._search(query, k, expert, tenant, good_only, now) if held else None

    def _search(
        self,
        query: Vector,
        k: int,
        expert: str | None,
        tenant: str | None,
        good_only: bool,
        now: float,
    ) -> list[Hit]:
        code = None if expert is None else self._codes.get(expert)
        if expert is not None and code is None:
            return []
        tenants = list(self._segments) if tenant is None else [tenant]
        found: list[tuple[float, str]] = []
        for name in tenants:
            segment = self._segments.get(name)
            if segment is None:
                continue
            rows, scores = segment.top(query, k, now, code, good_only)
            found.extend(
                (float(score), segment.ids[row])
                for row, score in zip(rows.tolist(), scores.tolist(), strict=True)
            )
        best = heapq.nsmallest(k, found, key=lambda pair: -pair[0])
        return [Hit(self._exemplar(self._records[i]), score) for score, i in best]

    def query_vector(self, vector: Vector) -> Vector:
        """`vector` as float32; ValueError unless it has this index's dimension (if known)."""
        query = _as_vector(vector)
        if self._dim is not None and query.shape[0] != self._dim:
            raise ValueError(f"query has {query.shape[0]} dimensions, the store {self._dim}")
        return query

    def get(self, exemplar_id: str) -> Exemplar | None:
        now = self._clock()
        with self._lock.read():
            meta = self._records.get(exemplar_id)
            if meta is None or _expired(meta, now):
                return None
            return self._exemplar(meta)

    def get_many(self, ids: Iterable[str]) -> dict[str, Exemplar]:
        """The live records among `ids`, by id."""
        now = self._clock()
        with self._lock.read():
            metas = (self._records.get(exemplar_id) for exemplar_id in ids)
            return {
                meta.id: self._exemplar(meta)
                for meta in metas
                if meta is not None and not _expired(meta, now)
            }

    def count(self, *, expert: str | None = None, tenant: str | None = None) -> int:
        now = self._clock()
        with self._lock.read():
            code = None if expert is None else self._codes.get(expert)
            if expert is not None and code is None:
                return 0
            segments = self._segments.values() if tenant is None else [self._segments.get(tenant)]
            total = 0
            for segment in segments:
                if segment is None:
                    continue
                mask = segment.live(now, code, good_only=False)
                total += segment.size if mask is None else int(np.count_nonzero(mask))
            return total

    def tenant_size(self, tenant: str | None) -> int:
        """Rows held for `tenant` (None: all), expired ones included; no lock, O(1)."""
        if tenant is None:
            return len(self._records)
        segment = self._segments.get(tenant)
        return 0 if segment is None else segment.size

    def list_records(
        self,
        *,
        tenant: str | None = None,
        expert: str | None = None,
        source: Source | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Exemplar]:
        """Live records, newest first (ties by id), filtered, one page."""
        if limit <= 0:
            return []
        now = self._clock()
        with self._lock.read():
            matching = (
                meta
                for meta in self._records.values()
                if (tenant is None or meta.tenant == tenant)
                and (expert is None or meta.expert == expert)
                and (source is None or meta.source == source)
                and not _expired(meta, now)
            )
            page = heapq.nsmallest(
                max(offset, 0) + limit, matching, key=lambda meta: (-meta.created, meta.id)
            )
            return [self._exemplar(meta) for meta in page[max(offset, 0) :]]

    def ids(self) -> set[str]:
        with self._lock.read():
            return set(self._records)

    def _exemplar(self, meta: _Meta) -> Exemplar:
        vector = self._segments[meta.tenant].vectors[meta.row].copy()
        return Exemplar(
            id=meta.id,
            tenant=meta.tenant,
            expert=meta.expert,
            text=meta.text,
            embedding=vector,
            response=meta.response,
            source=meta.source,
            created=meta.created,
            good=meta.good,
            expires_at=meta.expires_at,
        )

    # -- bulk export / import (snapshots) -------------------------------------------------

    @contextmanager
    def exported(self) -> Iterator[list[tuple[str, Matrix, list[MetaRow]]]]:
        """Per tenant: its vectors (a read-only view) and records, valid inside the block.

        Writers wait until the block ends; searches go on.
        """
        with self._lock.read():
            out: list[tuple[str, Matrix, list[MetaRow]]] = []
            for tenant, segment in self._segments.items():
                view = segment.vectors[: segment.size].view()
                view.flags.writeable = False
                rows = [_meta_row(self._records[i]) for i in segment.ids]
                out.append((tenant, view, rows))
            yield out

    def import_segment(self, tenant: str, vectors: Matrix, rows: Sequence[MetaRow]) -> None:
        """Load a tenant's records, taking ownership of `vectors` ([len(rows), dim] float32).

        For an empty index, or a tenant it does not hold yet; ids must be new.
        """
        if vectors.ndim != 2 or vectors.shape[0] != len(rows) or vectors.dtype != np.float32:
            raise ValueError(f"vectors {vectors.shape} {vectors.dtype} for {len(rows)} records")
        with self._lock.write():
            self._check_dim(int(vectors.shape[1]))
            if tenant in self._segments or any(row[0] in self._records for row in rows):
                raise ValueError(f"tenant {tenant!r} or some of its ids are already loaded")
            if not rows:
                return
            segment = Segment(vectors, len(rows))
            for number, row in enumerate(rows):
                meta = _Meta(row[0], sys.intern(tenant), *row[1:], row=number)
                meta.expert = sys.intern(meta.expert)
                segment.ids.append(meta.id)
                segment.expert[number] = self._code(meta.expert)
                segment.good[number] = meta.good
                segment.expires[number] = np.inf if meta.expires_at is None else meta.expires_at
                self._records[meta.id] = meta
            self._segments[tenant] = segment


def _never(_: str) -> bool:
    return False


def _as_vector(embedding: Vector) -> Vector:
    vector = np.asarray(embedding, dtype=np.float32)
    if vector.ndim != 1 or vector.shape[0] == 0:
        raise ValueError(f"an embedding must be a non-empty vector, got shape {vector.shape}")
    return vector


def _expired(meta: _Meta, now: float) -> bool:
    return meta.expires_at is not None and meta.expires_at <= now


def _meta_row(meta: _Meta) -> MetaRow:
    return (
        meta.id,
        meta.expert,
        meta.text,
        meta.response,
        meta.source,
        meta.created,
        meta.good,
        meta.expires_at,
    )
