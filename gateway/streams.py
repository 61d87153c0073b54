"""Delta streams: opening an expert's stream (with its fallbacks), replaying cached text.

`open_expert` waits for the first delta before the HTTP layer sends headers, so a failure
that happens before the expert says anything still gets a proper status code.
"""

from __future__ import annotations

import asyncio
import logging
import re
import weakref
from collections.abc import AsyncIterator, Callable, Mapping

from experts.base import (
    Delta,
    ExpertDeclined,
    ExpertError,
    ExpertRejected,
    ExpertRequest,
    ExpertTimeout,
    ExpertUnavailable,
    ExpertUnreachable,
    JSONValue,
    Usage,
)
from experts.registry import ExpertSet
from gateway.config import Config
from gateway.errors import (
    ExpertCannotAnswer,
    ExpertDown,
    ExpertFailed,
    ExpertTimedOut,
    GatewayError,
    UpstreamRejected,
)

logger = logging.getLogger(__name__)

_PIECE = re.compile(r"\S+\s*|\s+")
_WORDS_PER_PIECE = 3


ErrorHook = Callable[[str, str], None]


def error_kind(exc: BaseException) -> str:
    """A short name for an expert failure, as metrics count it."""
    if isinstance(exc, ExpertTimeout | TimeoutError):
        return "timeout"
    if isinstance(exc, ExpertRejected):
        return "rejected"
    if isinstance(exc, ExpertDeclined):
        return "declined"
    return "unavailable"


async def open_expert(
    config: Config,
    experts: ExpertSet,
    first: str,
    request: ExpertRequest,
    on_error: ErrorHook | None = None,
    healthy: Callable[[str], bool] | None = None,
    usable: Callable[[str], bool] | None = None,
) -> tuple[str, AsyncIterator[Delta]]:
    """Start `first`'s stream and wait for its first delta, trying its fallbacks in order.

    A fallback is tried when an expert declines or is unavailable before answering; a
    timeout or a rejected request ends the attempt. Returns the expert that answered and
    its (primed) stream. `on_error(expert, kind)` hears of every failure; fallbacks that
    `healthy` says are down, or `usable` says cannot take the request, are skipped. The
    first delta is awaited for the expert's `timeout_s`, or for its `total_timeout_s`
    when it answers a non-streamed request whole.
    """
    spec = config.expert(first)
    fallbacks = spec.fallbacks if spec is not None else []
    chain = [
        first,
        *(
            f
            for f in fallbacks
            if (healthy is None or healthy(f)) and (usable is None or usable(f))
        ),
    ]
    failure: ExpertError | None = None
    for name in chain:
        expert_spec = config.expert(name)
        timeout = expert_spec.first_delta_timeout_s(request.stream) if expert_spec else 60.0
        stream = experts[name].stream(request)
        try:
            first_delta = await asyncio.wait_for(_first(stream), timeout)
        except (ExpertError, TimeoutError) as exc:
            await close_stream(stream)
            if on_error is not None:
                on_error(name, error_kind(exc))
            if isinstance(exc, TimeoutError):
                raise ExpertTimedOut(f"expert '{name}' timed out after {timeout:g}s") from exc
            if not isinstance(exc, ExpertDeclined | ExpertUnavailable):
                raise translate(exc) from exc
            logger.warning("expert failed before answering", extra={"expert": name})
            failure = exc
            continue
        return name, _prepend(first_delta, stream)
    assert failure is not None
    raise translate(failure) from failure


def translate(exc: ExpertError) -> GatewayError:
    """An expert's failure as the gateway error the client sees, naming the expert."""
    if isinstance(exc, ExpertTimeout):
        return ExpertTimedOut(f"expert '{exc.expert}' timed out: {exc.message}")
    if isinstance(exc, ExpertRejected):
        return rejected(exc)
    if isinstance(exc, ExpertDeclined):
        return ExpertCannotAnswer(f"expert '{exc.expert}' cannot answer this: {exc.message}")
    if isinstance(exc, ExpertUnreachable):
        return ExpertDown(f"expert '{exc.expert}' is unavailable: {exc.message}")
    return ExpertFailed(f"expert '{exc.expert}' failed: {exc.message}")


def rejected(exc: ExpertRejected) -> UpstreamRejected:
    """An upstream's 4xx as the client sees it: its status, error object and Retry-After."""
    message = (exc.error or {}).get("message")
    if not isinstance(message, str):
        message = f"expert '{exc.expert}' rejected the request: {exc.message}"
    return UpstreamRejected(
        message, status=exc.status, expert=exc.expert, error=exc.error, retry_after=exc.retry_after
    )


async def single(text: str) -> AsyncIterator[Delta]:
    """A whole answer the gateway writes itself (a clarification question)."""
    yield Delta(content=text)
    words = len(text.split())
    yield Delta(finish_reason="stop", usage=Usage(0, words, words))


async def replay(
    text: str,
    finish_reason: str,
    usage: Usage | None,
    completion: Mapping[str, JSONValue] | None = None,
) -> AsyncIterator[Delta]:
    """A cached answer: whole, in one delta, when it was kept in OpenAI's shape; else as a
    stream of a few words per delta, like the original."""
    if completion is not None:
        yield Delta(text, finish_reason, usage, completion=completion)
        return
    pieces = _PIECE.findall(text)
    for start in range(0, len(pieces), _WORDS_PER_PIECE):
        yield Delta(content="".join(pieces[start : start + _WORDS_PER_PIECE]))
    yield Delta(finish_reason=finish_reason, usage=usage)


def usage_from(data: dict[str, int] | None) -> Usage | None:
    if not data:
        return None
    prompt, completion = int(data.get("prompt_tokens", 0)), int(data.get("completion_tokens", 0))
    return Usage(prompt, completion, int(data.get("total_tokens", prompt + completion)))


class Lease:
    """Releases what a request holds (its admission slot, its in-flight count) exactly once:
    when its answer stream ends, or when the stream is dropped without being read."""

    def __init__(self, *releases: Callable[[], None]) -> None:
        self._releases = list(releases)
        self._done = False

    def also(self, release: Callable[[], None]) -> None:
        self._releases.append(release)

    def release(self) -> None:
        if not self._done:
            self._done = True
            for release in self._releases:
                release()

    def guard(self, deltas: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
        guarded = self._guarded(deltas)
        weakref.finalize(guarded, self.release)  # a stream nobody reads is released too
        return guarded

    async def _guarded(self, deltas: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
        try:
            async for delta in deltas:
                yield delta
        finally:
            self.release()
            await close_stream(deltas)


async def close_stream(stream: AsyncIterator[Delta]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


async def _first(stream: AsyncIterator[Delta]) -> Delta | None:
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return None


async def _prepend(first: Delta | None, rest: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
    try:
        if first is not None:
            yield first
            async for delta in rest:
                yield delta
    finally:
        await close_stream(rest)
