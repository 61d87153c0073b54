"""Run `taskgate serve` as a real process, the way an operator does."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from tests.support.procs import free_port, start_process

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 300.0


@contextmanager
def gateway_process(
    config: Path | None = None, env: Mapping[str, str] | None = None, name: str = "taskgate"
) -> Iterator[str]:
    """Start the gateway on a free loopback port; yield its base URL once /readyz says ready."""
    port = free_port()
    cmd = [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)]
    if config is not None:
        cmd += ["--config", str(config)]
    base = f"http://127.0.0.1:{port}"
    environment = {"HF_HUB_OFFLINE": "1", "TASKGATE_LOG_LEVEL": "INFO", **(env or {})}
    with start_process(
        cmd, environment, ready_url=f"{base}/readyz", timeout=READY_TIMEOUT_S, cwd=REPO_ROOT,
        name=name,
    ) as handle:  # fmt: skip
        try:
            yield base
        finally:
            if not handle.running():
                raise AssertionError(f"the gateway died during the test:\n{handle.describe()}")
