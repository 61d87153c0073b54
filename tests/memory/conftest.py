"""Stores under test, and the real Redis servers they run against.

The Redis servers are real `redis-server` processes on free loopback ports, started once
per session: Debian's Redis 7 (no search module) and Redis Stack 7.4 (RediSearch, set up
by `scripts/redis_env.sh`). A missing redis-server fails the tests (it is never skipped).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.memory.records import ExemplarStore
from gateway.memory.redis_store import RedisStore
from gateway.memory.store import LocalStore
from tests.memory.helpers import Clock
from tests.support.redis import RedisBinary, RedisServer, RedisUnavailable, plain_redis, stack_redis

MakeStore = Callable[..., Awaitable[ExemplarStore]]


def _binary(find: Callable[[], RedisBinary]) -> RedisBinary:
    try:
        return find()
    except RedisUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """Debian's redis-server (Redis 7, no vector search), for the whole session."""
    with RedisServer(_binary(plain_redis)) as server:
        yield server


@pytest.fixture(scope="session")
def redis_stack_server() -> Iterator[RedisServer]:
    """Redis Stack with RediSearch (FT.SEARCH KNN), for the whole session."""
    with RedisServer(_binary(stack_redis)) as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own (with AOF, so a restart keeps the data), for faults."""
    with RedisServer(_binary(plain_redis), aof=True) as server:
        yield server


def make_client(url: str, protocol: int = 3) -> Redis:
    return Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0, protocol=protocol)


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A client of the session server, whose data is flushed first."""
    client = make_client(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


BACKENDS = [
    pytest.param("local", id="local"),
    pytest.param("redis", id="redis", marks=pytest.mark.integration),
    pytest.param("redis-search", id="redis-search", marks=pytest.mark.integration),
]


@pytest.fixture(params=BACKENDS)
async def make_store(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[MakeStore]:
    """Builds started stores of one backend (all sharing one Redis namespace); closes them.

    "redis" is Redis 7 without search (the local index searches); "redis-search" is Redis
    Stack with `vector_search="redis"` (every search is FT.SEARCH).
    """
    backend: str = request.param
    client: Redis | None = None
    if backend != "local":
        name = "redis_server" if backend == "redis" else "redis_stack_server"
        server: RedisServer = request.getfixturevalue(name)
        client = make_client(server.url)
        await client.flushall()
    stores: list[ExemplarStore] = []

    async def make(**options: Any) -> ExemplarStore:
        store: ExemplarStore
        if client is None:
            store = LocalStore(clock=clock, **options)
        else:
            search = "redis" if backend == "redis-search" else "auto"
            options = {"vector_search": search, "ft_algorithm": "FLAT", **options}
            store = RedisStore(client, namespace="contract", clock=clock, **options)
        await store.start()
        stores.append(store)
        return store

    yield make
    for store in stores:
        status = store.status()
        await store.aclose()
        # Normal operation never degrades, so a Redis store loads everything just once.
        assert status.ok and status.extra.get("full_loads", "1") == "1", status
    if client is not None:
        await client.aclose()


@pytest.fixture
async def store(make_store: MakeStore) -> ExemplarStore:
    return await make_store()


OpenRedisStore = Callable[..., Awaitable[RedisStore]]


@pytest.fixture
async def open_redis_store(redis_client: Redis) -> AsyncIterator[OpenRedisStore]:
    """Opens started RedisStores, each with a client of its own, like separate replicas.

    `server` defaults to the session's (flushed) server; `namespace` to "ns".
    """
    opened: list[tuple[RedisStore, Redis]] = []
    default_url = redis_client.connection_pool.connection_kwargs
    default = f"redis://{default_url['host']}:{default_url['port']}/0"

    async def open_store(
        server: RedisServer | None = None, protocol: int = 3, **options: Any
    ) -> RedisStore:
        client = make_client(server.url if server is not None else default, protocol)
        options.setdefault("namespace", "ns")
        store = RedisStore(client, **options)
        opened.append((store, client))
        await store.start()
        return store

    yield open_store
    for store, client in reversed(opened):
        await store.aclose()
        await client.aclose()
