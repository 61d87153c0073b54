"""Expert health: cheap probes on an interval (with jitter), and per-expert admission.

`HealthMonitor` asks each expert's `health()` (for an OpenAI-compatible server that is
`GET /models`, never a billed completion) every `interval_s`, spread by `jitter`. An
expert that fails `unhealthy_after` probes in a row is out of routing until a probe
passes again. `Admission` bounds how many requests an expert serves at once; a request
that cannot get a slot within the queue timeout is refused (429).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from experts.base import Expert, Health

logger = logging.getLogger(__name__)

StateHook = Callable[[str, bool], None]


@dataclass(frozen=True, slots=True)
class ExpertHealth:
    healthy: bool
    detail: str
    checked: float  # unix time of the last probe; 0 before the first
    failures: int = 0


class HealthMonitor:
    def __init__(
        self,
        experts: Mapping[str, Expert],
        *,
        interval_s: float = 10.0,
        jitter: float = 0.2,
        timeout_s: float = 5.0,
        unhealthy_after: int = 1,
        on_change: StateHook | None = None,
    ) -> None:
        self._experts = dict(experts)
        self._interval = interval_s
        self._jitter = jitter
        self._timeout = timeout_s
        self._unhealthy_after = unhealthy_after
        self._on_change = on_change
        self._state = {name: ExpertHealth(True, "not probed yet", 0.0) for name in experts}
        self._tasks: list[asyncio.Task[None]] = []

    def healthy(self, name: str) -> bool:
        state = self._state.get(name)
        return state is None or state.healthy

    def state(self, name: str) -> ExpertHealth:
        return self._state.get(name, ExpertHealth(True, "not monitored", 0.0))

    async def start(self) -> None:
        """Probe everything once (so the first decisions are informed), then on an interval."""
        await asyncio.gather(*(self.probe(name) for name in self._experts))
        self._tasks = [
            asyncio.create_task(self._loop(name), name=f"health-{name}") for name in self._experts
        ]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def probe(self, name: str) -> ExpertHealth:
        try:
            result = await asyncio.wait_for(self._experts[name].health(), self._timeout)
        except TimeoutError:
            result = Health(False, f"health probe timed out after {self._timeout:g}s")
        except Exception as exc:  # a probe must never take the monitor down
            result = Health(False, f"{type(exc).__name__}: {exc}")
        previous = self._state[name]
        failures = 0 if result.ok else previous.failures + 1
        healthy = result.ok or failures < self._unhealthy_after
        state = ExpertHealth(healthy, result.detail, time.time(), failures)
        self._state[name] = state
        if state.healthy != previous.healthy or previous.checked == 0.0:
            level = logging.INFO if state.healthy else logging.WARNING
            logger.log(
                level,
                "expert health",
                extra={"expert": name, "healthy": state.healthy, "detail": state.detail},
            )
            if self._on_change is not None:
                self._on_change(name, state.healthy)
        return state

    async def _loop(self, name: str) -> None:
        while True:
            spread = self._interval * self._jitter
            await asyncio.sleep(max(0.05, self._interval + random.uniform(-spread, spread)))
            await self.probe(name)


class Busy(Exception):
    """No slot became free within the queue timeout."""


class Admission:
    """At most `limit` concurrent requests for one expert; others wait up to a timeout.

    A slot is held from the call to the end of the answer's stream, so `acquire` and
    `release` are separate (the stream outlives the handler that opened it).
    """

    def __init__(self, limit: int | None, queue_timeout_s: float) -> None:
        self._slots = asyncio.Semaphore(limit) if limit else None
        self._timeout = queue_timeout_s

    async def acquire(self) -> None:
        if self._slots is None:
            return
        try:
            await asyncio.wait_for(self._slots.acquire(), self._timeout)
        except TimeoutError as exc:
            raise Busy from exc

    def release(self) -> None:
        if self._slots is not None:
            self._slots.release()


class InFlight:
    """Counts the requests a state serves, so a replaced state can wait for them."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self._count += 1
        self._idle.clear()

    def leave(self) -> None:
        self._count -= 1
        if self._count == 0:
            self._idle.set()

    @property
    def count(self) -> int:
        return self._count

    async def drained(self) -> None:
        await self._idle.wait()
