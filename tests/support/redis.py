"""Real redis-server processes for tests, on a free loopback port in a temporary folder.

    with RedisServer(plain_redis()) as server:      # Debian's Redis 7 (no search module)
        client = Redis.from_url(server.url)
        server.stop()                                # a fault ...
        server.start()                               # ... and recovery, on the same port

`stack_redis()` gives Redis Stack 7.4 with RediSearch instead; `scripts/redis_env.sh`
installs it once into the cache folder. Persistence is off unless `aof=True`. Each server
runs in its own process group with its log in a temporary file, shown when it fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from tests.support.procs import ProcessHandle, ProcessStartError, free_port, start_process

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_HINT = (
    "redis-server is not installed; the Redis tests need a real server. "
    "Run `apt-get install -y redis-server` (or `bash scripts/redis_env.sh`)."
)
READY_TIMEOUT_S = 30.0
STACK_SETUP_TIMEOUT_S = 900.0


class RedisUnavailable(RuntimeError):
    """No redis-server binary (or the Redis Stack setup failed); the message says why."""


@dataclass(frozen=True)
class RedisBinary:
    server: Path
    modules: tuple[Path, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    name: str = "redis-server"


def plain_redis() -> RedisBinary:
    found = shutil.which("redis-server")
    if found is None:
        raise RedisUnavailable(INSTALL_HINT)
    return RedisBinary(Path(found))


def stack_redis() -> RedisBinary:
    """Redis Stack with RediSearch, via `scripts/redis_env.sh --stack-only` (cached)."""
    script = REPO_ROOT / "scripts" / "redis_env.sh"
    try:
        done = subprocess.run(
            ["bash", str(script), "--stack-only"],
            capture_output=True,
            text=True,
            timeout=STACK_SETUP_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise RedisUnavailable(f"{script} did not finish in {STACK_SETUP_TIMEOUT_S:.0f}s") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
        raise RedisUnavailable(f"{script} failed ({done.returncode}):\n{tail}")
    paths = dict(
        line.split("=", 1) for line in done.stdout.splitlines() if line.startswith("REDIS_STACK_")
    )
    try:
        return RedisBinary(
            Path(paths["REDIS_STACK_SERVER"]),
            (Path(paths["REDIS_STACK_MODULE"]),),
            {"LD_LIBRARY_PATH": paths["REDIS_STACK_LD_LIBRARY_PATH"]},
            name="redis-stack",
        )
    except KeyError as exc:
        raise RedisUnavailable(f"{script} printed no {exc}: {done.stdout!r}") from exc


class RedisServer:
    """One redis-server; `start()` and `stop()` may alternate (the port stays the same)."""

    def __init__(self, binary: RedisBinary, *, aof: bool = False) -> None:
        self.binary = binary
        self.aof = aof
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="taskgate-redis-"))
        self._handle: ProcessHandle | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def running(self) -> bool:
        return self._handle is not None and self._handle.running()

    def start(self, timeout: float = READY_TIMEOUT_S) -> None:
        if self.running():
            return
        cmd = [
            str(self.binary.server),
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)),
            *("--save", "", "--appendonly", "yes" if self.aof else "no"),
            *("--daemonize", "no", "--logfile", ""),
        ]
        for module in self.binary.modules:
            cmd += ["--loadmodule", str(module)]
        handle = start_process(cmd, env=dict(self.binary.env), name=self.binary.name)
        try:
            _wait_for_pong(handle, self.port, timeout)
        except BaseException:
            handle.stop()
            raise
        self._handle = handle

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL); a later `start()` reuses the port."""
        if self._handle is not None:
            self._handle.stop(grace_s=10.0)
            self._handle = None

    def kill(self) -> None:
        """Stop the server without letting it shut down cleanly."""
        if self._handle is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._handle.pid, signal.SIGKILL)
            self._handle.process.wait(timeout=10)
            self._handle.stop()
            self._handle = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _wait_for_pong(handle: ProcessHandle, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if not handle.running():
            raise ProcessStartError(
                f"{handle.name} exited with {handle.process.returncode} before answering PING; "
                f"{handle.describe()}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
            if reply.startswith(b"+PONG"):
                return
            last_error = f"reply {reply!r}"
        except OSError as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        time.sleep(0.05)
    raise ProcessStartError(
        f"{handle.name} did not answer PING on port {port} after {timeout:.0f}s ({last_error}); "
        f"{handle.describe()}"
    )
