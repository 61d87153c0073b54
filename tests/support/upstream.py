"""A scripted HTTP upstream: a real `aiohttp.web` server on a loopback port.

It runs in the test's own event loop (anyio's asyncio backend), answers requests in order
with scripted answers (the last one repeats) and records what it received. Its listening
socket is bound from the start, so the port is the upstream's alone, and the server has
three states a test can move it through, synchronously (from a callback):

- refusing (before `start()`): bound but not listening, so connecting is refused;
- stalled (`stall()`): listening but never accepting, with its accept queue full, so a
  connection attempt gets no answer at all and times out;
- serving (`start()` or `serve()`).

A handler is cancelled when its client goes away (`handler_cancellation`): that is how a
`Stream` answer sees, from the server's side, that the expert dropped the connection.
`stall()` relies on Linux's accept-queue behaviour (the SYNs are dropped, not refused).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import CIMultiDictProxy

Answer = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
SHUTDOWN_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Seen:
    """A request as the upstream received it."""

    method: str
    path: str
    headers: CIMultiDictProxy[str]
    body: bytes
    # The client's (address, port): one per connection.
    peer: tuple[str, int]

    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


class Upstream:
    """The scripted server; `url` is `http://127.0.0.1:PORT`."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self._answers: list[Answer] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        server = web.Server(self._handle, handler_cancellation=True)
        self._runner = web.ServerRunner(server, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        self._site: web.SockSite | None = None
        self._starting: asyncio.Task[None] | None = None
        self._fillers: list[socket.socket] = []

    def script(self, *answers: Answer) -> None:
        """Answer the next requests with these, in order; the last one answers any more."""
        self._answers = list(answers)

    async def start(self) -> None:
        """Serve now."""
        self.serve()
        assert self._starting is not None
        await self._starting

    def serve(self) -> None:
        """Start listening at once and accept (from the event loop) very soon."""
        if self._starting is not None:
            return
        self._sock.listen(128)
        self._starting = asyncio.get_running_loop().create_task(self._start_site())

    def stall(self) -> None:
        """Listen without ever accepting, with the accept queue full: connecting times out."""
        self._sock.listen(0)
        # Linux queues one connection beyond a backlog of 0; the SYNs after it are dropped.
        filler = socket.create_connection(("127.0.0.1", self.port), timeout=1.0)
        self._fillers.append(filler)

    async def aclose(self) -> None:
        if self._starting is not None:
            await self._starting
        await self._runner.cleanup()
        self._sock.close()
        for filler in self._fillers:
            filler.close()

    async def _start_site(self) -> None:
        await self._runner.setup()
        self._site = web.SockSite(self._runner, self._sock)
        await self._site.start()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        assert request.transport is not None
        peer = request.transport.get_extra_info("peername")
        body = await request.read()
        self.requests.append(
            Seen(request.method, request.path, request.headers, body, (peer[0], peer[1]))
        )
        if not self._answers:
            raise AssertionError(f"unscripted request: {request.method} {request.path}")
        answer = self._answers.pop(0) if len(self._answers) > 1 else self._answers[0]
        return await answer(request)


@asynccontextmanager
async def upstream_server(*answers: Answer, started: bool = True) -> AsyncIterator[Upstream]:
    """An `Upstream` scripted with `answers`, serving unless `started` is False."""
    upstream = Upstream()
    upstream.script(*answers)
    try:
        if started:
            await upstream.start()
        yield upstream
    finally:
        await upstream.aclose()


def json_reply(body: Any, status: int = 200) -> Answer:
    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(status=status, text=json.dumps(body), content_type="application/json")

    return answer


def text_reply(text: str = "", status: int = 200) -> Answer:
    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(status=status, text=text)

    return answer


def delayed(delay_s: float, then: Answer) -> Answer:
    """Wait `delay_s` seconds, saying nothing, before answering."""

    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        await asyncio.sleep(delay_s)
        return await then(request)

    return answer


class Stream:
    """A `text/event-stream` answer (200 unless `status`), written piece by piece as chunks.

    `pause_s` is slept between pieces. With `hold_after`, the stream stops after that many
    pieces until `release()` (never released: it stays silent until the client goes).
    With `abort`, the connection is aborted at the end instead of finishing the body.
    What happened is seen from the server's side once `ended` is set: `sent` pieces,
    `finished` (the whole body written) or `disconnected` (the client went away first).
    """

    def __init__(
        self,
        *pieces: bytes,
        status: int = 200,
        content_type: str = "text/event-stream",
        pause_s: float = 0.0,
        hold_after: int | None = None,
        abort: bool = False,
    ) -> None:
        self.pieces = pieces
        self.status = status
        self.content_type = content_type
        self.pause_s = pause_s
        self.hold_after = hold_after
        self.abort = abort
        self.sent = 0
        self.finished = False
        self.disconnected = False
        self.ended = asyncio.Event()
        self._released = asyncio.Event()

    def release(self) -> None:
        self._released.set()

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        response = web.StreamResponse(
            status=self.status, headers={"Content-Type": self.content_type}
        )
        try:
            await response.prepare(request)
            for index, piece in enumerate(self.pieces):
                if index == self.hold_after:
                    await self._released.wait()
                elif index and self.pause_s:
                    await asyncio.sleep(self.pause_s)
                await response.write(piece)
                self.sent += 1
            if self.hold_after == len(self.pieces):
                await self._released.wait()
            if self.abort:
                assert request.transport is not None
                request.transport.abort()
                return response
            await response.write_eof()
            self.finished = True
        except (asyncio.CancelledError, ConnectionResetError):
            self.disconnected = True
            raise
        finally:
            self.ended.set()
        return response


def with_models(answer: Answer, *models: str) -> Answer:
    """`answer`, except that `GET .../models` (a health probe) lists `models`."""

    async def listing(request: web.BaseRequest) -> web.StreamResponse:
        if request.method == "GET" and request.path.endswith("/models"):
            data = [{"id": model, "object": "model", "owned_by": "upstream"} for model in models]
            return web.json_response({"object": "list", "data": data})
        return await answer(request)

    return listing
