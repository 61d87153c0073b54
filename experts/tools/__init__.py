"""Built-in API tools (calculator, unit conversion), TaskMatrix-style, as experts.

`ToolExpert(spec)` is what the registry builds for `kind: tool`. Each tool implements the
small `Tool` protocol (a name and `async run(text, history=()) -> str`, where `history` is
the conversation before the last user message, read for follow-ups such as "and in
feet?"); `build_tool` picks one by the spec's `tool` name.
"""

from __future__ import annotations

from experts.tools.base import NothingToCompute, Tool, ToolError, ToolInputError
from experts.tools.calculator import Calculator
from experts.tools.expert import ToolExpert, build_tool
from experts.tools.units import UnitConverter

__all__ = [
    "Calculator",
    "NothingToCompute",
    "Tool",
    "ToolError",
    "ToolExpert",
    "ToolInputError",
    "UnitConverter",
    "build_tool",
]
