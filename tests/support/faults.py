"""An OpenAI-compatible upstream that misbehaves on purpose, for fault-injection tests.

A real `aiohttp.web` server on a loopback port, running an event loop in a thread of its
own, so that a test can drive a gateway process with blocking calls meanwhile. The
requested `model` picks the behaviour, so one server plays every fault at once and a
gateway config names one expert per fault:

    ok            a short streamed answer ("fault free answer"), or a JSON completion
    slow          that answer after 40 chunks of "tick ", one every 50 ms
    endless       a chunk every 50 ms, never finishing
    fail500       a 500 with an OpenAI error body
    hang          never answers, not even its headers
    hang-mid      one chunk, then silence
    cut-early     headers and an SSE comment, then the connection is closed
    cut           two chunks, then the connection is closed
    badjson       an event whose data is not JSON
    badjson-mid   a chunk, then an event whose data is not JSON
    badshape      a chunk of the wrong shape (`choices` is not a list)
    badshape-mid  a chunk, then one whose `delta` is a string

Each chat request is recorded as a `Call`, named by the `X-Request-Id` the gateway passes
on. A call ends `finished` (its answer written), `aborted` (the server cut it), or
`disconnected` (the client went away first: aiohttp cancels the handler). The server sees
its own connections: `open_connections()` counts them.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")
ANSWER = "fault free answer"
TICK_S = 0.05
CALL_TIMEOUT_S = 10.0


@dataclass
class Call:
    """One chat request as the upstream saw it; `outcome` is None while it runs."""

    request_id: str
    model: str
    stream: bool
    started: float
    ended: float | None = None
    outcome: str | None = None


def chunk(content: str | None = None, finish: str | None = None) -> bytes:
    delta = {"content": content} if content is not None else {}
    body = {
        "id": "chatcmpl-fault",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "fault",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return event(json.dumps(body))


def event(data: str) -> bytes:
    return f"data: {data}\n\n".encode()


USAGE = event(
    json.dumps(
        {
            "id": "chatcmpl-fault",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "fault",
            "choices": [],
            "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
        }
    )
)
TAIL = (chunk(finish="stop"), USAGE, event("[DONE]"))
WORDS = (chunk("fault "), chunk("free "), chunk("answer"))
Behaviour = Callable[[web.BaseRequest, Call], Awaitable[web.StreamResponse]]


async def _sse(request: web.BaseRequest) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    return response


def _pieces(*pieces: bytes) -> Behaviour:
    """Write these events one by one, then end the body."""

    async def answer(request: web.BaseRequest, call: Call) -> web.StreamResponse:
        response = await _sse(request)
        for piece in pieces:
            await response.write(piece)
        await response.write_eof()
        return response

    return answer


def _cut(*pieces: bytes) -> Behaviour:
    """Write these, give them a moment to leave, then close the connection mid-body."""

    async def answer(request: web.BaseRequest, call: Call) -> web.StreamResponse:
        response = await _sse(request)
        for piece in pieces:
            await response.write(piece)
        await asyncio.sleep(TICK_S)
        assert request.transport is not None
        request.transport.abort()
        call.outcome = "aborted"
        return response

    return answer


def _silent_after(*pieces: bytes) -> Behaviour:
    """Write these (with no pieces: not even the headers), then say nothing, ever."""

    async def answer(request: web.BaseRequest, call: Call) -> web.StreamResponse:
        if pieces:
            response = await _sse(request)
            for piece in pieces:
                await response.write(piece)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return answer


async def _ok(request: web.BaseRequest, call: Call) -> web.StreamResponse:
    if call.stream:
        return await _pieces(*WORDS, *TAIL)(request, call)
    body = {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": 0,
        "model": "fault",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ANSWER},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
    }
    return web.json_response(body)


async def _slow(request: web.BaseRequest, call: Call) -> web.StreamResponse:
    response = await _sse(request)
    for _ in range(40):
        await response.write(chunk("tick "))
        await asyncio.sleep(TICK_S)
    for piece in (*WORDS, *TAIL):
        await response.write(piece)
    await response.write_eof()
    return response


async def _endless(request: web.BaseRequest, call: Call) -> web.StreamResponse:
    response = await _sse(request)
    while True:
        await response.write(chunk("tick "))
        await asyncio.sleep(TICK_S)


async def _fail500(request: web.BaseRequest, call: Call) -> web.StreamResponse:
    error = {"error": {"message": "upstream exploded", "type": "server_error", "code": None}}
    return web.json_response(error, status=500)


BEHAVIOURS: dict[str, Behaviour] = {
    "ok": _ok,
    "slow": _slow,
    "endless": _endless,
    "fail500": _fail500,
    "hang": _silent_after(),
    "hang-mid": _silent_after(chunk("partial ")),
    "cut-early": _cut(b": opening\n\n"),
    "cut": _cut(chunk("half "), chunk("an ")),
    "badjson": _pieces(event("{not json"), *TAIL),
    "badjson-mid": _pieces(chunk("good "), event('{"choices": [{"delta": '), *TAIL),
    "badshape": _pieces(event('{"choices": {"index": 0}}'), *TAIL),
    "badshape-mid": _pieces(
        chunk("good "), event('{"choices": [{"index": 0, "delta": "oops"}]}'), *TAIL
    ),
}


class FaultUpstream:
    """The server; `url` is `http://127.0.0.1:PORT`. Use as a context manager."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fault-upstream", daemon=True
        )
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: web.Server | None = None
        self._runner: web.ServerRunner | None = None

    def __enter__(self) -> FaultUpstream:
        self._thread.start()
        self._call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._runner is not None:
                self._call(self._runner.cleanup())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(CALL_TIMEOUT_S)
            self._loop.close()
            self._sock.close()

    def open_connections(self) -> int:
        """Connections open at the server right now (idle keep-alive ones included)."""

        async def count() -> int:
            assert self._server is not None
            return len(self._server.connections)

        return self._call(count())

    def calls_for(self, request_id: str) -> list[Call]:
        return [call for call in list(self.calls) if call.request_id == request_id]

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CALL_TIMEOUT_S)

    async def _start(self) -> None:
        # aiohttp's server binds to the running loop: made here, in the server's thread.
        self._server = web.Server(self._handle, handler_cancellation=True)
        self._runner = web.ServerRunner(self._server, shutdown_timeout=2.0)
        self._sock.listen(128)
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method == "GET" and request.path.endswith("/models"):
            data = [{"id": name, "object": "model"} for name in BEHAVIOURS]
            return web.json_response({"object": "list", "data": data})
        body = await request.json()
        model = str(body.get("model"))
        call = Call(
            request.headers.get("X-Request-Id", ""), model, bool(body.get("stream")),
            time.monotonic(),
        )  # fmt: skip
        self.calls.append(call)
        behaviour = BEHAVIOURS.get(model)
        if behaviour is None:
            return web.json_response({"error": {"message": f"no model {model}"}}, status=404)
        outcome = "error"
        try:
            response = await behaviour(request, call)
            outcome = call.outcome or "finished"
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            outcome = "disconnected"
            raise
        finally:
            call.outcome, call.ended = outcome, time.monotonic()
