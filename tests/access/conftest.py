"""A real redis-server for the key store and the shared rate limits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from tests.support.redis import RedisServer, RedisUnavailable, plain_redis


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    try:
        binary = plain_redis()
    except RedisUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    with RedisServer(binary) as server:
        yield server


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, socket_timeout=2.0, socket_connect_timeout=2.0)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()
