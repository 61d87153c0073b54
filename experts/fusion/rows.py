"""One request's row in the batch: its plan, its stop criteria, its events, its weights.

The decoder owns rows and calls them from its thread; a row reports to its consumer only
through `sink` (text as it becomes safe to send, then one final event).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import torch

from experts.decoding import IncrementalText, StopScanner
from experts.prompting import PromptPlan

# One request, templated, truncated, tokenized and ready to decode.
RowPlan: TypeAlias = PromptPlan


@dataclass(slots=True)
class AlphaTally:
    """The weights a row used, step by step: their sum per expert and who was active."""

    experts: int
    steps: int = 0
    total: float = 0.0  # sum over steps of sum_t a_t
    per_expert: list[float] = field(default_factory=list)
    active: list[int] = field(default_factory=list)  # steps with a_t > 0, per expert
    inactive: int = 0  # steps with every a_t == 0

    def __post_init__(self) -> None:
        self.per_expert = [0.0] * self.experts
        self.active = [0] * self.experts

    def add(self, alphas: Sequence[float]) -> None:
        self.steps += 1
        self.total += sum(alphas)
        for index, value in enumerate(alphas):
            self.per_expert[index] += value
            self.active[index] += value > 0
        self.inactive += all(value == 0 for value in alphas)

    @property
    def mean(self) -> float:
        return self.total / self.steps if self.steps else 0.0


@dataclass(frozen=True, slots=True)
class TextEvent:
    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    reason: str  # "stop" or "length"
    text: str
    completion_tokens: int
    tally: AlphaTally


@dataclass(frozen=True, slots=True)
class Failed:
    error: Exception | None  # None: the decoder was closed


Event: TypeAlias = TextEvent | Finished | Failed
EventSink: TypeAlias = Callable[[Event], None]
Detokenizer: TypeAlias = Callable[[list[int]], str]


class Row:
    """A request being decoded. `cancel` (set by the consumer) makes the decoder drop it."""

    def __init__(
        self,
        plan: RowPlan,
        sink: EventSink,
        *,
        detokenize: Detokenizer,
        eos_ids: frozenset[int],
        experts: int,
        device: torch.device,
    ) -> None:
        self.plan = plan
        self.cancel = threading.Event()
        self.ids = list(plan.prompt_ids)
        self.generated: list[int] = []
        self.tally = AlphaTally(experts)
        self._sink, self._eos = sink, eos_ids
        self._scanner, self._text = StopScanner(plan.stop), IncrementalText(detokenize)
        self._device = device
        self._history: torch.Tensor | None = None  # on the device, only when transforms need it
        self.generator = torch.Generator(device=device)
        if plan.seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(plan.seed)

    def transform(self, scores: torch.Tensor) -> torch.Tensor:
        """The request's sampling transforms on its own scores, [1, V]."""
        if not self.plan.transforms:
            return scores
        if self._history is None:
            self._history = torch.tensor([self.ids], dtype=torch.long, device=self._device)
        for step in self.plan.transforms:
            scores = step(self._history, scores)
        return scores

    def extend(self, token: torch.Tensor) -> None:
        """Append the step's token ([1], on the device) to the history the transforms see."""
        if self._history is not None:
            self._history = torch.cat([self._history, token[None]], dim=1)

    def advance(self, token: int, alphas: Sequence[float]) -> bool:
        """Take the step's token; report text or the end. True when the row is finished."""
        self.tally.add(alphas)
        if token in self._eos:
            return self._finish("stop", self._scanner.rest(self._text.text))
        self.ids.append(token)
        self.generated.append(token)
        piece, stopped = self._scanner.feed(self._text.add(token))
        if stopped:
            return self._finish("stop", piece)
        if piece:
            self._sink(TextEvent(piece))
        if len(self.generated) >= self.plan.max_new_tokens:
            return self._finish("length", self._scanner.rest(self._text.text))
        return False

    def fail(self, error: Exception | None) -> None:
        self._sink(Failed(error))

    def _finish(self, reason: str, text: str) -> bool:
        self._sink(Finished(reason, text, len(self.generated), self.tally))
        return True
