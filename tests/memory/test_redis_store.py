"""RedisStore beyond the contract: replicas in step, restarts, faults, the search module."""

from __future__ import annotations

import time

import anyio
import anyio.to_thread
import numpy as np
import pytest
from redis.asyncio import Redis

from gateway.memory.redis_search import RedisVectorSearch
from gateway.memory.redis_store import RedisStore
from gateway.memory.redis_wire import RedisKeys, encode
from tests.memory.conftest import OpenRedisStore, make_client
from tests.memory.helpers import record, unit, wait_until
from tests.support.redis import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

A, B = unit(1), unit(0, 1)


@pytest.mark.parametrize("protocol", [2, 3])
async def test_a_write_on_one_replica_reaches_the_other(
    open_redis_store: OpenRedisStore, protocol: int
) -> None:
    a = await open_redis_store(protocol=protocol)
    b = await open_redis_store(protocol=protocol)
    original = record("x", A, tenant="t1", response="answer")

    await a.add([original])

    async def b_has_it() -> bool:
        return await b.get("x") is not None

    await wait_until(b_has_it, "a record added on A is on B")
    found = await b.get("x")
    assert found is not None and found.same_as(original)
    assert [hit.exemplar.id for hit in await b.search(A, 3, tenant="t1")] == ["x"]

    assert await a.remove(["x"]) == 1

    async def b_lost_it() -> bool:
        return await b.get("x") is None

    await wait_until(b_lost_it, "a record removed on A is gone from B")
    assert await b.search(A, 3) == []
    assert await b.count() == 0
    # Both changes came through the change stream, not through reloads.
    assert b.status().ok and b.status().extra["full_loads"] == "1"


async def test_a_replica_does_not_read_back_its_own_writes(
    open_redis_store: OpenRedisStore, redis_client: Redis
) -> None:
    a = await open_redis_store()
    b = await open_redis_store()

    async def hgetalls() -> int:
        stats = await redis_client.info("commandstats")
        return int(stats.get("cmdstat_hgetall", {}).get("calls", 0))

    before = await hgetalls()
    await a.add([record(f"a{i}", unit(1, i)) for i in range(50)])
    await b.add([record("marker", B)])

    async def both_have_all() -> bool:
        return await a.get("marker") is not None and await b.count() == 51

    await wait_until(both_have_all, "each replica has the other's writes")
    # B read A's 50 records and A read B's one; neither re-read its own.
    assert await hgetalls() - before == 51


async def test_a_change_read_during_a_local_write_is_read_again(
    open_redis_store: OpenRedisStore,
) -> None:
    a = await open_redis_store()
    b = await open_redis_store()
    # A local write of "x" on A is in flight while B's write of "x" arrives: A leaves its
    # index alone then, and must read "x" again once its own write is over.
    a._sync.begin(["x"])
    await b.add([record("x", B, text="from b")])
    await anyio.sleep(0.5)
    assert await a.get("x") is None
    a._sync.end(["x"])

    async def a_has_it() -> bool:
        found = await a.get("x")
        return found is not None and found.text == "from b"

    await wait_until(a_has_it, "A reads the record again after its write ended")


async def test_a_new_store_loads_everything(open_redis_store: OpenRedisStore) -> None:
    first = await open_redis_store()
    soon = time.time() + 3600
    records = [
        record(
            f"r{i}",
            unit(1, i),
            tenant=f"t{i % 3}",
            expert=f"e{i % 2}",
            response=f"answer {i}" if i % 2 else None,
            source="feedback" if i % 3 else "clarification",
            created=1000.0 + i,
            good=i % 4 != 0,
            expires_at=soon if i % 5 == 0 else None,
        )
        for i in range(60)
    ]
    await first.add(records)
    await first.remove(["r1"])
    await first.aclose()

    second = await open_redis_store()

    assert await second.count() == 59
    assert await second.get("r1") is None
    for original in records[2:]:
        found = await second.get(original.id)
        assert found is not None and found.same_as(original)
    assert second.status().ok


async def test_a_replica_reloads_when_the_stream_was_trimmed_past_it(
    open_redis_store: OpenRedisStore, redis_client: Redis
) -> None:
    store = await open_redis_store()
    await store.add([record("seen", A)])
    # Another writer's record whose stream entry is trimmed away before anyone reads it.
    pipe = redis_client.pipeline(transaction=True)
    pipe.hset("taskgate:ns:rec:silent", mapping=encode(record("silent", B)))  # type: ignore[arg-type]
    for _ in range(10):
        pipe.xadd("taskgate:ns:changes", {"id": "silent"})
    pipe.xtrim("taskgate:ns:changes", maxlen=0, approximate=False)
    pipe.xadd("taskgate:ns:changes", {"id": "unrelated"})
    await pipe.execute()

    async def has_it() -> bool:
        return await store.get("silent") is not None

    await wait_until(has_it, "the replica reloads and finds the record")
    assert store.status().extra["full_loads"] == "2"
    assert store.status().ok


async def test_records_are_hashes_and_expire_in_redis(
    open_redis_store: OpenRedisStore, redis_client: Redis
) -> None:
    store = await open_redis_store(namespace="layout")
    expires = time.time() + 600
    await store.add([record("a", A, response="r", expires_at=expires), record("b", B)])

    fields = await redis_client.hgetall("taskgate:layout:rec:a")

    assert set(fields) == {
        b"tenant", b"expert", b"text", b"embedding", b"response",
        b"source", b"created", b"good", b"expires_at",
    }  # fmt: skip
    assert np.array_equal(np.frombuffer(fields[b"embedding"], dtype="<f4"), A)
    assert 0 < await redis_client.pttl("taskgate:layout:rec:a") <= 600_000
    assert await redis_client.pttl("taskgate:layout:rec:b") == -1
    assert b"response" not in await redis_client.hgetall("taskgate:layout:rec:b")
    assert await redis_client.xlen("taskgate:layout:changes") == 2


async def test_malformed_records_are_skipped(
    open_redis_store: OpenRedisStore, redis_client: Redis
) -> None:
    await redis_client.hset("taskgate:ns:rec:broken", mapping={"tenant": "t1", "text": "x"})
    await redis_client.hset(
        "taskgate:ns:rec:short",
        mapping={
            "tenant": "t1", "expert": "e", "text": "x", "source": "api", "created": "1.0",
            "embedding": np.ones(3, dtype="<f4").tobytes(),
        },
    )  # fmt: skip
    store = await open_redis_store(dim=8)
    await store.add([record("fine", A)])

    assert [ex.id for ex in await store.list_records()] == ["fine"]
    assert store.status().ok


async def test_closing_leaves_the_client_open(redis_client: Redis) -> None:
    store = RedisStore(redis_client, namespace="ns")
    await store.start()
    await store.aclose()
    assert await redis_client.ping()


def test_clients_that_decode_responses_are_refused() -> None:
    with pytest.raises(ValueError, match="decode_responses"):
        RedisStore(Redis(decode_responses=True), namespace="ns")


async def test_an_outage_queues_writes_and_recovery_flushes_them_in_order(
    own_redis: RedisServer, open_redis_store: OpenRedisStore
) -> None:
    store = await open_redis_store(own_redis, retry_max_s=0.2)
    await store.add([record(f"before-{i}", unit(1, i)) for i in range(5)])
    written: list[str] = []

    async def keep_adding() -> None:
        for i in range(40):
            exemplar = record(f"during-{i}", unit(0, 1, i), created=float(i))
            await store.add([exemplar])
            written.append(exemplar.id)
            await anyio.sleep(0.01)

    async with anyio.create_task_group() as group:
        group.start_soon(keep_adding)
        await anyio.sleep(0.1)
        await anyio.to_thread.run_sync(own_redis.stop)

    async def degraded() -> bool:
        return not store.status().ok

    await wait_until(degraded, "the store reports degraded")
    await store.add([record("dup", A, text="v1")])
    await store.add([record("dup", A, text="v2")])
    assert await store.remove(["before-0"]) == 1
    status = store.status()
    assert not status.ok and status.detail and status.queued_writes >= 3
    # Reads keep working from the local index, the queued writes included.
    assert [hit.exemplar.id for hit in await store.search(unit(1, 1), 1)] == ["before-1"]
    assert await store.get("during-39") is not None
    assert await store.count() == 4 + 40 + 1

    await anyio.to_thread.run_sync(own_redis.start)

    async def recovered() -> bool:
        return store.status().ok

    await wait_until(recovered, "the store is in sync again")
    assert store.status().queued_writes == 0
    fresh = make_client(own_redis.url)
    try:
        for exemplar_id in [*written, "dup", "before-1"]:
            assert await fresh.exists(f"taskgate:ns:rec:{exemplar_id}"), exemplar_id
        assert not await fresh.exists("taskgate:ns:rec:before-0")
        assert await fresh.hget("taskgate:ns:rec:dup", "text") == b"v2"
        entries = await fresh.xrange("taskgate:ns:changes")
    finally:
        await fresh.aclose()
    changed = [fields[b"id"].decode() for _, fields in entries]
    during = [i for i in dict.fromkeys(changed) if i.startswith("during-")]
    assert during == written
    assert changed.index("dup") > changed.index("during-39")
    assert (await store.get("dup")).text == "v2"  # type: ignore[union-attr]


async def test_a_store_started_while_redis_is_down_catches_up(
    own_redis: RedisServer, open_redis_store: OpenRedisStore
) -> None:
    own_redis.stop()
    store = await open_redis_store(own_redis, retry_max_s=0.2)
    assert not store.status().ok

    await store.add([record("x", A)])
    assert store.status().queued_writes == 1
    assert [hit.exemplar.id for hit in await store.search(A, 1)] == ["x"]

    await anyio.to_thread.run_sync(own_redis.start)

    async def recovered() -> bool:
        return store.status().ok

    await wait_until(recovered, "the store is in sync")
    fresh = make_client(own_redis.url)
    try:
        assert await fresh.exists("taskgate:ns:rec:x")
    finally:
        await fresh.aclose()


async def test_a_full_queue_drops_the_oldest_writes(
    own_redis: RedisServer, open_redis_store: OpenRedisStore
) -> None:
    store = await open_redis_store(own_redis, queue_limit=3, retry_max_s=0.2)
    await anyio.to_thread.run_sync(own_redis.stop)

    for i in range(5):
        await store.add([record(f"r{i}", unit(1, i))])

    status = store.status()
    assert status.queued_writes == 3
    assert status.extra["dropped_writes"] == "2"

    await anyio.to_thread.run_sync(own_redis.start)

    async def recovered() -> bool:
        return store.status().ok

    await wait_until(recovered, "the store is in sync")
    fresh = make_client(own_redis.url)
    try:
        present = [await fresh.exists(f"taskgate:ns:rec:r{i}") for i in range(5)]
    finally:
        await fresh.aclose()
    assert present == [0, 0, 1, 1, 1]
    # After the reload the index agrees with Redis.
    assert await store.get("r0") is None
    assert await store.count() == 3


async def _knn_searches(client: Redis) -> int:
    """How many FT.SEARCH commands the server has run."""
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_FT.SEARCH", {}).get("calls", 0))


async def test_auto_searches_large_tenants_in_redis(
    redis_stack_server: RedisServer, open_redis_store: OpenRedisStore
) -> None:
    client = make_client(redis_stack_server.url)
    await client.flushall()
    try:
        store = await open_redis_store(redis_stack_server, ft_min_records=3, dim=8)
        assert store.status().extra["search_module"] == "yes"
        await store.add([record(f"big{i}", unit(1, i), tenant="big") for i in range(3)])
        await store.add([record("small", A, tenant="small")])
        index = "taskgate:ns:idx:8"
        assert index.encode() in await client.execute_command("FT._LIST")  # type: ignore[no-untyped-call]

        before = await _knn_searches(client)
        small = await store.search(A, 2, tenant="small")
        assert await _knn_searches(client) == before
        big = await store.search(A, 2, tenant="big")
        assert await _knn_searches(client) == before + 1
    finally:
        await client.aclose()
    assert [hit.exemplar.id for hit in small] == ["small"]
    assert [hit.exemplar.id for hit in big] == ["big0", "big1"]
    assert big[0].score == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("policy", [None, "BATCHES", "ADHOC_BF"])
async def test_knn_answers_the_same_under_each_hybrid_policy(
    redis_stack_server: RedisServer, open_redis_store: OpenRedisStore, policy: str | None
) -> None:
    client = make_client(redis_stack_server.url)
    await client.flushall()
    try:
        store = await open_redis_store(redis_stack_server, dim=8)
        records = [record(f"r{i}", unit(1, i), tenant="t", expert=f"e{i % 2}") for i in range(6)]
        await store.add(records)
        search = RedisVectorSearch(
            client, RedisKeys("taskgate", "ns"), algorithm="HNSW", timeout_s=5.0
        )
        await search.ensure_index(8)
        found = await search.knn(
            A,
            3,
            expert="e0",
            tenant="t",
            good_only=False,
            policy=policy,  # type: ignore[arg-type]
        )
    finally:
        await client.aclose()
    assert found is not None
    assert [exemplar_id for exemplar_id, _ in found] == ["r0", "r2", "r4"]


async def test_a_search_index_over_existing_records_is_used_once_built(
    redis_stack_server: RedisServer, open_redis_store: OpenRedisStore
) -> None:
    client = make_client(redis_stack_server.url)
    await client.flushall()
    await client.aclose()
    writer = await open_redis_store(redis_stack_server, vector_search="local")
    await writer.add([record(f"r{i}", unit(1, i / 10)) for i in range(20)])

    reader = await open_redis_store(redis_stack_server, vector_search="redis")

    async def finds_all() -> bool:
        hits = await reader.search(A, 20)
        return [hit.exemplar.id for hit in hits] == [f"r{i}" for i in range(20)]

    await wait_until(finds_all, "searches see every record")
