"""The `Expert` protocol and the request/result types every expert speaks.

Experts never import the gateway: the gateway reaches them only through this module
and `experts.registry`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias, runtime_checkable

JSONValue: TypeAlias = str | int | float | bool | list["JSONValue"] | dict[str, "JSONValue"] | None


JSONObject: TypeAlias = dict[str, JSONValue]


@dataclass(frozen=True, slots=True)
class Message:
    """One chat turn: a text view every expert and the gateway's own logic read, and the
    turn as the client sent it.

    `role` and `content` are the text view (a `developer` turn reads as `system`; content
    parts other than text are left out of `content`). `raw`, when the turn came from a
    client, is its whole OpenAI shape (`name`, `tool_calls`, `tool_call_id`, image and
    audio parts, any unknown field), which an OpenAI-compatible expert sends on as it is.
    Turns the gateway writes itself (few-shot examples) have none.
    """

    role: str
    content: str
    raw: Mapping[str, JSONValue] | None = field(default=None, compare=False)

    def to_openai(self) -> JSONObject:
        """The turn in OpenAI's shape: as the client sent it, else its text view."""
        if self.raw is not None:
            return dict(self.raw)
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class Sampling:
    """Decoding parameters. `None` means "the expert's own default"."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    # The name the client gave the token limit: `max_completion_tokens` (newer OpenAI
    # models refuse `max_tokens`) or `max_tokens`. Upstreams get it under the same name.
    max_tokens_key: str = "max_tokens"

    def is_greedy(self) -> bool:
        """Whether an in-process model decodes greedily (its default without temperature)."""
        return self.temperature is None or self.temperature == 0.0

    def is_deterministic(self, seed_deterministic: bool) -> bool:
        """Whether two identical requests get one answer: an explicit temperature of 0, or
        a seed where the expert says seeds make answers repeatable. OpenAI's default
        temperature is 1, so a request that names none samples."""
        return self.temperature == 0.0 or (seed_deterministic and self.seed is not None)


@dataclass(frozen=True, slots=True)
class ExpertRequest:
    """What the gateway hands an expert.

    `extra` holds request fields the gateway does not interpret (e.g. `tools`,
    `response_format`, `logprobs`, `n`); an OpenAI-compatible expert forwards them to its
    upstream untouched.
    """

    messages: tuple[Message, ...]
    sampling: Sampling = field(default_factory=Sampling)
    extra: Mapping[str, JSONValue] = field(default_factory=dict)
    request_id: str = ""
    # False: the client wants the answer whole. An expert that can get it whole (an
    # OpenAI-compatible upstream, asked non-streamed) yields it as a single delta.
    stream: bool = True

    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return ""


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    # Anything else the upstream reported (e.g. `prompt_tokens_details`), kept verbatim.
    details: Mapping[str, JSONValue] = field(default_factory=dict)

    def to_json(self) -> dict[str, JSONValue]:
        body: dict[str, JSONValue] = dict(self.details)
        body.update(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.total_tokens,
        )
        return body


@dataclass(frozen=True, slots=True)
class Delta:
    """One step of an answer: some text, and on the last step the finish reason.

    `content` and `finish_reason` are the text view of the first choice. `usage` arrives
    at most once, on or after the step that carries `finish_reason`. `meta` holds facts
    about the answer an expert reports on its final delta, as JSON keyed by kind (a fusion
    expert's `{"fusion": {...}}` weight summary); the gateway may attach them to the
    answer's `route` object. Empty for most experts.

    An expert that speaks the whole OpenAI protocol also hands over the answer in that
    shape, untouched: `chunk` is one streamed `chat.completion.chunk` (every choice, tool
    call deltas, logprobs, unknown fields), `completion` a whole `chat.completion` (a
    non-streamed answer, in a single delta). Experts that produce text leave both None.
    """

    content: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    meta: Mapping[str, JSONValue] = field(default_factory=dict)
    chunk: Mapping[str, JSONValue] | None = None
    completion: Mapping[str, JSONValue] | None = None


@dataclass(frozen=True, slots=True)
class ExpertResult:
    """A whole answer: its text view, and `body`, the `chat.completion` as the upstream
    sent it, from an expert that speaks the whole protocol."""

    content: str
    finish_reason: str
    usage: Usage | None = None
    body: Mapping[str, JSONValue] | None = None


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    detail: str = ""


@runtime_checkable
class Expert(Protocol):
    """A specialist that answers chat requests.

    `stream` is an async generator; closing it (``aclose``) must release whatever it holds
    upstream. `complete` returns the whole answer at once.
    """

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    async def start(self) -> None:
        """Load what the expert needs (weights, pools). Called once before first use."""
        ...

    async def complete(self, request: ExpertRequest) -> ExpertResult: ...

    def stream(self, request: ExpertRequest) -> AsyncIterator[Delta]: ...

    async def health(self) -> Health: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Forwarded:
    """An upstream's answer to a request passed through to one of its other endpoints
    (`completions`, `embeddings`, `responses`): its status, content type, and its body's
    bytes as they arrive. Closing `body` (``aclose``) releases the upstream response."""

    status: int
    content_type: str
    body: AsyncIterator[bytes]


@runtime_checkable
class Forwarding(Protocol):
    """An expert that serves OpenAI endpoints besides chat, passed through whole."""

    async def forward(self, endpoint: str, body: JSONObject, request_id: str) -> Forwarded: ...


async def drain(stream: AsyncIterator[Delta]) -> ExpertResult:
    """Collect a delta stream into one result (how non-streaming shares the stream path)."""
    parts: list[str] = []
    finish_reason = "stop"
    usage: Usage | None = None
    try:
        async for delta in stream:
            parts.append(delta.content)
            if delta.finish_reason is not None:
                finish_reason = delta.finish_reason
            if delta.usage is not None:
                usage = delta.usage
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
    return ExpertResult(content="".join(parts), finish_reason=finish_reason, usage=usage)


# ---------------------------------------------------------------------------------------
# Errors. The gateway maps these to HTTP statuses; experts raise nothing else on purpose.


def describe_exception(exc: BaseException) -> str:
    """`Type: message`, or the type alone when the exception has no message (as many of
    aiohttp's and asyncio's have not): the cause an expert puts in its error."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class ExpertError(Exception):
    """An expert could not answer. Carries the expert's name for the error body.

    `message` says what went wrong without naming the expert; the gateway adds the name.
    """

    def __init__(self, expert: str, message: str) -> None:
        super().__init__(message)
        self.expert = expert
        self.message = message


class ExpertTimeout(ExpertError):
    """The expert did not answer within its timeout."""


class ExpertUnavailable(ExpertError):
    """The expert could not be reached, or failed on its side (connect error, 5xx)."""


class ExpertUnreachable(ExpertUnavailable):
    """The expert could not be reached at all (connection refused, DNS, connect timeout)."""


class ExpertRejected(ExpertError):
    """The expert refused the request (an upstream 4xx): invalid, unauthorised, unknown,
    or too many requests.

    `error` is the upstream's OpenAI error object (`message`, `type`, `param`, `code`)
    when it sent one, and `retry_after` its `Retry-After` header, so that the client can
    be answered as the upstream answered.
    """

    def __init__(
        self,
        expert: str,
        message: str,
        status: int = 400,
        *,
        error: Mapping[str, JSONValue] | None = None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(expert, message)
        self.status = status
        self.error = error
        self.retry_after = retry_after


class ExpertDeclined(ExpertError):
    """The request is not one this expert can handle (a tool found nothing to compute).

    The gateway may try the expert's fallbacks.
    """
