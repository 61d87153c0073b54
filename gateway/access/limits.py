"""Rate limits: requests and tokens per key over a sliding minute.

The count is the sliding-window estimate `previous * (1 - elapsed) + current` over two
fixed one-minute windows: no burst of twice the limit at a window's edge, two counters
per key and budget. With the Redis memory the counters live in Redis (one Lua script per
check, atomic), so the limit holds across replicas; otherwise in this process.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis

from gateway.memory.redis_wire import RedisDown, guarded

WINDOW_S = 60.0
_MAX_LOCAL_KEYS = 100_000


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    used: float
    # When a refused call may try again (the current window's end).
    retry_after_s: float


class Limiter(Protocol):
    async def take(self, name: str, limit: int, cost: int) -> Verdict:
        """Spend `cost` of `limit` in this minute unless that would exceed it; cost 0
        only asks whether anything is left."""
        ...

    async def charge(self, name: str, cost: int) -> None:
        """Spend `cost` whatever is left (tokens are known only after the answer)."""
        ...


def _window(now: float) -> tuple[int, float]:
    index = int(now // WINDOW_S)
    return index, now / WINDOW_S - index


def _verdict(allowed: bool, used: float, fraction: float) -> Verdict:
    return Verdict(allowed, used, (1.0 - fraction) * WINDOW_S)


def _exceeds(used: float, cost: int, limit: int) -> bool:
    return used + cost > limit if cost else used >= limit


class LocalLimiter:
    """Counters in this process (the local memory backend: one replica)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._counts: dict[tuple[str, int], int] = {}

    async def take(self, name: str, limit: int, cost: int) -> Verdict:
        index, fraction = _window(self._clock())
        used = self._counts.get((name, index - 1), 0) * (1 - fraction)
        used += self._counts.get((name, index), 0)
        if _exceeds(used, cost, limit):
            return _verdict(False, used, fraction)
        self._add(name, index, cost)
        return _verdict(True, used + cost, fraction)

    async def charge(self, name: str, cost: int) -> None:
        self._add(name, _window(self._clock())[0], cost)

    def _add(self, name: str, index: int, cost: int) -> None:
        if cost <= 0:
            return
        if len(self._counts) > _MAX_LOCAL_KEYS:
            self._counts = {k: v for k, v in self._counts.items() if k[1] >= index - 1}
        self._counts[(name, index)] = self._counts.get((name, index), 0) + cost


# KEYS: current window, previous window. ARGV: limit, cost, elapsed fraction, ttl.
_TAKE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
local limit, cost = tonumber(ARGV[1]), tonumber(ARGV[2])
local used = previous * (1 - tonumber(ARGV[3])) + current
if (cost > 0 and used + cost > limit) or (cost == 0 and used >= limit) then
  return {0, tostring(used)}
end
if cost > 0 then
  redis.call('INCRBY', KEYS[1], cost)
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
return {1, tostring(used + cost)}
"""


class LimiterUnavailable(Exception):
    pass


class RedisLimiter:
    """Counters in Redis, shared by every replica; each call bounded by `timeout_s`."""

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str,
        timeout_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._prefix = f"{prefix}:ratelimit:"
        self._timeout_s = timeout_s
        self._clock = clock
        self._script = client.register_script(_TAKE)
        self._ttl = str(math.ceil(2 * WINDOW_S))

    async def take(self, name: str, limit: int, cost: int) -> Verdict:
        index, fraction = _window(self._clock())
        keys = [f"{self._prefix}{name}:{index}", f"{self._prefix}{name}:{index - 1}"]
        args: list[str | int] = [limit, cost, repr(fraction), self._ttl]
        try:
            allowed, used = await guarded("rate limit", self._timeout_s, self._script(keys, args))
        except RedisDown as exc:
            raise LimiterUnavailable(str(exc)) from exc
        return _verdict(bool(int(allowed)), float(used), fraction)

    async def charge(self, name: str, cost: int) -> None:
        if cost <= 0:
            return
        key = f"{self._prefix}{name}:{_window(self._clock())[0]}"

        async def spend() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.incrby(key, cost)
                pipe.expire(key, int(self._ttl))
                await pipe.execute()

        try:
            await guarded("rate limit", self._timeout_s, spend())
        except RedisDown as exc:
            raise LimiterUnavailable(str(exc)) from exc
