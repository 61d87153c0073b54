"""Driving the batch decoder in tests: traced rows, and members that misbehave on purpose.

`Shifted` and `Exploding` implement our own `StepModel` protocol around a real member.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from experts.fusion.decoder import BatchDecoder, FusionCombiner, PlainCombiner
from experts.fusion.members import CausalLMMember, StepModel
from experts.fusion.rows import Event, Finished, Row, RowPlan, TextEvent
from experts.fusion.solvers import Solver
from experts.fusion.static import StaticMembers
from experts.fusion.vocab import SharedVocab
from tests.experts.fusion.references import greedy_without_cache, last_logits
from tests.experts.fusion.tiny import byte_tokenizer

TOKENIZER = byte_tokenizer()
VOCAB = len(TOKENIZER)
STATIC_LEN = 256  # tokens a row may hold on the static engine in tests
PROMPTS = [
    TOKENIZER.encode("hello there", add_special_tokens=False),
    TOKENIZER.encode("a", add_special_tokens=False),
    TOKENIZER.encode("the quick brown fox jumps", add_special_tokens=False),
]


class TracedRow(Row):
    """A row that remembers each step's token and weights, and its events."""

    def __init__(self, plan: RowPlan, eos: frozenset[int] = frozenset(), experts: int = 1) -> None:
        self.events: list[Event] = []
        self.trace: list[tuple[int, list[float]]] = []
        detokenize = lambda ids: TOKENIZER.decode(ids, skip_special_tokens=True)  # noqa: E731
        super().__init__(
            plan,
            self.events.append,
            detokenize=detokenize,
            eos_ids=eos,
            experts=experts,
            device=torch.device("cpu"),
        )

    def advance(self, token: int, alphas: Sequence[float]) -> bool:
        self.trace.append((token, list(alphas)))
        return super().advance(token, alphas)

    @property
    def tokens(self) -> list[int]:
        return [token for token, _ in self.trace]

    @property
    def alphas(self) -> list[list[float]]:
        return [alpha for _, alpha in self.trace]

    @property
    def final(self) -> Event:
        return self.events[-1]

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.events if isinstance(e, TextEvent | Finished))


# The engine of decoders built from plain modules: "dynamic" (`CausalLMMember`s) or
# "static" (`StaticMembers`: static caches, CUDA graphs on a GPU). The `engine` fixture
# (conftest.py) runs the property tests on both.
ENGINE = "dynamic"


def member_set(
    models: Sequence[torch.nn.Module | StepModel], max_rows: int, engine: str = ENGINE
) -> Sequence[StepModel] | StaticMembers:
    if engine == "static" and all(isinstance(m, torch.nn.Module) for m in models):
        modules = [m for m in models if isinstance(m, torch.nn.Module)]
        return StaticMembers(modules, max_rows=max_rows, max_len=STATIC_LEN)
    return [CausalLMMember(m) if isinstance(m, torch.nn.Module) else m for m in models]


def decoder_for(
    models: Sequence[torch.nn.Module | StepModel], solver: Solver | None, **options: object
) -> BatchDecoder:
    max_rows = options.get("max_batch", 16)
    assert isinstance(max_rows, int)
    members = member_set(models, max_rows, str(options.pop("engine", ENGINE)))
    if solver is None:
        return BatchDecoder(members, PlainCombiner(), **options)  # type: ignore[arg-type]
    combiner = FusionCombiner(solver, SharedVocab(VOCAB, None, ""), experts=len(models) - 2)
    return BatchDecoder(members, combiner, **options)  # type: ignore[arg-type]


def decode(
    models: Sequence[torch.nn.Module | StepModel],
    solver: Solver | None,
    plans: Sequence[RowPlan],
    **options: object,
) -> list[TracedRow]:
    decoder = decoder_for(models, solver, **options)
    experts = max(len(models) - 2, 1)
    rows = [TracedRow(plan, experts=experts) for plan in plans]
    for row in rows:
        decoder.submit(row)
    decoder.run_until_idle()
    return rows


def plans(steps: int = 12) -> list[RowPlan]:
    return [RowPlan(tuple(prompt), steps) for prompt in PROMPTS]


def alone(model: torch.nn.Module, prompt: Sequence[int], steps: int) -> list[int]:
    return greedy_without_cache([last_logits(model)], None, prompt, steps)[0]


class Shifted:
    """A member whose logits get a random constant added per row at every step."""

    def __init__(self, inner: StepModel, seed: int) -> None:
        self._inner, self._generator = inner, torch.Generator().manual_seed(seed)

    @property
    def rows(self) -> int:
        return self._inner.rows

    def _shift(self, logits: torch.Tensor) -> torch.Tensor:
        return logits + 30.0 * torch.randn(logits.shape[0], 1, generator=self._generator)

    def prefill(self, token_ids: Sequence[int]) -> torch.Tensor:
        return self._shift(self._inner.prefill(token_ids))

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._shift(self._inner.step(tokens))

    def keep(self, rows: Sequence[int]) -> None:
        self._inner.keep(rows)

    def reset(self) -> None:
        self._inner.reset()


class Exploding:
    """A member that fails on its third step."""

    def __init__(self, inner: StepModel) -> None:
        self._inner, self._steps = inner, 0

    @property
    def rows(self) -> int:
        return self._inner.rows

    def prefill(self, token_ids: Sequence[int]) -> torch.Tensor:
        return self._inner.prefill(token_ids)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self._steps += 1
        if self._steps == 3:
            raise RuntimeError("device lost")
        return self._inner.step(tokens)

    def keep(self, rows: Sequence[int]) -> None:
        self._inner.keep(rows)

    def reset(self) -> None:
        self._inner.reset()
