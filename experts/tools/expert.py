"""`ToolExpert`: any `Tool` behind the `Expert` protocol."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from experts.base import (
    Delta,
    ExpertDeclined,
    ExpertRejected,
    ExpertRequest,
    ExpertResult,
    Health,
    Usage,
    drain,
)
from experts.specs import ToolSpec
from experts.tools.base import NothingToCompute, Tool, ToolInputError

logger = logging.getLogger(__name__)


def build_tool(spec: ToolSpec) -> Tool:
    """The tool a spec names. A new tool is one more branch here and one more `Literal`."""
    if spec.tool == "calculator":
        from experts.tools.calculator import Calculator

        return Calculator(precision=spec.precision)
    if spec.tool == "units":
        from experts.tools.units import UnitConverter

        return UnitConverter(precision=spec.precision)
    raise ValueError(f"unknown tool {spec.tool!r}")  # pragma: no cover (the spec's Literal)


class ToolExpert:
    """An expert that answers with a built-in tool, reading the last user message.

    A message the tool finds nothing in raises `ExpertDeclined` (the gateway may try the
    expert's fallbacks); one it cannot compute (division by zero, an unknown unit) raises
    `ExpertRejected` with status 400. Usage counts whitespace-separated words.
    """

    def __init__(self, spec: ToolSpec, tool: Tool | None = None) -> None:
        self._spec = spec
        self._tool = tool if tool is not None else build_tool(spec)

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def kind(self) -> str:
        return "tool"

    @property
    def tool(self) -> Tool:
        return self._tool

    async def start(self) -> None:
        await self._tool.start()

    async def complete(self, request: ExpertRequest) -> ExpertResult:
        return await drain(self.stream(request))

    async def stream(self, request: ExpertRequest) -> AsyncIterator[Delta]:
        text = request.last_user_text()
        try:
            answer = await self._tool.run(text)
        except NothingToCompute as exc:
            raise ExpertDeclined(self.name, f"{self._tool.name}: {exc.message}") from exc
        except ToolInputError as exc:
            raise ExpertRejected(
                self.name, f"{self._tool.name}: {exc.message}", status=400
            ) from exc
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
        return Health(ok=True, detail=f"tool {self._tool.name}")

    async def aclose(self) -> None:
        await self._tool.aclose()
