"""Conversation memory in Redis, and what it keeps in process for an outage."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from gateway.memory.pending import CompletionRecord, LocalConversationMemory, PendingClarification
from gateway.memory.redis_conversation import RedisConversationMemory
from tests.support.redis import RedisServer

pytestmark = pytest.mark.anyio

ASKED = PendingClarification("units or calculator?", ("units", "calculator"), "close", 1.0)


def record(ident: str) -> CompletionRecord:
    return CompletionRecord(ident, "acme", "units", "convert 5 miles", "8.047 km", 1.0)


def client_of(server: RedisServer) -> Redis:
    return Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)


async def test_replicas_share_answers_and_questions(own_redis: RedisServer) -> None:
    one = RedisConversationMemory(client_of(own_redis), timeout_s=0.5)
    two = RedisConversationMemory(client_of(own_redis), timeout_s=0.5)
    await one.put_completion(record("c-1"), 60)
    await one.put_clarification("acme", "k", ASKED, 60)
    assert await two.get_completion("acme", "c-1") == record("c-1")
    assert await two.get_clarification("acme", "k") == ASKED
    assert await two.get_completion("globex", "c-1") is None


async def test_nothing_is_copied_into_the_process_while_redis_is_well(
    own_redis: RedisServer,
) -> None:
    local = LocalConversationMemory()
    memory = RedisConversationMemory(client_of(own_redis), timeout_s=0.5, fallback=local)
    await memory.put_completion(record("c-1"), 60)
    await memory.put_clarification("acme", "k", ASKED, 60)
    await memory.put_turn("acme", "t", "units", 60)
    assert await local.get_completion("acme", "c-1") is None
    assert await local.get_clarification("acme", "k") is None
    assert await local.get_turn("acme", "t") is None
    assert await memory.get_completion("acme", "c-1") == record("c-1")
    assert await memory.get_turn("acme", "t") == "units"


async def test_an_outage_falls_back_to_the_process(own_redis: RedisServer) -> None:
    memory = RedisConversationMemory(client_of(own_redis), timeout_s=0.5)
    await memory.put_clarification("acme", "before", ASKED, 60)
    own_redis.kill()
    try:
        # What is written during the outage is kept here and read back.
        await memory.put_clarification("acme", "during", ASKED, 60)
        assert await memory.get_clarification("acme", "during") == ASKED
        await memory.put_completion(record("c-2"), 60)
        assert await memory.get_completion("acme", "c-2") == record("c-2")
        await memory.put_turn("acme", "t", "units", 60)
        assert await memory.get_turn("acme", "t") == "units"
    finally:
        own_redis.restart()
    # A question asked before the outage is in Redis again once it is back.
    assert await memory.get_clarification("acme", "before") == ASKED
