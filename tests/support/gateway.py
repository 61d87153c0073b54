"""Run `taskgate serve` as a real process, the way an operator does."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.support.procs import ProcessHandle, free_port, start_process

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 300.0


class GatewayProcess:
    """One `taskgate serve` process; `stop()` and `start()` may alternate on the same port."""

    def __init__(
        self,
        config: Path | None = None,
        env: Mapping[str, str] | None = None,
        name: str = "taskgate",
        args: Sequence[str] = (),
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = name
        self._cmd = [sys.executable, "-m", "gateway.cli", "serve", "--port", str(self.port)]
        if config is not None:
            self._cmd += ["--config", str(config)]
        self._cmd += list(args)
        self._env = {"HF_HUB_OFFLINE": "1", "TASKGATE_LOG_LEVEL": "INFO", **(env or {})}
        self.handle: ProcessHandle | None = None

    def start(self) -> None:
        self.handle = start_process(
            self._cmd, self._env, ready_url=f"{self.url}/readyz", timeout=READY_TIMEOUT_S,
            cwd=REPO_ROOT, name=self.name,
        )  # fmt: skip

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.stop()
            self.handle = None

    def check_alive(self) -> None:
        if self.handle is not None and not self.handle.running():
            raise AssertionError(f"the gateway died during the test:\n{self.handle.describe()}")


@contextmanager
def gateway_process(
    config: Path | None = None,
    env: Mapping[str, str] | None = None,
    name: str = "taskgate",
    args: Sequence[str] = (),
) -> Iterator[str]:
    """Start the gateway on a free loopback port; yield its base URL once /readyz says ready."""
    process = GatewayProcess(config, env, name, args)
    process.start()
    try:
        yield process.url
        process.check_alive()
    finally:
        process.stop()
