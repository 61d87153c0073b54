"""Exemplar records and the `ExemplarStore` protocol that every store implements.

An exemplar is an example request that belongs to an expert: it routes similar requests
there and, with a stored answer, serves as a few-shot example. Runtime exemplars are
scoped by tenant. The response cache reuses the same records (source "cache", with an
expiry) in a store of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
from numpy.typing import NDArray

Source = Literal["config", "clarification", "feedback", "api", "cache"]
SOURCES: tuple[Source, ...] = ("config", "clarification", "feedback", "api", "cache")
Vector = NDArray[np.float32]


@dataclass(frozen=True, slots=True, eq=False)
class Exemplar:
    id: str
    tenant: str
    expert: str
    text: str
    embedding: Vector  # [dim], L2-normalised float32
    response: str | None = None
    source: Source = "api"
    created: float = 0.0
    # False for a negatively rated answer: recorded, never used as a few-shot example
    # and not counted for routing.
    good: bool = True
    # Unix time after which the record no longer exists (cache entries); None: never.
    expires_at: float | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def same_as(self, other: Exemplar) -> bool:
        """Field-by-field equality, the embedding compared exactly."""
        return (
            self.id == other.id
            and self.tenant == other.tenant
            and self.expert == other.expert
            and self.text == other.text
            and self.response == other.response
            and self.source == other.source
            and self.created == other.created
            and self.good == other.good
            and self.expires_at == other.expires_at
            and np.array_equal(self.embedding, other.embedding)
        )


@dataclass(frozen=True, slots=True)
class Hit:
    exemplar: Exemplar
    score: float  # cosine similarity to the query


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """`ok` False means degraded: serving from the last synced copy, writes queued."""

    ok: bool
    detail: str = ""
    queued_writes: int = 0
    records: int = 0
    extra: dict[str, str] = field(default_factory=dict)


class ExemplarStore(Protocol):
    """The contract both `LocalStore` and `RedisStore` pass (tests/memory/test_contract.py).

    `add` upserts by id. Expired records are invisible to every read. `search` returns at
    most k hits, best first; `tenant=None` / `expert=None` mean "any".
    """

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def add(self, exemplars: Sequence[Exemplar]) -> None: ...

    async def get(self, exemplar_id: str) -> Exemplar | None: ...

    async def search(
        self,
        vector: Vector,
        k: int,
        *,
        expert: str | None = None,
        tenant: str | None = None,
        good_only: bool = False,
    ) -> list[Hit]: ...

    async def remove(self, ids: Sequence[str]) -> int: ...

    async def count(self, *, expert: str | None = None, tenant: str | None = None) -> int: ...

    async def list_records(
        self,
        *,
        tenant: str | None = None,
        expert: str | None = None,
        source: Source | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Exemplar]: ...

    def status(self) -> StoreStatus: ...
