"""The batch decoder on tiny random Llama models (A, B, C: see conftest.py): properties 1,
2, 3, 5 and 6, and continuous batching."""

from __future__ import annotations

import pytest
from transformers import LlamaForCausalLM

from experts.fusion.members import CausalLMMember
from experts.fusion.rows import Finished, RowPlan
from experts.fusion.solvers import BracketedSolver, GridSolver, Solver, StaticSolver
from tests.experts.fusion.harness import (
    PROMPTS,
    Shifted,
    TracedRow,
    alone,
    decode,
    decoder_for,
    plans,
)
from tests.experts.fusion.references import greedy_without_cache, last_logits
from tests.experts.fusion.tiny import twin

# Every property holds on both engines (see conftest.py).
pytestmark = pytest.mark.usefixtures("engine")

# -- property 1: identity ------------------------------------------------------------------


@pytest.mark.parametrize(
    "solver", [BracketedSolver(), GridSolver(), StaticSolver(1.0)], ids=lambda s: s.name
)
def test_identity_reproduces_the_expert(
    solver: Solver, a: LlamaForCausalLM, b: LlamaForCausalLM
) -> None:
    """Large = small base (same weights), expert B: a = 1 every step, B's greedy output."""
    rows = decode([a, twin(a), b], solver, plans())
    for row, prompt in zip(rows, PROMPTS, strict=True):
        assert row.tokens == alone(b, prompt, 12)
        for alpha in row.alphas:
            assert alpha[0] == pytest.approx(1.0, abs=1e-4)
        assert isinstance(row.final, Finished) and row.final.reason == "length"
        assert row.final.tally.active == [12] and row.final.tally.inactive == 0


# -- property 2: null expert ---------------------------------------------------------------


@pytest.mark.parametrize("solver", [BracketedSolver(), GridSolver()], ids=lambda s: s.name)
def test_a_null_expert_leaves_the_large_model_alone(
    solver: Solver, a: LlamaForCausalLM, c: LlamaForCausalLM
) -> None:
    rows = decode([c, a, twin(a)], solver, plans())
    for row, prompt in zip(rows, PROMPTS, strict=True):
        assert row.tokens == alone(c, prompt, 12)
        assert all(alpha == [0.0] for alpha in row.alphas)
        assert isinstance(row.final, Finished) and row.final.tally.inactive == 12


# -- property 3: shift invariance ----------------------------------------------------------


@pytest.mark.parametrize("solver", [BracketedSolver(), GridSolver()], ids=lambda s: s.name)
def test_shifting_a_models_logits_changes_neither_weights_nor_tokens(
    solver: Solver, a: LlamaForCausalLM, b: LlamaForCausalLM, c: LlamaForCausalLM
) -> None:
    plain = decode([c, a, b], solver, plans())
    shifted_members = [Shifted(CausalLMMember(m), seed) for seed, m in enumerate([c, a, b])]
    shifted = decode(shifted_members, solver, plans())
    for one, other in zip(plain, shifted, strict=True):
        assert one.tokens == other.tokens
        for x, y in zip(one.alphas, other.alphas, strict=True):
            assert x == pytest.approx(y, abs=1e-3)


# -- property 5: batched = unbatched = recomputed without a cache ---------------------------


@pytest.mark.parametrize("solver", [BracketedSolver(), GridSolver()], ids=lambda s: s.name)
def test_batched_equals_unbatched_equals_no_cache(
    solver: Solver, a: LlamaForCausalLM, b: LlamaForCausalLM, c: LlamaForCausalLM
) -> None:
    lengths = [10, 4, 7]
    batch_plans = [RowPlan(tuple(p), n) for p, n in zip(PROMPTS, lengths, strict=True)]
    batched = decode([c, a, b], solver, batch_plans)
    for row, plan in zip(batched, batch_plans, strict=True):
        (single,) = decode([c, a, b], solver, [plan])
        models = [last_logits(m) for m in (c, a, b)]
        tokens, alphas = greedy_without_cache(models, solver, plan.prompt_ids, plan.max_new_tokens)
        assert row.tokens == single.tokens == tokens
        for x, y, z in zip(row.alphas, single.alphas, alphas, strict=True):
            assert x == pytest.approx(y, abs=1e-3) and y == pytest.approx(z, abs=1e-3)


def test_rows_join_and_leave_between_steps(
    a: LlamaForCausalLM, b: LlamaForCausalLM, c: LlamaForCausalLM
) -> None:
    """Continuous batching: a row submitted mid-way joins; each leaves at its own length."""
    decoder = decoder_for([c, a, b], BracketedSolver())
    first, second = (TracedRow(RowPlan(tuple(p), n)) for p, n in [(PROMPTS[2], 9), (PROMPTS[0], 6)])
    decoder.submit(first)
    for _ in range(4):
        decoder.iterate()
    decoder.submit(second)
    decoder.iterate()
    assert decoder.active == 2
    decoder.run_until_idle()
    assert decoder.active == 0
    for row in (first, second):
        (single,) = decode([c, a, b], BracketedSolver(), [row.plan])
        assert row.tokens == single.tokens and len(row.tokens) == row.plan.max_new_tokens


def test_the_batch_limit_holds_rows_back(
    a: LlamaForCausalLM, b: LlamaForCausalLM, c: LlamaForCausalLM
) -> None:
    decoder = decoder_for([c, a, b], BracketedSolver(), max_batch=2)
    rows = [TracedRow(plan) for plan in plans(5)]
    for row in rows:
        decoder.submit(row)
    decoder.iterate()
    assert decoder.active == 2
    decoder.run_until_idle()
    expected = decode([c, a, b], BracketedSolver(), plans(5))
    assert [r.tokens for r in rows] == [r.tokens for r in expected]


# -- property 6: T copies of one expert ----------------------------------------------------


@pytest.mark.parametrize(
    "solver", [BracketedSolver(), GridSolver(), StaticSolver(0.5)], ids=lambda s: s.name
)
def test_copies_of_one_expert_decode_like_one(
    solver: Solver, a: LlamaForCausalLM, b: LlamaForCausalLM, c: LlamaForCausalLM
) -> None:
    single = decode([c, a, b], solver, plans())
    copies = decode([c, a, b, twin(b), twin(b)], solver, plans())
    for one, three in zip(single, copies, strict=True):
        if isinstance(solver, StaticSolver):  # proxy-tuning adds all three shifts
            continue
        assert one.tokens == three.tokens
        for x, y in zip(one.alphas, three.alphas, strict=True):
            assert y[1:] == [0.0, 0.0] and y[0] == pytest.approx(x[0], abs=1e-5)


def test_the_large_model_alone_in_the_same_engine(a: LlamaForCausalLM) -> None:
    rows = decode([a], None, plans(7))
    for row, prompt in zip(rows, PROMPTS, strict=True):
        assert row.tokens == alone(a, prompt, 7)
        assert row.alphas == [[]] * 7
