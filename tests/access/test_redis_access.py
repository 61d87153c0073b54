"""Keys and rate limits in a real Redis: what every replica shares."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from gateway.access.gate import KeyRing
from gateway.access.keys import new_key
from gateway.access.keystore import RedisKeys
from gateway.access.limits import WINDOW_S, RedisLimiter
from gateway.config import AuthConfig
from tests.support.clock import Clock

pytestmark = pytest.mark.anyio


async def test_keys_are_added_listed_found_and_revoked(redis: Redis) -> None:
    keys = RedisKeys(redis, prefix="t", timeout_s=2)
    first, second = new_key("acme", admin=True), new_key("globex", rpm=7)
    await keys.add(first.record)
    await keys.add(second.record)
    assert {r.id for r in await keys.list()} == {first.record.id, second.record.id}
    assert await keys.get(second.record.id) == second.record
    auth = AuthConfig(redis=True, recheck_s=0)
    ring = KeyRing(keys)
    assert await ring.find(auth, first.token) == first.record
    assert await keys.revoke(first.record.id)
    assert not await keys.revoke(first.record.id)
    assert await ring.find(auth, first.token) is None
    assert await ring.find(auth, second.token) == second.record


async def test_a_damaged_entry_admits_nobody(redis: Redis) -> None:
    keys = RedisKeys(redis, prefix="t", timeout_s=2)
    made = new_key("acme")
    await keys.add(made.record)
    await redis.hset(f"t:apikey:{made.record.id}", "hash", "plain")
    assert await keys.get(made.record.id) is None


async def test_two_replicas_share_one_budget(redis: Redis) -> None:
    clock = Clock(1000 * WINDOW_S + 1)
    one = RedisLimiter(redis, prefix="t", timeout_s=2, clock=clock)
    two = RedisLimiter(redis, prefix="t", timeout_s=2, clock=clock)
    verdicts = [await (one if i % 2 else two).take("k:req", 4, 1) for i in range(6)]
    assert [v.allowed for v in verdicts] == [True] * 4 + [False] * 2
    assert 0 < verdicts[-1].retry_after_s <= WINDOW_S


async def test_the_previous_minute_counts_less_as_it_slides_away(redis: Redis) -> None:
    clock = Clock(1000 * WINDOW_S)
    limiter = RedisLimiter(redis, prefix="t", timeout_s=2, clock=clock)
    for _ in range(10):
        assert (await limiter.take("k:req", 10, 1)).allowed
    clock.now += WINDOW_S  # the next window starts: the previous counts in full
    assert not (await limiter.take("k:req", 10, 1)).allowed
    clock.now += WINDOW_S / 2  # halfway: the previous counts half
    verdicts = [await limiter.take("k:req", 10, 1) for _ in range(6)]
    assert [v.allowed for v in verdicts] == [True] * 5 + [False]


async def test_tokens_are_charged_after_and_checked_before(redis: Redis) -> None:
    clock = Clock(1000 * WINDOW_S)
    limiter = RedisLimiter(redis, prefix="t", timeout_s=2, clock=clock)
    assert (await limiter.take("k:tok", 100, 0)).allowed
    await limiter.charge("k:tok", 120)  # the answer was longer than the budget left
    assert not (await limiter.take("k:tok", 100, 0)).allowed
