"""One tenant's rows in the `VectorIndex`: a float32 matrix and the columns searches filter on.

Rows are appended; a removed row is filled by the last one (the index keeps the id -> row
map). The arrays grow and shrink in place when they own their memory (`realloc`, which
the allocator serves by remapping pages for large blocks), so growth needs no second copy.
Not thread-safe on its own: the index holds its lock around every call.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from gateway.memory.records import Vector

Matrix = NDArray[np.float32]

MIN_ROWS = 64
_GROWTH = 1.25
# Below this fraction of candidate rows, gather them before the product.
_GATHER_FRACTION = 0.25


def _resized(array: NDArray[np.generic], rows: int) -> NDArray[np.generic]:
    """`array` with `rows` rows: grown or shrunk in place when it owns its memory."""
    shape = (rows, *array.shape[1:])
    if array.flags.owndata and array.flags.c_contiguous and array.base is None:
        array.resize(shape, refcheck=False)
        return array
    fresh = np.empty(shape, dtype=array.dtype)
    keep = min(rows, array.shape[0])
    fresh[:keep] = array[:keep]
    return fresh


class Segment:
    """One tenant's rows: vectors plus the columns the search filters on."""

    __slots__ = ("expert", "expires", "good", "ids", "size", "vectors")

    def __init__(self, vectors: Matrix, size: int) -> None:
        capacity = vectors.shape[0]
        self.vectors = vectors
        self.size = size
        self.ids: list[str] = []
        self.expert = np.zeros(capacity, dtype=np.int32)
        self.good = np.zeros(capacity, dtype=np.bool_)
        self.expires = np.full(capacity, np.inf, dtype=np.float64)

    def reserve(self, rows: int) -> None:
        capacity = self.vectors.shape[0]
        if rows > capacity:
            self._set_capacity(max(rows, int(capacity * _GROWTH), MIN_ROWS))
        elif capacity > MIN_ROWS and self.size * 4 < capacity:
            self._set_capacity(max(self.size * 2, MIN_ROWS))

    def _set_capacity(self, rows: int) -> None:
        self.vectors = _resized(self.vectors, rows)  # type: ignore[assignment]
        self.expert = _resized(self.expert, rows)  # type: ignore[assignment]
        self.good = _resized(self.good, rows)  # type: ignore[assignment]
        self.expires = _resized(self.expires, rows)  # type: ignore[assignment]

    def live(self, now: float, code: int | None, good_only: bool) -> NDArray[np.bool_] | None:
        """The rows that pass the filters, or None when every row does."""
        n = self.size
        mask: NDArray[np.bool_] | None = None
        if code is not None:
            mask = self.expert[:n] == code
        if good_only:
            mask = self.good[:n] if mask is None else mask & self.good[:n]
        unexpired = self.expires[:n] > now
        if not unexpired.all():
            mask = unexpired if mask is None else mask & unexpired
        return mask

    def top(
        self, query: Vector, k: int, now: float, code: int | None, good_only: bool
    ) -> tuple[NDArray[np.intp], NDArray[np.float32]]:
        """Rows and scores of the best k rows that pass the filters, best first."""
        mask = self.live(now, code, good_only)
        rows: NDArray[np.intp] | None = None
        if mask is None:
            scores = self.vectors[: self.size] @ query
        else:
            rows = np.flatnonzero(mask)
            if rows.size < self.size * _GATHER_FRACTION:
                scores = self.vectors[rows] @ query
            else:
                scores = (self.vectors[: self.size] @ query)[rows]
        best = np.argpartition(-scores, k - 1)[:k] if scores.size > k else np.arange(scores.size)
        best = best[np.argsort(-scores[best], kind="stable")]
        picked = best if rows is None else rows[best]
        return picked, scores[best]
