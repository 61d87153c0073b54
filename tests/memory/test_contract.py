"""The `ExemplarStore` contract, run on every store: LocalStore, RedisStore on Redis 7 (the
local index searches) and RedisStore on Redis Stack with every search in FT.SEARCH."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.memory.records import Exemplar, ExemplarStore, Source
from tests.memory.conftest import MakeStore
from tests.memory.helpers import Clock, record, unit

pytestmark = pytest.mark.anyio

A, B, C, D, E = unit(1), unit(1, 1), unit(1, 2), unit(0, 1), unit(-1)


async def test_add_then_get_returns_the_same_record(store: ExemplarStore) -> None:
    original = record("r1", A, response="42", source="feedback", created=1234.5, good=False)
    await store.add([original])

    found = await store.get("r1")

    assert found is not None and found.same_as(original)
    assert await store.get("missing") is None
    assert store.status().ok


async def test_add_upserts_by_id(store: ExemplarStore) -> None:
    await store.add([record("r1", A, tenant="t1", expert="math", text="old")])
    replacement = record("r1", D, tenant="t2", expert="code", text="new", response="r")
    await store.add([replacement])

    found = await store.get("r1")
    assert found is not None and found.same_as(replacement)
    assert await store.count() == 1
    assert await store.count(tenant="t1") == 0
    assert [hit.exemplar.id for hit in await store.search(A, 5, tenant="t1")] == []
    assert [hit.exemplar.id for hit in await store.search(D, 5, tenant="t2")] == ["r1"]


async def test_search_orders_by_cosine_and_cuts_at_k(store: ExemplarStore) -> None:
    await store.add(
        [record(name, vector) for name, vector in zip("edcba", [E, D, C, B, A], strict=True)]
    )

    top3 = await store.search(A, 3)
    every = await store.search(A, 10)

    assert [hit.exemplar.id for hit in top3] == ["a", "b", "c"]
    assert [hit.exemplar.id for hit in every] == ["a", "b", "c", "d", "e"]
    expected = [float(A @ v) for v in (A, B, C, D, E)]
    assert [hit.score for hit in every] == pytest.approx(expected, abs=1e-5)
    assert every[1].exemplar.same_as(record("b", B))
    assert await store.search(A, 0) == []


async def test_search_filters_by_tenant_expert_and_good(store: ExemplarStore) -> None:
    await store.add(
        [
            record("t1-math", A, tenant="t1", expert="math"),
            record("t1-code", B, tenant="t1", expert="code"),
            record("t1-bad", A, tenant="t1", expert="math", good=False),
            record("t2-math", A, tenant="t2", expert="math"),
            record("odd", C, tenant="Acme, Inc. {x}", expert="math-2.0"),
        ]
    )

    async def ids(**filters: object) -> set[str]:
        return {hit.exemplar.id for hit in await store.search(A, 10, **filters)}  # type: ignore[arg-type]

    assert await ids(tenant="t1") == {"t1-math", "t1-code", "t1-bad"}
    assert await ids(tenant="t1", expert="math") == {"t1-math", "t1-bad"}
    assert await ids(tenant="t1", expert="math", good_only=True) == {"t1-math"}
    assert await ids(expert="math") == {"t1-math", "t1-bad", "t2-math"}
    assert await ids(good_only=True) == {"t1-math", "t1-code", "t2-math", "odd"}
    assert await ids(tenant="Acme, Inc. {x}", expert="math-2.0") == {"odd"}
    assert await ids(tenant="T1") == set()
    assert await ids(tenant="nobody") == set()
    assert await ids(expert="nobody") == set()
    assert len(await ids()) == 5


async def test_expired_records_are_invisible(store: ExemplarStore, clock: Clock) -> None:
    await store.add(
        [
            record("short", A, expires_at=clock.now + 100, created=2.0),
            record("forever", B, created=1.0),
        ]
    )
    assert await store.count() == 2

    clock.now += 200

    assert await store.get("short") is None
    assert [hit.exemplar.id for hit in await store.search(A, 5)] == ["forever"]
    assert await store.count() == 1
    assert [ex.id for ex in await store.list_records()] == ["forever"]
    assert await store.remove(["short"]) == 0


async def test_remove_counts_what_existed(store: ExemplarStore) -> None:
    await store.add([record("a", A), record("b", B), record("c", C)])

    assert await store.remove(["a", "b", "a", "missing"]) == 2
    assert await store.remove([]) == 0

    assert await store.get("a") is None
    assert [hit.exemplar.id for hit in await store.search(A, 5)] == ["c"]
    assert await store.count() == 1


async def test_count_filters(store: ExemplarStore) -> None:
    await store.add(
        [
            record("1", A, tenant="t1", expert="math"),
            record("2", B, tenant="t1", expert="code", good=False),
            record("3", C, tenant="t2", expert="math"),
        ]
    )
    assert await store.count() == 3
    assert await store.count(tenant="t1") == 2
    assert await store.count(expert="math") == 2
    assert await store.count(tenant="t1", expert="code") == 1
    assert await store.count(tenant="t3") == 0
    assert await store.count(expert="nobody") == 0


async def test_list_records_newest_first_paged_and_filtered(store: ExemplarStore) -> None:
    def make(i: int) -> Exemplar:
        expert = "math" if i < 4 else "code"
        source: Source = "feedback" if i % 3 == 0 else "api"
        return record(
            f"r{i}", unit(1, i), created=i, tenant=f"t{i % 2}", expert=expert, source=source
        )

    await store.add([make(i) for i in range(8)])

    async def ids(**filters: object) -> list[str]:
        return [ex.id for ex in await store.list_records(**filters)]  # type: ignore[arg-type]

    assert await ids() == [f"r{i}" for i in range(7, -1, -1)]
    assert await ids(limit=3) == ["r7", "r6", "r5"]
    assert await ids(limit=3, offset=3) == ["r4", "r3", "r2"]
    assert await ids(limit=3, offset=6) == ["r1", "r0"]
    assert await ids(offset=8) == []
    assert await ids(tenant="t1") == ["r7", "r5", "r3", "r1"]
    assert await ids(expert="code", tenant="t0") == ["r6", "r4"]
    assert await ids(source="feedback") == ["r6", "r3", "r0"]
    listed = await store.list_records(limit=1)
    assert listed[0].same_as(make(7))


async def test_empty_store(store: ExemplarStore) -> None:
    assert await store.search(A, 3) == []
    assert await store.count() == 0
    assert await store.list_records() == []
    assert await store.remove(["x"]) == 0
    assert store.status().ok


async def test_vectors_of_another_dimension_are_refused(make_store: MakeStore) -> None:
    store = await make_store(dim=8)
    with pytest.raises(ValueError, match="dimensions"):
        await store.add([record("short", np.ones(5, dtype=np.float32))])
    await store.add([record("ok", A)])
    with pytest.raises(ValueError, match="dimensions"):
        await store.search(np.ones(3, dtype=np.float32), 2)
    assert await store.count() == 1


async def test_many_records_search_like_brute_force(store: ExemplarStore) -> None:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((300, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    await store.add(
        [record(f"r{i}", v, tenant=f"t{i % 3}", expert=f"e{i % 4}") for i, v in enumerate(vectors)]
    )
    await store.remove([f"r{i}" for i in range(0, 300, 7)])
    alive = [i for i in range(300) if i % 7]
    query = vectors[5]

    hits = await store.search(query, 10, tenant="t2", expert="e1")

    candidates = [i for i in alive if i % 3 == 2 and i % 4 == 1]
    expected = sorted(candidates, key=lambda i: -float(vectors[i] @ query))[:10]
    assert [hit.exemplar.id for hit in hits] == [f"r{i}" for i in expected]
