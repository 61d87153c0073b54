"""Start a server subprocess for a test, wait until it answers, and always stop it.

    handle = start_process([python, "-m", "uvicorn", ...], env={"X": "1"},
                           ready_url=f"http://127.0.0.1:{port}/health", timeout=60)
    try:
        ...
    finally:
        handle.stop()

or `with start_process(...) as handle: ...`. The child runs in its own process group (servers
such as vLLM spawn workers), and its stdout and stderr go to a temporary log file whose tail
is shown in every failure message.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx

LOG_TAIL_LINES = 60
POLL_INTERVAL_S = 0.5


class ProcessStartError(RuntimeError):
    """The process exited, or did not become ready in time. The message ends with its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ProcessHandle:
    """A started subprocess; `stop()` is idempotent and ends its whole process group."""

    def __init__(self, process: subprocess.Popen[bytes], log_path: Path, name: str) -> None:
        self.process = process
        self.log_path = log_path
        self.name = name

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def describe(self) -> str:
        return f"{self.name} (pid {self.pid}, log {self.log_path}):\n{self.log_tail()}"

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the process group, wait up to `grace_s`, then SIGKILL it."""
        if self.running():
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait(timeout=grace_s)
        # Workers the server left behind share its process group.
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        # The child leads its own group (start_new_session), so the group id is its pid.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def __enter__(self) -> ProcessHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_process(
    cmd: Sequence[str],
    env: Mapping[str, str] | None = None,
    ready_url: str | None = None,
    timeout: float = 60.0,
    *,
    cwd: str | Path | None = None,
    name: str | None = None,
) -> ProcessHandle:
    """Start `cmd` with `env` laid over the current environment; wait for `ready_url`.

    Ready means `GET ready_url` answered 200 within `timeout` seconds. Raises
    `ProcessStartError` (after stopping the process) if it exits or is not ready in time.
    """
    label = name or Path(cmd[0]).name
    log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - the handle owns the file's path
        prefix=f"taskgate-{label}-", suffix=".log", delete=False
    )
    with log_file:
        process = subprocess.Popen(
            list(cmd),
            env={**os.environ, **(env or {})},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    handle = ProcessHandle(process, Path(log_file.name), label)
    if ready_url is not None:
        try:
            wait_ready(handle, ready_url, timeout)
        except BaseException:
            handle.stop()
            raise
    return handle


def wait_ready(handle: ProcessHandle, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if not handle.running():
            raise ProcessStartError(
                f"{handle.name} exited with {handle.process.returncode} before {url} was ready; "
                f"{handle.describe()}"
            )
        try:
            response = httpx.get(url, timeout=5.0)
        except httpx.HTTPError as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        else:
            if response.status_code == 200:
                return
            last_error = f"status {response.status_code}"
        time.sleep(POLL_INTERVAL_S)
    raise ProcessStartError(
        f"{handle.name} not ready at {url} after {timeout:.0f}s ({last_error}); {handle.describe()}"
    )
