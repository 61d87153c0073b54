"""The tool interface: one small protocol every built-in API tool implements.

A tool reads the user's text and answers with one line of text. It says "this is not for
me" by raising `NothingToCompute`, and "this is for me but cannot be done" (division by
zero, an unknown unit, a number too large) by raising `ToolInputError`. A tool that calls a
service out of process says that the service failed with `ToolUnavailable` (or
`ToolUnreachable`) and that it did not answer in time with `ToolTimeout`. `ToolExpert`
translates them into `ExpertDeclined`, `ExpertRejected`, `ExpertUnavailable`,
`ExpertUnreachable` and `ExpertTimeout`.

A short follow-up turn ("and in feet?", "times 2") means something only with the turns
before it, so `run` also gets the conversation's earlier messages; `earlier_turns` is how a
tool reads them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, runtime_checkable

from experts.base import Health, Message

# Longer messages are not questions for a tool; refusing them up front keeps every
# regular expression and parser below linear in practice.
MAX_TEXT_CHARS = 2000
# How many earlier turns of one role a follow-up looks back through.
MAX_HISTORY_TURNS = 20
# The CPU time one computation may take before it is given up.
DEFAULT_TIME_LIMIT_S = 0.05


class ToolError(Exception):
    """A tool could not answer. The message is shown to the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NothingToCompute(ToolError):
    """The text holds nothing this tool understands (the gateway may try a fallback)."""


class ToolInputError(ToolError):
    """The text asks this tool for something it cannot do (the client's fault)."""


class ToolUnavailable(ToolError):
    """The service the tool calls failed, or answered unusably (not the client's fault)."""


class ToolUnreachable(ToolUnavailable):
    """The service the tool calls could not be reached at all."""


class ToolTimeout(ToolError):
    """The service the tool calls did not answer in time."""


@runtime_checkable
class Tool(Protocol):
    """A built-in API tool, TaskMatrix-style: a name and one text-in, text-out call.

    `run` answers `text`, the last user message. `history` holds the messages before it,
    oldest first (system, user and assistant turns); a tool reads it only to understand a
    follow-up that names no complete request of its own, and a complete request in `text`
    always wins over it. `run` is async so that tools calling out (an HTTP API) fit the
    same seam; pure computations simply do their small amount of work inline. `start`
    loads what the tool needs and `aclose` releases it; `run` must also work when `start`
    was not called.
    """

    @property
    def name(self) -> str: ...

    async def start(self) -> None: ...

    async def run(self, text: str, history: Sequence[Message] = ()) -> str: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class ProbedTool(Tool, Protocol):
    """A tool with a health of its own (one calling a service); others are always healthy."""

    async def health(self) -> Health: ...


class Deadline:
    """A cooperative time limit on a tool's work: `check()` between steps raises
    `ToolInputError` once `limit_s` has passed.

    Time is the calling thread's CPU time, so a busy machine, which slows every request
    alike, does not make an ordinary sum fail; what is bounded is the work itself. A check
    cannot interrupt one long step, so every single step must be bounded on its own (sizes,
    magnitudes); the deadline bounds how many of them run.
    """

    __slots__ = ("_clock", "_expires", "limit_s")

    def __init__(
        self, limit_s: float = DEFAULT_TIME_LIMIT_S, clock: Callable[[], float] = time.thread_time
    ) -> None:
        if not limit_s > 0:
            raise ValueError("the time limit must be positive")
        self.limit_s = limit_s
        self._clock = clock
        self._expires = clock() + limit_s

    def check(self) -> None:
        if self._clock() >= self._expires:
            raise ToolInputError(
                f"the computation takes too long (the limit is {self.limit_s * 1000:g} ms)"
            )


def check_length(text: str, tool: str) -> None:
    """Refuse messages too long to be a question for `tool`, before any parsing."""
    if len(text) > MAX_TEXT_CHARS:
        raise NothingToCompute(
            f"the message is too long for the {tool} ({len(text)} characters; "
            f"at most {MAX_TEXT_CHARS})"
        )


def earlier_turns(history: Sequence[Message], role: str) -> Iterator[str]:
    """The text of the earlier turns of `role`, most recent first.

    At most `MAX_HISTORY_TURNS` turns of that role are looked at, and turns too long to be
    a question for a tool (or a tool's answer) are skipped, so a long conversation costs
    no more than a few short messages.
    """
    seen = 0
    for message in reversed(history):
        if message.role != role:
            continue
        seen += 1
        if seen > MAX_HISTORY_TURNS:
            return
        if len(message.content) <= MAX_TEXT_CHARS:
            yield message.content
