"""VectorIndex against a brute-force model: swaps on removal, growth, tenants, threads."""

from __future__ import annotations

import threading

import numpy as np

from gateway.memory.index import VectorIndex
from gateway.memory.records import Exemplar, Hit
from tests.memory.helpers import record


def _vectors(rng: np.random.Generator, n: int, dim: int = 16) -> np.ndarray:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _expected(model: dict[str, Exemplar], query: np.ndarray, k: int, **filters: str) -> list[str]:
    tenant, expert = filters.get("tenant"), filters.get("expert")
    live = [
        ex
        for ex in model.values()
        if (tenant is None or ex.tenant == tenant) and (expert is None or ex.expert == expert)
    ]
    live.sort(key=lambda ex: -float(ex.embedding @ query))
    return [ex.id for ex in live[:k]]


def test_random_upserts_and_removals_match_a_model() -> None:
    rng = np.random.default_rng(3)
    index = VectorIndex()
    model: dict[str, Exemplar] = {}
    for step in range(40):
        vectors = _vectors(rng, 50)
        batch = [
            record(
                f"r{rng.integers(0, 400)}",
                vector,
                tenant=f"t{rng.integers(0, 3)}",
                expert=f"e{rng.integers(0, 4)}",
            )
            for vector in vectors
        ]
        index.upsert(batch)
        model.update({ex.id: ex for ex in batch})
        doomed = [f"r{i}" for i in rng.integers(0, 400, size=35)]
        found = index.remove(doomed)
        assert set(found) == {i for i in doomed if i in model}
        for exemplar_id in doomed:
            model.pop(exemplar_id, None)
        if step % 5 == 0:
            query = _vectors(rng, 1)[0]
            for filters in ({}, {"tenant": "t1"}, {"tenant": "t2", "expert": "e3"}):
                hits = index.search(query, 7, **filters)  # type: ignore[arg-type]
                assert [hit.exemplar.id for hit in hits] == _expected(model, query, 7, **filters)
    assert len(index) == len(model)
    for exemplar_id, original in model.items():
        found_record = index.get(exemplar_id)
        assert found_record is not None and found_record.same_as(original)


def test_a_tenant_grows_and_shrinks() -> None:
    rng = np.random.default_rng(5)
    index = VectorIndex()
    vectors = _vectors(rng, 5000)
    index.upsert([record(f"r{i}", v) for i, v in enumerate(vectors)])
    index.remove([f"r{i}" for i in range(10, 5000)])

    query = vectors[3]
    assert index.search(query, 1)[0].exemplar.id == "r3"
    assert index.count() == 10
    index.upsert([record("late", vectors[4000])])
    assert index.search(vectors[4000], 1)[0].exemplar.id == "late"


def test_concurrent_searches_and_writes() -> None:
    rng = np.random.default_rng(11)
    index = VectorIndex()
    vectors = _vectors(rng, 2000)
    index.upsert([record(f"base{i}", v) for i, v in enumerate(vectors[:1000])])
    errors: list[BaseException] = []

    def search() -> None:
        try:
            for i in range(200):
                hits = index.search(vectors[i], 3)
                assert hits and hits[0].exemplar.id == f"base{i}"
        except BaseException as exc:  # collected for the main thread
            errors.append(exc)

    def write() -> None:
        try:
            for i in range(1000, 2000, 10):
                index.upsert([record(f"w{j}", vectors[j]) for j in range(i, i + 10)])
                index.remove([f"w{j}" for j in range(i, i + 5)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=search) for _ in range(3)] + [threading.Thread(target=write)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(index) == 1000 + 500


def test_purge_drops_only_expired_records() -> None:
    now = [1000.0]
    index = VectorIndex(clock=lambda: now[0])
    vectors = _vectors(np.random.default_rng(2), 6)
    index.upsert(
        [
            record(f"r{i}", v, tenant=f"t{i % 2}", expires_at=1500.0 if i % 3 == 0 else None)
            for i, v in enumerate(vectors)
        ]
    )
    assert index.purge_expired() == 0
    now[0] = 2000.0
    assert index.purge_expired() == 2
    assert len(index) == 4
    assert sorted(ex.id for ex in index.list_records()) == ["r1", "r2", "r4", "r5"]
    assert index.search(vectors[4], 1)[0].exemplar.id == "r4"


def test_search_now_answers_like_search_and_never_waits_for_a_writer() -> None:
    index = VectorIndex()
    vectors = _vectors(np.random.default_rng(0), 8)
    index.upsert([record(f"e{i}", vectors[i], tenant="acme") for i in range(8)])
    query = vectors[3]
    assert ids(index.search_now(query, 3, tenant="acme")) == ids(
        index.search(query, 3, tenant="acme")
    )
    writing, release = threading.Event(), threading.Event()

    def writer() -> None:
        with index._lock.write():
            writing.set()
            release.wait(5)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert writing.wait(5)
        assert index.search_now(query, 3, tenant="acme") is None  # would have waited
    finally:
        release.set()
        thread.join()
    assert ids(index.search_now(query, 3, tenant="acme")) == [
        "e3",
        *ids(index.search(query, 3, tenant="acme"))[1:],
    ]


def ids(hits: list[Hit] | None) -> list[str]:
    assert hits is not None
    return [hit.exemplar.id for hit in hits]
