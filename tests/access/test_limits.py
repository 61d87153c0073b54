from __future__ import annotations

import pytest

from gateway.access.limits import WINDOW_S, LocalLimiter
from tests.support.clock import Clock

pytestmark = pytest.mark.anyio


async def test_requests_beyond_the_limit_wait_for_the_window() -> None:
    clock = Clock(50 * WINDOW_S + WINDOW_S / 4)
    limiter = LocalLimiter(clock)
    assert [(await limiter.take("k", 3, 1)).allowed for _ in range(4)] == [True] * 3 + [False]
    refused = await limiter.take("k", 3, 1)
    assert refused.retry_after_s == WINDOW_S * 3 / 4
    assert (await limiter.take("other", 3, 1)).allowed  # budgets are per name


async def test_the_sliding_estimate_weighs_the_previous_window() -> None:
    clock = Clock(50 * WINDOW_S)
    limiter = LocalLimiter(clock)
    for _ in range(10):
        await limiter.take("k", 10, 1)
    clock.now += WINDOW_S * 1.5
    verdicts = [await limiter.take("k", 10, 1) for _ in range(6)]
    assert [v.allowed for v in verdicts] == [True] * 5 + [False]
    clock.now += WINDOW_S * 2  # both windows gone
    assert (await limiter.take("k", 10, 10)).allowed


async def test_a_zero_cost_take_only_asks() -> None:
    limiter = LocalLimiter(Clock(0.0))
    assert (await limiter.take("k", 5, 0)).allowed
    await limiter.charge("k", 5)
    assert not (await limiter.take("k", 5, 0)).allowed
