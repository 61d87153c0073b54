"""An expert served by vLLM or any OpenAI-compatible chat completions server.

The protocol passes through whole: messages go upstream in the shape the client sent them
(tool calls, tool turns, content parts, names), a non-streamed request is sent
non-streamed and its `chat.completion` comes back as it is, and a streamed one hands on
every chunk untouched (tool call deltas, every choice, logprobs, unknown fields); the
text view the gateway reads is taken beside them. An upstream 4xx keeps its status, its
OpenAI error object and its `Retry-After`.

One pooled `aiohttp.ClientSession` per expert (keep-alive connections, C HTTP parser: a
streamed request costs a fraction of a millisecond of CPU). Streaming passes the
upstream's chunks through one by one and reads each body to its end, so connections go
back to the pool. Connection failures and 5xx answers are retried with exponential
backoff and jitter until a response is open; nothing is retried once a stream has
started. aiohttp's exceptions and the upstream's error statuses become `ExpertError`s
here, at the edge.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import AsyncIterator
from typing import Final

import aiohttp
import anyio

from experts.base import (
    Delta,
    ExpertError,
    ExpertRejected,
    ExpertRequest,
    ExpertResult,
    ExpertTimeout,
    ExpertUnavailable,
    ExpertUnreachable,
    Forwarded,
    Health,
    JSONObject,
    JSONValue,
    describe_exception,
)
from experts.openai_wire import (
    MalformedUpstream,
    SSEDecoder,
    error_message,
    error_object,
    lines,
    parse_chunk,
    parse_completion,
    parse_model_ids,
    sampling_params,
)
from experts.specs import OpenAISpec

# What tests and callers import from here.
__all__ = ["MalformedUpstream", "OpenAIExpert", "SSEDecoder"]

logger = logging.getLogger(__name__)

# Request keys the expert sets itself; `ExpertRequest.extra` cannot override them.
OWNED_KEYS: Final = frozenset({"model", "messages", "stream"})
HEALTH_TIMEOUT_S: Final = 5.0
MAX_BACKOFF_S: Final = 5.0
# Lines read after `data: [DONE]` (normally none) before the response is dropped.
_LINES_AFTER_DONE: Final = 8
# How much of an error body is read.
ERROR_BODY_BYTES: Final = 64 * 2**10
KEEPALIVE_S: Final = 3.0
# Failures to open a connection: retried, and reported as "unreachable" (or timed out).
_CONNECT_ERRORS: Final = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)


class OpenAIExpert:
    """A chat expert behind an OpenAI-compatible HTTP API (`/chat/completions`, `/models`).

    `retry_backoff_s` is the first retry's nominal delay; each further retry doubles it.
    """

    def __init__(self, spec: OpenAISpec, *, retry_backoff_s: float = 0.25) -> None:
        self._spec = spec
        self._retry_backoff_s = retry_backoff_s
        self._session: aiohttp.ClientSession | None = None
        self._base = spec.base_url.rstrip("/")
        self._completions_url = f"{self._base}/chat/completions"
        self._models_url = f"{self._base}/models"

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def kind(self) -> str:
        return "openai"

    async def start(self) -> None:
        self._ensure_session()

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def complete(self, request: ExpertRequest) -> ExpertResult:
        # Nothing arrives before the whole answer: only the total timeout applies.
        limits = aiohttp.ClientTimeout(
            total=self._spec.total_timeout_s, connect=self._spec.connect_timeout_s
        )
        body = self._body(request, stream=False)
        response = await self._open(body, request.request_id, limits)
        read = False
        try:
            raw = await response.read()
            read = True
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._transport_error(exc) from exc
        finally:
            let_go(response, read_whole=read)
        try:
            return parse_completion(raw)
        except MalformedUpstream as exc:
            raise self._malformed(exc) from exc

    async def stream(self, request: ExpertRequest) -> AsyncIterator[Delta]:
        if not request.stream:  # asked whole: sent non-streamed, answered in one delta
            result = await self.complete(request)
            usage, body = result.usage, result.body
            yield Delta(result.content, result.finish_reason, usage, completion=body)
            return
        # `timeout_s` is the longest silence between chunks; the whole stream has its total.
        limits = aiohttp.ClientTimeout(
            total=self._spec.total_timeout_s,
            connect=self._spec.connect_timeout_s,
            sock_read=self._spec.timeout_s,
        )
        body = self._body(request, stream=True)
        response = await self._open(body, request.request_id, limits)
        decoder = SSEDecoder()
        finished = complete = False
        after_done: int | None = None
        try:
            async for line in lines(response):
                if after_done is not None:
                    # Read the body to its end, so that the connection goes back to the
                    # pool; an upstream that keeps talking after [DONE] is cut off.
                    after_done += 1
                    if after_done > _LINES_AFTER_DONE:
                        break
                    continue
                data = decoder.feed(line)
                if data is None or not data.strip():
                    continue
                if data.strip() == "[DONE]":
                    after_done = 0
                    continue
                delta = parse_chunk(data)
                finished = finished or delta.finish_reason is not None
                yield delta
            else:
                complete = True
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._transport_error(exc) from exc
        except MalformedUpstream as exc:
            raise self._malformed(exc) from exc
        finally:
            let_go(response, read_whole=complete)
        if not finished:
            raise ExpertUnavailable(self.name, "upstream stream ended early")

    async def forward(self, endpoint: str, body: JSONObject, request_id: str) -> Forwarded:
        """POST `body` to the upstream's `/<endpoint>` with this expert's model, and hand
        back its answer's bytes as they come (a stream when the body asks for one).

        A streamed completion asks for usage, as a streamed chat does. Retries and errors
        as for chat: a 4xx is `ExpertRejected` with the upstream's error object, a 5xx or
        a failed connection `ExpertUnavailable`."""
        stream = body.get("stream") is True
        limits = aiohttp.ClientTimeout(
            total=self._spec.total_timeout_s,
            connect=self._spec.connect_timeout_s,
            sock_read=self._spec.timeout_s if stream else None,
        )
        url = f"{self._base}/{endpoint}"
        sent = {**body, "model": self._spec.model}
        if stream and endpoint == "completions":
            sent["stream_options"] = with_usage(body.get("stream_options"))
        response = await self._open(sent, request_id, limits, url)
        content_type = response.headers.get("Content-Type", "application/json")
        return Forwarded(response.status, content_type, self._relay(response))

    async def _relay(self, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        complete = False
        try:
            async for piece in response.content.iter_any():
                yield piece
            complete = True
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._transport_error(exc) from exc
        finally:
            let_go(response, read_whole=complete)

    async def health(self) -> Health:
        session = self._ensure_session()
        timeout = aiohttp.ClientTimeout(
            total=min(self._spec.timeout_s, HEALTH_TIMEOUT_S), connect=self._spec.connect_timeout_s
        )
        try:
            async with session.get(self._models_url, timeout=timeout) as response:
                status, raw = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Health(ok=False, detail=describe_exception(exc))
        if status != 200:
            return Health(ok=False, detail=f"GET /models returned {status}")
        try:
            listed = parse_model_ids(raw)
        except MalformedUpstream as exc:
            return Health(ok=False, detail=f"GET /models: {exc}")
        if self._spec.model not in listed:
            served = ", ".join(sorted(listed)) or "none"
            return Health(ok=False, detail=f"model '{self._spec.model}' not served (has: {served})")
        return Health(ok=True, detail=f"model '{self._spec.model}' served")

    # -- request ---------------------------------------------------------------------------

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            spec = self._spec
            headers = dict(spec.headers)
            if spec.api_key is not None:
                headers["Authorization"] = f"Bearer {spec.api_key.get_secret_value()}"
            # Idle connections are dropped before the upstream's own keep-alive timeout
            # (uvicorn, which serves vLLM, closes them after 5 s), so a request is never
            # sent on a connection the server is closing.
            connector = aiohttp.TCPConnector(
                limit=spec.max_connections,
                limit_per_host=spec.max_connections,
                keepalive_timeout=KEEPALIVE_S,
            )
            # `connect` also bounds the wait for a free pooled connection; `sock_read` is
            # the longest silence while an answer is read, as httpx's read timeout was.
            timeout = aiohttp.ClientTimeout(
                total=None, connect=spec.connect_timeout_s, sock_read=spec.timeout_s
            )
            self._session = aiohttp.ClientSession(
                connector=connector, headers=headers, timeout=timeout
            )
        return self._session

    def _body(self, request: ExpertRequest, *, stream: bool) -> JSONObject:
        body: JSONObject = {k: v for k, v in request.extra.items() if k not in OWNED_KEYS}
        body.update(sampling_params(request))
        body["model"] = self._spec.model
        body["messages"] = [self._message(m.to_openai()) for m in request.messages]
        body["stream"] = stream
        options = body.pop("stream_options", None)
        if stream:
            body["stream_options"] = with_usage(options)
        return body

    def _message(self, message: JSONObject) -> JSONObject:
        if message.get("role") == "developer" and not self._spec.developer_role:
            message["role"] = "system"
        return message

    async def _open(
        self,
        body: JSONObject,
        request_id: str,
        limits: aiohttp.ClientTimeout,
        url: str | None = None,
    ) -> aiohttp.ClientResponse:
        """POST the body (to chat completions, or `url`) and return the open (unread) 2xx
        response, retrying what is safe."""
        session = self._ensure_session()
        headers = {"Content-Type": "application/json"}
        if request_id:
            headers["X-Request-Id"] = request_id
        payload = json.dumps(body).encode()
        attempt = 0
        while True:
            try:
                response = await session.post(
                    url or self._completions_url, data=payload, headers=headers, timeout=limits
                )
            except _CONNECT_ERRORS as exc:
                if attempt >= self._spec.max_retries:
                    raise self._transport_error(exc, attempts=attempt + 1) from exc
                retry_reason = type(exc).__name__
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise self._transport_error(exc) from exc
            else:
                if response.ok:
                    return response
                if response.status < 500 or attempt >= self._spec.max_retries:
                    raise await self._status_error(response)
                response.close()
                retry_reason = f"status {response.status}"
            attempt += 1
            await self._backoff(attempt, retry_reason)

    async def _backoff(self, attempt: int, reason: str) -> None:
        nominal = min(self._retry_backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)
        delay = random.uniform(nominal / 2, nominal)
        logger.warning(
            "retrying upstream",
            extra={"expert": self.name, "action": "retry", "attempt": attempt, "reason": reason},
        )
        await anyio.sleep(delay)

    # -- response --------------------------------------------------------------------------

    async def _status_error(self, response: aiohttp.ClientResponse) -> ExpertError:
        # `read(n)` returns what has arrived so far, so read until the end or the limit.
        raw = b""
        try:
            while len(raw) < ERROR_BODY_BYTES:
                piece = await response.content.read(ERROR_BODY_BYTES - len(raw))
                if not piece:
                    break
                raw += piece
        except (aiohttp.ClientError, TimeoutError):
            pass
        finally:
            response.close()
        status = response.status
        message = error_message(raw)
        if 400 <= status < 500:
            return ExpertRejected(
                self.name,
                message,
                status=status,
                error=error_object(raw),
                retry_after=response.headers.get("Retry-After"),
            )
        if status == 503:  # the upstream says it cannot serve now (starting, overloaded)
            return ExpertUnreachable(self.name, f"upstream returned 503: {message}")
        return ExpertUnavailable(self.name, f"upstream returned {status}: {message}")

    def _transport_error(self, exc: BaseException, attempts: int = 1) -> ExpertError:
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        what = describe_exception(exc)
        prefix = f"upstream {self._spec.base_url}"
        if isinstance(exc, TimeoutError):
            return ExpertTimeout(self.name, f"{prefix} timed out{tries} ({what})")
        if isinstance(exc, aiohttp.ClientConnectorError):
            return ExpertUnreachable(self.name, f"{prefix} unreachable{tries} ({what})")
        return ExpertUnavailable(self.name, f"{prefix} failed{tries} ({what})")

    def _malformed(self, exc: MalformedUpstream) -> ExpertUnavailable:
        return ExpertUnavailable(self.name, f"unusable upstream answer: {exc}")


def with_usage(options: JSONValue | None) -> JSONObject:
    """A stream's `stream_options` with usage asked for (token budgets count it), the
    client's other options kept; the client gets the usage chunk only if it asked too."""
    kept = dict(options) if isinstance(options, dict) else {}
    return {**kept, "include_usage": True}


def let_go(response: aiohttp.ClientResponse, *, read_whole: bool) -> None:
    """A body read to its end frees the connection for the next request; anything else
    (the consumer stopped, an error, a cancellation) drops it, so the upstream stops
    generating."""
    if read_whole:
        response.release()
    else:
        response.close()
