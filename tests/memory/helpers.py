"""Builders for exemplar tests: unit vectors with known cosines, records, a settable clock."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
import numpy as np

from gateway.memory.records import Exemplar, Source, Vector

DIM = 8


def unit(*weights: float, dim: int = DIM) -> Vector:
    """The L2-normalised vector whose first components are `weights`."""
    vector = np.zeros(dim, dtype=np.float32)
    vector[: len(weights)] = weights
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def record(
    exemplar_id: str,
    vector: Vector,
    *,
    tenant: str = "t1",
    expert: str = "math",
    text: str | None = None,
    response: str | None = None,
    source: Source = "api",
    created: float = 1_000.0,
    good: bool = True,
    expires_at: float | None = None,
) -> Exemplar:
    return Exemplar(
        id=exemplar_id,
        tenant=tenant,
        expert=expert,
        text=text if text is not None else f"text of {exemplar_id}",
        embedding=vector,
        response=response,
        source=source,
        created=created,
        good=good,
        expires_at=expires_at,
    )


class Clock:
    """A clock the test moves; starts at the real time (Redis expiries are real)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def wait_until(
    condition: Callable[[], Awaitable[bool]], what: str, within_s: float = 15.0
) -> None:
    """Poll `condition` until it holds; fail naming `what` after `within_s` seconds."""
    deadline = time.monotonic() + within_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s:.0f}s: {what}")
        await anyio.sleep(0.02)
