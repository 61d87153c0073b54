"""A scripted upstream (tests/support/upstream.py) served from its own thread and event
loop, so that synchronous clients (the official `openai` client, langchain) can call it
directly and through a gateway served by uvicorn in another thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.upstream import Upstream

START_TIMEOUT_S = 10.0


@contextmanager
def threaded_upstream() -> Iterator[Upstream]:
    """A serving `Upstream` whose loop runs in a daemon thread; scripted from the test."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> Upstream:
        upstream = Upstream()
        await upstream.start()
        return upstream

    upstream = asyncio.run_coroutine_threadsafe(start(), loop).result(START_TIMEOUT_S)
    try:
        yield upstream
    finally:
        asyncio.run_coroutine_threadsafe(upstream.aclose(), loop).result(START_TIMEOUT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(START_TIMEOUT_S)
        loop.close()
