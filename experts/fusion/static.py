"""Member sets: the decoder's view of all its models at once, and the fast one for GPUs.

`DynamicMembers` runs each `StepModel` as it is (transformers `DynamicCache`, eager): the
path on CPU and the reference. `StaticMembers` keeps every member's KV cache in buffers
allocated once, `[max_rows, kv_heads, max_len, head_dim]` per layer, so one step has the
same shapes and addresses every time, and on CUDA replays it as a CUDA graph: one launch
for every member's forward, one for the combiner, instead of thousands of kernel launches.

Layout: rows occupy slots 0..rows-1 and share one write column; a row's tokens sit
left-padded just before it, a boolean mask `[max_rows, max_len]` says which columns each
row attends to, and positions are explicit per row. A step writes every member's keys and
values at the column and attends over the first `width` columns, `width` the smallest of a
few buckets (powers of two from 64) that holds them; the batch is padded to a bucket
(powers of two) with idle slots, whose results nobody reads. Graphs are captured lazily,
one per (batch, width) for the forward and one per batch for the combiner; a shape that
cannot be captured runs eagerly from then on (logged once). Rows join by a prefill of
their own (eager, any length) copied into their slot; rows leaving compact the slots, and
columns no row uses any more are dropped from the front.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

import torch
from transformers import DynamicCache

from experts.fusion.members import (
    CausalLMMember,
    StepModel,
    cache_keyword,
    cache_pairs,
    leading_padding,
)

logger = logging.getLogger(__name__)

Tensor = torch.Tensor
MIN_WIDTH = 64


class Combine(Protocol):
    def __call__(self, logits: Sequence[Tensor], previous: Tensor) -> tuple[Tensor, Tensor]: ...


class MemberSet(Protocol):
    """Every member of a decode, stepped together; logits stay on the device."""

    @property
    def rows(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    def admit(self, token_ids: Sequence[int]) -> None:
        """Append one row: prefill every member on `token_ids`."""
        ...

    def forward(self, tokens: Tensor) -> None:
        """One token per row ([rows], on the device) through every member."""
        ...

    def combine(self, combine: Combine, previous: Tensor) -> tuple[Tensor, Tensor]:
        """`combine` applied to the members' latest logits (each [rows, V])."""
        ...

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only these rows, in this order."""
        ...

    def reset(self) -> None: ...


class DynamicMembers:
    """Each member with its own dynamic cache, called one after the other (eager)."""

    def __init__(self, members: Sequence[StepModel]):
        self._members = list(members)
        self._logits: list[Tensor] = []

    @classmethod
    def of(cls, modules: Sequence[torch.nn.Module]) -> DynamicMembers:
        """Transformers causal LMs, each as a `CausalLMMember`."""
        return cls([CausalLMMember(module) for module in modules])

    @property
    def rows(self) -> int:
        return int(self._logits[0].shape[0]) if self._logits else 0

    @property
    def device(self) -> torch.device:
        return self._logits[0].device if self._logits else torch.device("cpu")

    def admit(self, token_ids: Sequence[int]) -> None:
        fresh = [member.prefill(token_ids) for member in self._members]
        if self._logits:
            fresh = [torch.cat([old, new]) for old, new in zip(self._logits, fresh, strict=True)]
        self._logits = fresh

    def forward(self, tokens: Tensor) -> None:
        self._logits = [member.step(tokens) for member in self._members]

    def combine(self, combine: Combine, previous: Tensor) -> tuple[Tensor, Tensor]:
        return combine(self._logits, previous)

    def keep(self, rows: Sequence[int]) -> None:
        for member in self._members:
            member.keep(rows)
        if not rows:
            self._logits = []
            return
        index = torch.tensor(list(rows), dtype=torch.long, device=self._logits[0].device)
        self._logits = [logits.index_select(0, index) for logits in self._logits]

    def reset(self) -> None:
        self._logits = []
        for member in self._members:
            member.reset()


def first_steps(members: MemberSet, combine: Combine, experts: int, steps: int = 2) -> None:
    """Decode one short row for a few steps and drop it: a start-up check that a member
    set works with these models (and, on CUDA, its first graphs get captured)."""
    members.admit((1, 2, 3))
    previous = torch.zeros((1, experts), device=members.device)
    try:
        for _ in range(steps):
            scores, previous = members.combine(combine, previous)
            members.forward(scores.argmax(dim=-1))
    finally:
        members.reset()


class SlotCache:
    """What a transformers attention layer asks of its cache (`update`), over static
    buffers: it writes the step's keys and values at the shared column of the first `rows`
    slots and returns their first `width` columns. Positions and the 4D mask come from
    the caller, so nothing else of the cache is read."""

    is_compileable = True

    def __init__(
        self, keys: list[Tensor], values: list[Tensor], column: Tensor, rows: int, width: int
    ) -> None:
        self._keys, self._values, self._column = keys, values, column
        self._rows, self._width = rows, width

    def update(
        self, key_states: Tensor, value_states: Tensor, layer_idx: int, *args: object, **kw: object
    ) -> tuple[Tensor, Tensor]:
        keys = self._keys[layer_idx][: self._rows]
        values = self._values[layer_idx][: self._rows]
        keys.index_copy_(2, self._column, key_states.to(keys.dtype))
        values.index_copy_(2, self._column, value_states.to(values.dtype))
        return keys[:, :, : self._width], values[:, :, : self._width]

    def get_seq_length(self, *args: object, **kw: object) -> int:
        return 0  # positions are always given explicitly


@dataclass(slots=True)
class _Buffers:
    """One member's static state."""

    keys: list[Tensor]  # per layer [max_rows, kv_heads, max_len, head_dim]
    values: list[Tensor]
    logits: Tensor  # [max_rows, V], the latest next-token logits of every slot


Replay = Callable[[], None]
Capture = Callable[[Callable[[], object]], tuple[Replay, object]]


def cuda_capture(body: Callable[[], object]) -> tuple[Replay, object]:
    """Capture `body` as a CUDA graph: (replay, body's outputs, which each replay rewrites).

    `body` runs once on a side stream first (allocator and library warm-up); the caller
    restores any state that run changed. Each graph has its own memory pool, so one
    graph's outputs outlive the replay of another; capture errors are thread-local, so
    other threads may use the GPU meanwhile.
    """
    stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        body()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        outputs = body()
    return graph.replay, outputs


class StaticMembers:
    """Members on static KV caches, stepped as CUDA graphs where possible (see the module
    docstring). `graphs`: None captures on CUDA only; True needs CUDA (or a `capture`).
    `compile_combiner`: with graphs, the combiner is compiled (torch.compile, one compile
    per batch bucket, at its first step) before it is captured."""

    def __init__(
        self,
        modules: Sequence[torch.nn.Module],
        *,
        max_rows: int,
        max_len: int,
        graphs: bool | None = None,
        capture: Capture | None = None,
        compile_combiner: bool = False,
    ) -> None:
        if max_rows < 1 or max_len < 2:
            raise ValueError("max_rows must be >= 1 and max_len >= 2")
        self._modules = list(modules)
        self._device = next(self._modules[0].parameters()).device
        cuda = self._device.type == "cuda"
        if graphs and not cuda and capture is None:
            raise ValueError("CUDA graphs need a CUDA device")
        self._graphs = cuda if graphs is None else graphs
        self._capture = capture
        self._compile = compile_combiner
        self._compiled: dict[int, Combine] = {}  # by id of the combiner compiled
        self._max_rows, self._max_len = max_rows, max_len
        self._batches = _buckets(1, max_rows)
        self._widths = _buckets(min(MIN_WIDTH, max_len), max_len)
        device = self._device
        self._mask = torch.zeros((max_rows, max_len), dtype=torch.bool, device=device)
        self._positions = torch.zeros(max_rows, dtype=torch.long, device=device)
        self._ids = torch.zeros(max_rows, dtype=torch.long, device=device)
        self._column_at = torch.zeros(1, dtype=torch.long, device=device)
        self._previous: Tensor | None = None
        self._column = 0  # the host's copy of `_column_at`
        self._rows = 0
        self._buffers: list[_Buffers | None] = [None] * len(self._modules)
        self._cache_keywords = [cache_keyword(module) for module in self._modules]
        self._replays: dict[tuple[str, int, int], tuple[Replay, object] | None] = {}

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def graphs(self) -> bool:
        return self._graphs

    @property
    def captured(self) -> int:
        """Graphs captured so far (shapes that failed to capture not counted)."""
        return sum(entry is not None for entry in self._replays.values())

    # -- rows joining and leaving ---------------------------------------------------------

    def admit(self, token_ids: Sequence[int]) -> None:
        length = len(token_ids)
        if length == 0:
            raise ValueError("a row needs at least one token")
        if self._rows >= self._max_rows:
            raise RuntimeError(f"all {self._max_rows} rows are in use")
        if length >= self._max_len:
            raise ValueError(
                f"the prompt has {length} tokens; the static cache holds {self._max_len - 1}"
            )
        ids = torch.tensor([list(token_ids)], dtype=torch.long, device=self._device)
        filled = [self._prefill(index, ids) for index in range(len(self._modules))]
        if self._column < length:
            self._shift(length - self._column)
        row, start = self._rows, self._column - length
        for buffers, (pairs, logits) in zip(self._slots(filled), filled, strict=True):
            for layer, (keys, values) in enumerate(pairs):
                buffers.keys[layer][row, :, start : self._column].copy_(keys[0])
                buffers.values[layer][row, :, start : self._column].copy_(values[0])
            buffers.logits[row].copy_(logits[0])
        self._mask[row].zero_()
        self._mask[row, start : self._column] = True
        self._positions[row] = length
        self._rows += 1

    def keep(self, rows: Sequence[int]) -> None:
        if not rows:
            self.reset()
            return
        if list(rows) == list(range(self._rows)):
            return
        index = torch.tensor(list(rows), dtype=torch.long, device=self._device)
        count = len(rows)
        for buffers in self._live():
            for tensor in (*buffers.keys, *buffers.values, buffers.logits):
                tensor[:count].copy_(tensor.index_select(0, index))
        for tensor in (self._mask, self._positions):
            tensor[:count].copy_(tensor.index_select(0, index))
        self._rows = count
        first = leading_padding(self._mask[:count, : self._column])
        if first:
            self._shift(-first)

    def reset(self) -> None:
        self._rows, self._column = 0, 0
        self._column_at.zero_()
        self._mask.zero_()

    # -- the step ------------------------------------------------------------------------

    def forward(self, tokens: Tensor) -> None:
        if self._rows == 0:
            raise RuntimeError("forward() before any admit()")
        if self._column >= self._max_len:
            raise RuntimeError(f"a row outgrew the static cache ({self._max_len} tokens)")
        self._ids[: self._rows].copy_(tokens)
        batch = _bucket(self._rows, self._batches)
        width = _bucket(self._column + 1, self._widths)
        self._run(("forward", batch, width), lambda: self._forward(batch, width))
        self._column += 1

    def combine(self, combine: Combine, previous: Tensor) -> tuple[Tensor, Tensor]:
        rows = self._rows
        if not self._graphs:
            return combine([b.logits[:rows] for b in self._live()], previous)
        if self._compile:
            combine = self._compiled_form(combine, previous)
        if self._previous is None or self._previous.shape[1] != previous.shape[1]:
            self._previous = previous.new_zeros((self._max_rows, previous.shape[1]))
        self._previous[:rows].copy_(previous)
        batch = _bucket(rows, self._batches)
        stored = self._previous

        def body() -> tuple[Tensor, Tensor]:
            return combine([b.logits[:batch] for b in self._live()], stored[:batch])

        key = ("combine", batch, id(combine))  # a graph records one combiner
        scores, alpha = cast(tuple[Tensor, Tensor], self._run(key, body))
        return scores[:rows], alpha[:rows]

    def _compiled_form(self, combine: Combine, previous: Tensor) -> Combine:
        """`combine` through torch.compile, which fuses its chains of small element-wise
        kernels (hundreds a step for the bracketed solver). One eager call first: it makes
        the solver's device constants, which compiling must find already there."""
        key = id(combine)
        if key not in self._compiled:
            combine([b.logits[: self._rows] for b in self._live()], previous)
            self._compiled[key] = cast(Combine, torch.compile(combine, dynamic=False))
        return self._compiled[key]

    def _forward(self, batch: int, width: int) -> None:
        """Every member one step on `_ids`: the body a graph records. Idle slots compute
        too (they attend to the column just written, so nothing is ever fully masked)."""
        mask = self._mask[:batch]
        mask.index_fill_(1, self._column_at, True)
        visible = mask[:, None, None, :width]
        positions = self._positions[:batch, None]
        additive: dict[torch.dtype, Tensor] = {}  # 0 or the dtype's lowest, per member dtype
        ids = self._ids[:batch, None]
        for index, module in enumerate(self._modules):
            buffers = self._buffers[index]
            assert buffers is not None
            cache = SlotCache(buffers.keys, buffers.values, self._column_at, batch, width)
            dtype = buffers.keys[0].dtype
            if dtype not in additive:
                low = torch.finfo(dtype).min
                additive[dtype] = torch.zeros(visible.shape, dtype=dtype, device=self._device)
                additive[dtype].masked_fill_(~visible, low)
            options = {self._cache_keywords[index]: cache, "use_cache": True}
            output = module(
                input_ids=ids, attention_mask=additive[dtype], position_ids=positions, **options
            )
            buffers.logits[:batch].copy_(output.logits[:, -1, :])
        self._positions[:batch].add_(1).clamp_(max=self._max_len - 1)
        self._column_at.add_(1)

    def _run(self, key: tuple[str, int, int], body: Callable[[], object]) -> object:
        """`body` as a graph replay when possible, else eagerly; returns its outputs."""
        if not self._graphs:
            return body()
        if key not in self._replays:
            self._replays[key] = self._try_capture(key, body)
        entry = self._replays[key]
        if entry is None:
            return body()
        replay, outputs = entry
        replay()
        return outputs

    def _try_capture(
        self, key: tuple[str, int, int], body: Callable[[], object]
    ) -> tuple[Replay, object] | None:
        saved = (self._positions.clone(), self._column_at.clone())
        try:
            entry = (self._capture or cuda_capture)(body)
        except Exception as exc:  # a shape or op that cannot be captured: eager from now on
            logger.warning(
                "fusion step runs eagerly: CUDA graph capture failed",
                extra={"action": "capture", "detail": f"{key}: {exc}"},
            )
            entry = None
        finally:
            if self._device.type == "cuda":
                torch.cuda.synchronize(self._device)
            self._positions.copy_(saved[0])
            self._column_at.copy_(saved[1])
        return entry

    # -- internals -----------------------------------------------------------------------

    def _prefill(self, index: int, ids: Tensor) -> tuple[list[tuple[Tensor, Tensor]], Tensor]:
        module = self._modules[index]
        cache = DynamicCache(config=getattr(module, "config", None))
        options = {self._cache_keywords[index]: cache, "use_cache": True}
        output = module(input_ids=ids, **options)
        return cache_pairs(cache), output.logits[:, -1, :]

    def _slots(self, filled: list[tuple[list[tuple[Tensor, Tensor]], Tensor]]) -> list[_Buffers]:
        """Every member's buffers, allocated at the first row from its shapes."""
        for index, (pairs, logits) in enumerate(filled):
            if self._buffers[index] is None:
                self._buffers[index] = self._allocate(pairs, logits)
        return self._live()

    def _allocate(self, pairs: list[tuple[Tensor, Tensor]], logits: Tensor) -> _Buffers:
        def like(states: Tensor) -> Tensor:
            heads, dim = states.shape[1], states.shape[3]
            shape = (self._max_rows, heads, self._max_len, dim)
            return torch.zeros(shape, dtype=states.dtype, device=self._device)

        rows = logits.new_zeros((self._max_rows, logits.shape[-1]))
        return _Buffers([like(k) for k, _ in pairs], [like(v) for _, v in pairs], rows)

    def _live(self) -> list[_Buffers]:
        live = [b for b in self._buffers if b is not None]
        if len(live) != len(self._buffers):
            raise RuntimeError("no row was admitted yet")
        return live

    def _shift(self, by: int) -> None:
        """Move every live row's columns by `by` (right when positive, left when negative)."""
        rows, column = self._rows, self._column
        source = slice(max(0, -by), column)
        target = slice(max(0, by), column + by)
        for buffers in self._live() if rows else []:
            for tensor in (*buffers.keys, *buffers.values):
                tensor[:rows, :, target] = tensor[:rows, :, source].clone()
        moved = self._mask[:rows, source].clone()
        self._mask[:rows].zero_()
        self._mask[:rows, target] = moved
        self._column = column + by
        self._column_at.fill_(self._column)


def _buckets(low: int, high: int) -> tuple[int, ...]:
    sizes, size = [], low
    while size < high:
        sizes.append(size)
        size *= 2
    return (*sizes, high)


def _bucket(size: int, buckets: Sequence[int]) -> int:
    return next(b for b in buckets if b >= size)
