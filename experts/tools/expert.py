"""`ToolExpert`: any `Tool` behind the `Expert` protocol."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence

from experts.base import (
    Delta,
    ExpertDeclined,
    ExpertError,
    ExpertRejected,
    ExpertRequest,
    ExpertResult,
    ExpertTimeout,
    ExpertUnavailable,
    ExpertUnreachable,
    Health,
    Message,
    Usage,
    drain,
)
from experts.specs import HttpToolSpec, ToolSpec
from experts.tools.base import (
    NothingToCompute,
    ProbedTool,
    Tool,
    ToolError,
    ToolInputError,
    ToolTimeout,
    ToolUnreachable,
)

logger = logging.getLogger(__name__)


def build_tool(spec: ToolSpec | HttpToolSpec) -> Tool:
    """The tool a spec names. A new tool is one more branch here and one more `Literal`."""
    if isinstance(spec, HttpToolSpec):
        from experts.tools.http_tool import HttpTool

        return HttpTool(spec)
    if spec.tool == "calculator":
        from experts.tools.calculator import Calculator

        return Calculator(precision=spec.precision)
    if spec.tool == "units":
        from experts.tools.units import UnitConverter

        return UnitConverter(precision=spec.precision)
    raise ValueError(f"unknown tool {spec.tool!r}")  # pragma: no cover (the spec's Literal)


class ToolExpert:
    """An expert that answers with a tool, reading the last user message (`kind: tool`, and
    `kind: http` for a configured REST endpoint).

    The tool also gets the messages before that one, so that a follow-up ("and in feet?")
    can lean on them. A message the tool finds nothing in raises `ExpertDeclined` (the
    gateway may try the expert's fallbacks); one it cannot compute (division by zero, an
    unknown unit) raises `ExpertRejected` with status 400; a service the tool calls that
    fails or is slow raises `ExpertUnavailable` (`ExpertUnreachable`) or `ExpertTimeout`.
    Usage counts the whitespace-separated words of the last user message and of the answer.
    """

    def __init__(self, spec: ToolSpec | HttpToolSpec, tool: Tool | None = None) -> None:
        self._spec = spec
        self._tool = tool if tool is not None else build_tool(spec)

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def kind(self) -> str:
        return self._spec.kind

    @property
    def tool(self) -> Tool:
        return self._tool

    async def start(self) -> None:
        await self._tool.start()

    async def complete(self, request: ExpertRequest) -> ExpertResult:
        return await drain(self.stream(request))

    async def stream(self, request: ExpertRequest) -> AsyncIterator[Delta]:
        text, history = split_last_user(request.messages)
        try:
            answer = await self._tool.run(text, history)
        except ToolError as exc:
            raise self._expert_error(exc) from exc
        logger.debug("tool answered", extra={"expert": self.name, "request_id": request.request_id})
        yield Delta(content=answer)
        prompt_tokens, completion_tokens = len(text.split()), len(answer.split())
        usage = Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )
        yield Delta(finish_reason="stop", usage=usage)

    async def health(self) -> Health:
        if isinstance(self._tool, ProbedTool):
            return await self._tool.health()
        return Health(ok=True, detail=f"tool {self._tool.name}")

    async def aclose(self) -> None:
        await self._tool.aclose()

    def _expert_error(self, exc: ToolError) -> ExpertError:
        message = f"{self._tool.name}: {exc.message}"
        if isinstance(exc, NothingToCompute):
            return ExpertDeclined(self.name, message)
        if isinstance(exc, ToolInputError):
            return ExpertRejected(self.name, message, status=400)
        if isinstance(exc, ToolTimeout):
            return ExpertTimeout(self.name, message)
        if isinstance(exc, ToolUnreachable):
            return ExpertUnreachable(self.name, message)
        return ExpertUnavailable(self.name, message)  # ToolUnavailable, or any other failure


def split_last_user(messages: Sequence[Message]) -> tuple[str, tuple[Message, ...]]:
    """The last user message's text and the messages before it ("" and () without one)."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "user":
            return messages[index].content, tuple(messages[:index])
    return "", ()
