"""Tools, TaskMatrix-style, as experts: built-in ones (calculator, unit conversion) and
configured REST endpoints (`kind: http`).

`ToolExpert(spec)` is what the registry builds for `kind: tool` and `kind: http`. Each tool
implements the small `Tool` protocol (a name and `async run(text, history=()) -> str`, where
`history` is the conversation before the last user message, read for follow-ups such as
"and in feet?"); `build_tool` picks one by the spec. The `http` tool
(`experts.tools.http_tool`) is imported only when a spec asks for it.
"""

from __future__ import annotations

from experts.tools.base import (
    NothingToCompute,
    ProbedTool,
    Tool,
    ToolError,
    ToolInputError,
    ToolTimeout,
    ToolUnavailable,
    ToolUnreachable,
)
from experts.tools.calculator import Calculator
from experts.tools.expert import ToolExpert, build_tool
from experts.tools.units import UnitConverter

__all__ = [
    "Calculator",
    "NothingToCompute",
    "ProbedTool",
    "Tool",
    "ToolError",
    "ToolExpert",
    "ToolInputError",
    "ToolTimeout",
    "ToolUnavailable",
    "ToolUnreachable",
    "UnitConverter",
    "build_tool",
]
