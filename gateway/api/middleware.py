"""Pure ASGI middleware: request ids, the request body limit, and clients that leave."""

from __future__ import annotations

import asyncio
import json
import logging

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.auth import new_request_id
from gateway.errors import PayloadTooLarge

logger = logging.getLogger(__name__)


class RequestIds:
    """Take the client's `X-Request-Id` (or make one), keep it in request.state, echo it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        request_id = new_request_id(headers.get(b"x-request-id", b"").decode("latin-1"))
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Request-Id"] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)


class BodyLimit:
    """Refuse request bodies over `max_bytes` with a 413, whether declared or chunked.

    A body without a Content-Length is read (up to the limit) before the app sees it.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.max_bytes:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(send)
                return
            if message["type"] != "http.request" or not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        error = PayloadTooLarge(f"request body exceeds {self.max_bytes} bytes")
        body = json.dumps(
            {
                "error": {
                    "message": error.message,
                    "type": error.type,
                    "param": None,
                    "code": error.code,
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": error.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class CancelOnDisconnect:
    """Cancel a request whose client goes away before its response starts.

    Without this a handler runs on for nobody: a non-streamed chat answer is drained from
    its expert to the end (an upstream model generating every token), and a request
    waiting for its first token waits out the expert's timeout. Cancelled, the handler
    closes the expert's stream on its way out, and with it the upstream request. Once the
    response has started, the response watches the client itself (a stream stops at its
    next write); this watch stops there, so only one reader ever waits on `receive`.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        serving = asyncio.current_task()
        if scope["type"] != "http" or serving is None:
            await self.app(scope, receive, send)
            return
        body_read = asyncio.Event()
        responding = gone = False

        async def watch() -> None:
            nonlocal gone
            await body_read.wait()  # the app reads the body; after it, only a disconnect
            while (await receive())["type"] != "http.disconnect":
                pass
            if not responding:
                gone = True
                serving.cancel()

        async def receive_body() -> Message:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_read.set()
            return message

        async def send_watched(message: Message) -> None:
            nonlocal responding
            if message["type"] == "http.response.start":
                responding = True
                watcher.cancel()
            await send(message)

        watcher = asyncio.create_task(watch(), name="watch-disconnect")
        try:
            await self.app(scope, receive_body, send_watched)
        except asyncio.CancelledError:
            if not gone:
                raise
            request_id = scope.get("state", {}).get("request_id")
            logger.info("client went away; request cancelled", extra={"request_id": request_id})
        finally:
            watcher.cancel()
            if gone:  # the cancellation was ours: the task goes on (uvicorn ends the request)
                serving.uncancel()
