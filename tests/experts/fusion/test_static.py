"""The static engine (`StaticMembers`) against the dynamic one, on CPU.

The property suites (test_decoder.py, test_lifecycle.py) run on both engines through the
`engine` fixture (conftest.py); these tests aim at what only the static engine does:
slots, the shared column, width buckets, compaction, capture fallback. On a GPU,
`benchmarks/fusion_bench.py --check` compares graph replays with eager steps.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import pytest
import torch
from transformers import LlamaForCausalLM

from experts.fusion.decoder import BatchDecoder, FusionCombiner
from experts.fusion.rows import RowPlan
from experts.fusion.solvers import BracketedSolver
from experts.fusion.static import MIN_WIDTH, Replay, StaticMembers
from experts.fusion.vocab import SharedVocab
from tests.experts.fusion.harness import PROMPTS, VOCAB, TracedRow, decode, decoder_for

LONG = tuple(range(40, 40 + 90))  # 90 byte tokens: longer than anything already decoding


def staggered(
    models: Sequence[LlamaForCausalLM], engine: str, **options: object
) -> list[TracedRow]:
    """Rows join mid-way (one with a prompt longer than the shared column, so the slots
    shift right), leave at their own lengths (the slots compact), and decode past the
    first width bucket."""
    decoder = decoder_for(models, BracketedSolver(), engine=engine, **options)
    lengths = [MIN_WIDTH + 20, 5, 30]
    rows = [TracedRow(RowPlan(tuple(p), n)) for p, n in zip(PROMPTS, lengths, strict=True)]
    late = TracedRow(RowPlan(LONG, 12))
    decoder.submit(rows[0])
    decoder.submit(rows[1])
    for _ in range(8):
        decoder.iterate()
    decoder.submit(late)
    decoder.submit(rows[2])
    decoder.run_until_idle()
    return [*rows, late]


def test_static_engine_decodes_like_the_dynamic_one(
    a: LlamaForCausalLM, b: LlamaForCausalLM, c: LlamaForCausalLM
) -> None:
    dynamic = staggered([c, a, b], "dynamic")
    static = staggered([c, a, b], "static")
    for one, other in zip(dynamic, static, strict=True):
        assert one.tokens == other.tokens and len(one.tokens) == one.plan.max_new_tokens
        for x, y in zip(one.alphas, other.alphas, strict=True):
            assert y == pytest.approx(x, abs=1e-4)


def test_rows_beyond_the_batch_limit_wait_for_a_slot(
    a: LlamaForCausalLM, b: LlamaForCausalLM, c: LlamaForCausalLM
) -> None:
    limited = staggered([c, a, b], "static", max_batch=2)
    assert [r.tokens for r in limited] == [r.tokens for r in staggered([c, a, b], "dynamic")]


def test_the_large_model_alone_on_the_static_engine(a: LlamaForCausalLM) -> None:
    plans = [RowPlan(tuple(p), 9) for p in PROMPTS]
    static = decode([a], None, plans, engine="static")
    assert [r.tokens for r in static] == [r.tokens for r in decode([a], None, plans)]


def failing_capture(calls: list[str]) -> Callable[[Callable[[], object]], tuple[Replay, object]]:
    """Runs the body once (as a real capture's warm-up does), then fails."""

    def capture(body: Callable[[], object]) -> tuple[Replay, object]:
        body()
        calls.append("capture")
        raise RuntimeError("operation not permitted when stream is capturing")

    return capture


def test_a_shape_that_cannot_be_captured_runs_eagerly(
    a: LlamaForCausalLM, b: LlamaForCausalLM, c: LlamaForCausalLM
) -> None:
    calls: list[str] = []
    members = StaticMembers(
        [c, a, b], max_rows=4, max_len=256, graphs=True, capture=failing_capture(calls)
    )
    combiner = FusionCombiner(BracketedSolver(), SharedVocab(VOCAB, None, ""), experts=1)
    decoder = BatchDecoder(members, combiner, max_batch=4)
    rows = [TracedRow(RowPlan(tuple(p), 10)) for p in PROMPTS]
    for row in rows:
        decoder.submit(row)
    decoder.run_until_idle()
    expected = decode([c, a, b], BracketedSolver(), [r.plan for r in rows])
    # The warm-up run before each failed capture changed nothing that decoding sees.
    assert [r.tokens for r in rows] == [r.tokens for r in expected]
    assert members.captured == 0
    # One attempt per shape (forward at batch 4 and width 64, combine at batch 4), not per step.
    assert len(calls) == 2


def test_a_prompt_longer_than_the_cache_is_refused(a: LlamaForCausalLM) -> None:
    members = StaticMembers([a], max_rows=2, max_len=16)
    with pytest.raises(ValueError, match="static cache holds 15"):
        members.admit(tuple(range(3, 19)))
    members.admit(tuple(range(3, 10)))
    assert members.rows == 1


def test_graphs_need_cuda(a: LlamaForCausalLM) -> None:
    with pytest.raises(ValueError, match="CUDA"):
        StaticMembers([a], max_rows=2, max_len=16, graphs=True)
    assert not StaticMembers([a], max_rows=2, max_len=16).graphs  # auto: off on CPU


def replaying_capture(calls: list[str]) -> Callable[[Callable[[], object]], tuple[Replay, object]]:
    """A CPU stand-in for a CUDA graph: each replay runs the body again and writes its
    results into the first run's output tensors, as a graph rewrites its outputs."""

    def capture(body: Callable[[], object]) -> tuple[Replay, object]:
        body()  # the warm-up run a real capture makes
        outputs = body()
        calls.append("capture")

        def replay() -> None:
            fresh = body()
            if isinstance(outputs, tuple):
                for kept, new in zip(outputs, cast(tuple[torch.Tensor, ...], fresh), strict=True):
                    kept.copy_(new)

        return replay, outputs

    return capture


def graph_path_tokens(
    models: Sequence[LlamaForCausalLM], compile_combiner: bool
) -> tuple[list[list[int]], list[list[int]], int, int]:
    """Tokens of three rows (two at a time) on the emulated graph path and on the dynamic
    engine; graphs captured and capture calls."""
    calls: list[str] = []
    members = StaticMembers(
        models, max_rows=2, max_len=256, graphs=True, capture=replaying_capture(calls),
        compile_combiner=compile_combiner,
    )  # fmt: skip
    combiner = FusionCombiner(BracketedSolver(), SharedVocab(VOCAB, None, ""), experts=1)
    decoder = BatchDecoder(members, combiner, max_batch=2)
    rows = [TracedRow(RowPlan(tuple(p), n)) for p, n in zip(PROMPTS, (9, 4, 6), strict=True)]
    for row in rows:
        decoder.submit(row)
    decoder.run_until_idle()
    expected = decode(models, BracketedSolver(), [r.plan for r in rows])
    return [r.tokens for r in rows], [r.tokens for r in expected], members.captured, len(calls)


def test_the_graph_path_decodes_like_the_dynamic_engine(
    a: LlamaForCausalLM, b: LlamaForCausalLM, c: LlamaForCausalLM
) -> None:
    """Replays (emulated on CPU) with outputs reused across steps, and state restored
    after each capture's warm-up."""
    tokens, expected, captured, calls = graph_path_tokens([c, a, b], compile_combiner=False)
    assert tokens == expected
    # Forward and combine, each at batch 2 and then 1 (every row within the first width).
    assert captured == calls == 4


COMPILED = """
import json, os
from tests.experts.fusion.harness import VOCAB
from tests.experts.fusion.test_static import graph_path_tokens
from tests.experts.fusion.tiny import tiny_llama
a, b, c = (tiny_llama(VOCAB, seed=seed) for seed in (1, 2, 3))
print(json.dumps(graph_path_tokens([c, a, b], compile_combiner=True)), flush=True)
os._exit(0)
"""


def test_the_graph_path_with_a_compiled_combiner() -> None:
    """The same with the combiner through torch.compile, in a child process that skips
    interpreter teardown: compiled code can crash Python at exit (a known torch.compile
    issue), which would fail the whole test run after every test passed."""
    result = subprocess.run(
        [sys.executable, "-c", COMPILED], capture_output=True, text=True, timeout=600,
        cwd=Path(__file__).resolve().parents[3],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    tokens, expected, captured, calls = json.loads(result.stdout.strip().splitlines()[-1])
    assert tokens == expected
    assert captured == calls == 4
