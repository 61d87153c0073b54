"""The calculator tool: arithmetic asked in plain words ("what is 15% of 80").

`experts.tools.calc_phrases` reads the arithmetic out of the words and
`experts.tools.arithmetic` evaluates it from its AST. A short follow-up that works on the
previous answer ("times 2", "and 20%?") is read by `experts.tools.calc_followups`, with the
conversation's earlier turns; a message that holds arithmetic of its own is answered on its
own.
"""

from __future__ import annotations

from collections.abc import Sequence

from experts.base import Message
from experts.tools.arithmetic import calculate
from experts.tools.base import DEFAULT_TIME_LIMIT_S, Deadline, NothingToCompute, check_length
from experts.tools.calc_followups import Substitute, read_followup, resolve
from experts.tools.calc_phrases import EXPECTED, find_expression, rewrite
from experts.tools.formatting import format_number

__all__ = ["EXPECTED", "Calculator", "find_expression", "rewrite"]

NO_EARLIER_RESULT = (
    "found no arithmetic in the message, and no earlier result in the conversation for it "
    f"to work on; {EXPECTED}"
)


class Calculator:
    """The `calculator` tool: answers "15% of 80 = 12", then "times 2" -> "12 * 2 = 24".

    Evaluating one expression may take at most `time_limit_s` of CPU time.
    """

    def __init__(self, precision: int = 6, time_limit_s: float = DEFAULT_TIME_LIMIT_S) -> None:
        if not time_limit_s > 0:
            raise ValueError("time_limit_s must be positive")
        self._precision = precision
        self._time_limit_s = time_limit_s

    @property
    def name(self) -> str:
        return "calculator"

    async def start(self) -> None:
        return None

    async def run(self, text: str, history: Sequence[Message] = ()) -> str:
        check_length(text, "calculator")
        followup = read_followup(text)
        no_earlier_result = False
        if followup is not None:
            try:
                expression = resolve(followup, history)
                if expression is not None:
                    return self._answer(expression)
                # Only a message that is nothing but a follow-up is told so ("times 2");
                # any "it" or "that" makes a `Substitute`, and a joke about it is no sum.
                no_earlier_result = not isinstance(followup, Substitute)
            except NothingToCompute:
                pass  # the words around the earlier result are no arithmetic
        try:
            return self._answer(find_expression(text))
        except NothingToCompute as exc:
            if no_earlier_result:
                raise NothingToCompute(NO_EARLIER_RESULT) from exc
            raise

    async def aclose(self) -> None:
        return None

    def _answer(self, expression: str) -> str:
        calculation = calculate(expression, Deadline(self._time_limit_s))
        return f"{calculation.expression} = {format_number(calculation.value, self._precision)}"
