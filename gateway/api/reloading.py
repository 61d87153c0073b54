"""What triggers a reload besides `POST /admin/reload`: SIGHUP, and a changed config file."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path

logger = logging.getLogger(__name__)

Trigger = Callable[[], Coroutine[object, object, None]]


def on_sighup(trigger: Trigger) -> Callable[[], None]:
    """Run `trigger` on SIGHUP; returns the function that uninstalls the handler.

    Only the main thread's loop can own signal handlers; elsewhere this does nothing.
    """
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def fire() -> None:
        task = loop.create_task(trigger(), name="reload-sighup")
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, fire)
    except (NotImplementedError, RuntimeError, ValueError):
        logger.info("SIGHUP reload unavailable here (not the main thread)")
        return lambda: None

    def uninstall() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return uninstall


async def watch(path: Path, trigger: Trigger, interval_s: float = 1.0) -> None:
    """Call `trigger` whenever the file's modification time or size changes."""
    seen = _stamp(path)
    while True:
        await asyncio.sleep(interval_s)
        stamp = _stamp(path)
        if stamp != seen:
            seen = stamp
            logger.info("config file changed", extra={"action": "watch", "path": str(path)})
            await trigger()


def _stamp(path: Path) -> tuple[float, int] | None:
    with contextlib.suppress(OSError):
        stat = path.stat()
        return (stat.st_mtime, stat.st_size)
    return None
