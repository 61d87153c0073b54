"""The batch decoder: continuous batching over member models, one fused token per row per step.

Reads as one line per phase (nanoGPT's `generate`, batched):

    admit waiting rows (prefill every member)  ->  combine the members' logits (Eq. 4, the
    solver)  ->  the rows' own sampling transforms  ->  argmax or sample  ->  one host copy
    of tokens and weights  ->  rows take their token, finished rows leave  ->  every member
    steps once on the new tokens.

The decoder owns all model state (the members' KV caches, the previous step's weights);
combining and transforms are pure functions of their inputs. Nothing between the forward
and the final host copy reads a device value, so a GPU step never stalls mid-way.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Protocol, TypeAlias

import torch

from experts.fusion.members import StepModel
from experts.fusion.objective import fused_logits, prepare
from experts.fusion.rows import Row
from experts.fusion.solvers import Solver
from experts.fusion.static import DynamicMembers, MemberSet
from experts.fusion.vocab import SharedVocab

logger = logging.getLogger(__name__)

Tensor = torch.Tensor
Clock: TypeAlias = Callable[[str], AbstractContextManager[None]]


def no_clock(phase: str) -> AbstractContextManager[None]:
    return nullcontext()


class PhaseClock:
    """Wall time per phase, for benchmarks (synchronises the device around each phase)."""

    def __init__(self, synchronize: Callable[[], None] | None = None) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self._synchronize = synchronize or (lambda: None)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        self._synchronize()
        started = time.perf_counter()
        try:
            yield
        finally:
            self._synchronize()
            self.seconds[phase] += time.perf_counter() - started
            self.counts[phase] += 1


class Combiner(Protocol):
    """Turns the members' logits into one row of scores each, and the weights it used."""

    @property
    def experts(self) -> int: ...

    def __call__(self, logits: Sequence[Tensor], previous: Tensor) -> tuple[Tensor, Tensor]: ...


class FusionCombiner:
    """Members in the order large, small base, experts: Eq. 4 with the solver's weights."""

    def __init__(self, solver: Solver, vocab: SharedVocab, experts: int, clock: Clock = no_clock):
        if experts < 1:
            raise ValueError("fusion needs at least one expert")
        self.solver, self.vocab, self._experts, self._clock = solver, vocab, experts, clock

    @property
    def experts(self) -> int:
        return self._experts

    def __call__(self, logits: Sequence[Tensor], previous: Tensor) -> tuple[Tensor, Tensor]:
        size, mask = self.vocab.size, self.vocab.mask
        if mask is not None and mask.device != logits[0].device:
            mask = mask.to(logits[0].device)  # once per step; build the vocab on the device
        large, small, *experts = (member[:, :size] for member in logits)
        problem = prepare(large, small, torch.stack(experts, dim=1), mask)
        with self._clock("solve"):
            alpha = self.solver(problem, previous)
        return fused_logits(problem, alpha), alpha


class PlainCombiner:
    """One member decoded alone (the baseline): its logits as they are, no weights."""

    experts = 0

    def __call__(self, logits: Sequence[Tensor], previous: Tensor) -> tuple[Tensor, Tensor]:
        scores = logits[0].float()
        return scores, scores.new_zeros((scores.shape[0], 0))


class BatchDecoder:
    """Decodes every submitted row together; rows join and leave between steps.

    `members`: the models as `StepModel`s (stepped one after the other, eagerly), or a
    `MemberSet` such as `StaticMembers` (static caches and CUDA graphs). Runs on one
    thread: `serve` (a worker thread until `stopping` is set) or `run_until_idle` (tests,
    benchmarks). `submit` may be called from any thread.
    """

    def __init__(
        self,
        members: Sequence[StepModel] | MemberSet,
        combiner: Combiner,
        *,
        max_batch: int = 16,
        clock: Clock = no_clock,
    ) -> None:
        self._members = DynamicMembers(members) if isinstance(members, Sequence) else members
        self._combiner = combiner
        self._max_batch, self._clock = max_batch, clock
        self._waiting: queue.Queue[Row | None] = queue.Queue()
        self._rows: list[Row] = []
        self._previous: Tensor | None = None  # last step's weights, [B, T]

    @property
    def active(self) -> int:
        return len(self._rows)

    def submit(self, row: Row) -> None:
        self._waiting.put(row)

    def wake(self) -> None:
        self._waiting.put(None)

    def serve(self, stopping: threading.Event) -> None:
        """Decode until `stopping` is set; then fail whatever is left as closed."""
        while not stopping.is_set():
            self.iterate(wait_s=0.0 if self._rows else 0.5)
        self.close()

    def run_until_idle(self) -> None:
        while self._rows or not self._waiting.empty():
            self.iterate()

    def close(self) -> None:
        for row in self._rows:
            row.fail(None)
        while not self._waiting.empty():
            waiting = self._waiting.get_nowait()
            if waiting is not None:
                waiting.fail(None)
        self._reset()

    def iterate(self, wait_s: float = 0.0) -> None:
        """One step of every row (admitting waiting rows first)."""
        try:
            with torch.inference_mode():
                self._admit(wait_s)
                self._retire([not row.cancel.is_set() for row in self._rows])
                if self._rows:
                    self._step()
        except Exception as exc:  # a failed step fails every row; the decoder carries on
            logger.exception("fusion step failed", extra={"action": "decode"})
            for row in self._rows:
                row.fail(exc)
            self._reset()

    # -- the step --------------------------------------------------------------------------

    def _step(self) -> None:
        with self._clock("combine"):
            scores, alpha = self._members.combine(self._combiner, self._current_previous())
        with self._clock("sample"):
            tokens = self._choose(scores)
        with self._clock("host"):
            values = torch.cat([tokens[:, None].to(alpha.dtype), alpha], dim=1).tolist()
            self._previous = alpha
            keep = [
                not row.advance(int(v[0]), v[1:]) for row, v in zip(self._rows, values, strict=True)
            ]
            tokens = self._retire(keep, tokens)
        if self._rows:
            with self._clock("forward"):
                self._members.forward(tokens)

    def _choose(self, scores: Tensor) -> Tensor:
        """Each row's own transforms (repetition penalty, temperature, top-k/p), then pick."""
        if any(row.plan.transforms for row in self._rows):
            scores = torch.cat(
                [row.transform(scores[i : i + 1]) for i, row in enumerate(self._rows)]
            )
        tokens = scores.argmax(dim=-1)
        for i, row in enumerate(self._rows):
            if not row.plan.greedy:
                probs = torch.softmax(scores[i], dim=-1)
                tokens[i] = torch.multinomial(probs, 1, generator=row.generator)[0]
            row.extend(tokens[i : i + 1])
        return tokens

    def _admit(self, wait_s: float) -> None:
        while len(self._rows) < self._max_batch:
            try:
                row = self._waiting.get(timeout=wait_s) if wait_s else self._waiting.get_nowait()
            except queue.Empty:
                return
            wait_s = 0.0
            if row is None or row.cancel.is_set():
                continue
            self._rows.append(row)  # a failure below fails it with the others
            with self._clock("prefill"):
                self._members.admit(row.plan.prompt_ids)
            if self._previous is not None:
                zeros = self._previous.new_zeros((1, self._previous.shape[1]))
                self._previous = torch.cat([self._previous, zeros])

    def _retire(self, keep: list[bool], tokens: Tensor | None = None) -> Tensor:
        """Drop the rows not kept from the batch and every member; the kept rows' tokens."""
        empty = torch.empty(0, dtype=torch.long)
        if all(keep):
            return tokens if tokens is not None else empty
        kept = [i for i, flag in enumerate(keep) if flag]
        self._rows = [self._rows[i] for i in kept]
        self._members.keep(kept)
        if not kept:
            self._reset()
            return empty
        index = torch.tensor(kept, dtype=torch.long, device=self._members.device)
        if self._previous is not None:
            self._previous = self._previous.index_select(0, index)
        return tokens.index_select(0, index) if tokens is not None else empty

    def _current_previous(self) -> Tensor:
        rows = len(self._rows)
        if self._previous is None or self._previous.shape[0] != rows:
            device = self._members.device
            self._previous = torch.zeros((rows, self._combiner.experts), device=device)
        return self._previous

    def _reset(self) -> None:
        self._rows, self._previous = [], None
        self._members.reset()
