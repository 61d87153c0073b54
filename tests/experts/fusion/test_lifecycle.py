"""How rows end and what they see, on tiny random Llama models (A, B, C: see conftest.py):
stop criteria, per-row transforms and sampling, cancellation, failures, closing."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

from experts.base import Sampling
from experts.decoding import sampling_transforms
from experts.fusion.decoder import BatchDecoder, FusionCombiner, PhaseClock
from experts.fusion.members import CausalLMMember
from experts.fusion.rows import Failed, Finished, RowPlan
from experts.fusion.solvers import BracketedSolver
from experts.fusion.vocab import SharedVocab
from tests.experts.fusion.harness import (
    PROMPTS,
    TOKENIZER,
    VOCAB,
    Exploding,
    TracedRow,
    decode,
    decoder_for,
    plans,
)
from tests.experts.fusion.references import greedy_without_cache, last_logits

# Every property holds on both engines (see conftest.py).
pytestmark = pytest.mark.usefixtures("engine")

# -- stop criteria, transforms, cancellation, failures --------------------------------------


def test_each_row_stops_on_its_own_criteria(
    a: LlamaForCausalLM, b: LlamaForCausalLM, c: LlamaForCausalLM
) -> None:
    reference = decode([c, a, b], BracketedSolver(), plans(8))
    eos = reference[0].tokens[3]
    text = TOKENIZER.decode(reference[1].tokens[:5], skip_special_tokens=True)
    stop = text[-2:]
    rows = [
        TracedRow(RowPlan(tuple(PROMPTS[0]), 8), eos=frozenset({eos})),
        TracedRow(RowPlan(tuple(PROMPTS[1]), 8, stop=(stop,))),
        TracedRow(RowPlan(tuple(PROMPTS[2]), 3)),
    ]
    decoder = decoder_for([c, a, b], BracketedSolver())
    for row in rows:
        decoder.submit(row)
    decoder.run_until_idle()
    by_eos, by_stop, by_length = (row.final for row in rows)
    assert isinstance(by_eos, Finished) and by_eos.reason == "stop"
    assert by_eos.completion_tokens == reference[0].tokens.index(eos)
    assert isinstance(by_stop, Finished) and by_stop.reason == "stop"
    assert stop not in rows[1].text and text.startswith(rows[1].text)
    assert isinstance(by_length, Finished) and by_length.reason == "length"
    assert by_length.completion_tokens == 3


def test_transforms_apply_to_their_own_row_only(
    a: LlamaForCausalLM, b: LlamaForCausalLM, c: LlamaForCausalLM
) -> None:
    reference = decode([c, a, b], BracketedSolver(), plans(6))
    banned = reference[0].tokens[0]

    def ban(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores.index_fill(-1, torch.tensor([banned]), float("-inf"))

    steered = [RowPlan(tuple(PROMPTS[0]), 6, transforms=(ban,)), RowPlan(tuple(PROMPTS[1]), 6)]
    rows = decode([c, a, b], BracketedSolver(), steered)
    assert banned not in rows[0].tokens
    assert rows[1].tokens == reference[1].tokens


def test_penalties_see_each_rows_own_history(
    a: LlamaForCausalLM, b: LlamaForCausalLM, c: LlamaForCausalLM
) -> None:
    """Repetition and frequency penalties come after fusion, over the row's own tokens."""
    sampling = Sampling(repetition_penalty=3.0, frequency_penalty=1.5)
    penalised = [
        RowPlan(tuple(p), 12, transforms=sampling_transforms(sampling, len(p))) for p in PROMPTS
    ]
    rows = decode([c, a, b], BracketedSolver(), [penalised[0], plans(12)[1], penalised[2]])
    models = [last_logits(m) for m in (c, a, b)]
    for row, plan in zip(rows, [penalised[0], plans(12)[1], penalised[2]], strict=True):
        expected, _ = greedy_without_cache(
            models, BracketedSolver(), plan.prompt_ids, 12, plan.transforms
        )
        assert row.tokens == expected
    plain = decode([c, a, b], BracketedSolver(), plans(12))
    assert rows[0].tokens != plain[0].tokens


def test_sampling_is_reproducible_with_a_seed(
    a: LlamaForCausalLM, b: LlamaForCausalLM, c: LlamaForCausalLM
) -> None:
    transforms = sampling_transforms(Sampling(temperature=1.5, top_k=50), len(PROMPTS[0]))
    plan = RowPlan(tuple(PROMPTS[0]), 10, greedy=False, seed=7, transforms=transforms)
    first = decode([c, a, b], BracketedSolver(), [plan, plans()[1]])
    second = decode([c, a, b], BracketedSolver(), [plan])
    assert first[0].tokens == second[0].tokens


def test_a_cancelled_row_leaves_without_a_word(
    a: LlamaForCausalLM, b: LlamaForCausalLM, c: LlamaForCausalLM
) -> None:
    decoder = decoder_for([c, a, b], BracketedSolver())
    rows = [TracedRow(plan) for plan in plans(8)]
    for row in rows:
        decoder.submit(row)
    decoder.iterate()
    decoder.iterate()
    rows[1].cancel.set()
    decoder.run_until_idle()
    assert len(rows[1].trace) == 2 and not any(isinstance(e, Finished) for e in rows[1].events)
    expected = decode([c, a, b], BracketedSolver(), plans(8))
    assert rows[0].tokens == expected[0].tokens and rows[2].tokens == expected[2].tokens


def test_a_failed_step_fails_every_row_and_the_decoder_carries_on(
    a: LlamaForCausalLM, b: LlamaForCausalLM, c: LlamaForCausalLM
) -> None:
    decoder = decoder_for([CausalLMMember(c), Exploding(CausalLMMember(a)), b], BracketedSolver())
    rows = [TracedRow(plan) for plan in plans(6)]
    for row in rows:
        decoder.submit(row)
    decoder.run_until_idle()
    assert all(isinstance(row.final, Failed) and row.final.error is not None for row in rows)
    later = TracedRow(plans(6)[0])
    decoder.submit(later)
    decoder.run_until_idle()
    assert later.tokens == decode([c, a, b], BracketedSolver(), plans(6))[0].tokens


def test_close_fails_active_and_waiting_rows_as_closed(
    a: LlamaForCausalLM, b: LlamaForCausalLM, c: LlamaForCausalLM
) -> None:
    decoder = decoder_for([c, a, b], BracketedSolver(), max_batch=1)
    rows = [TracedRow(plan) for plan in plans(6)]
    for row in rows:
        decoder.submit(row)
    decoder.iterate()
    decoder.close()
    assert all(isinstance(row.final, Failed) and row.final.error is None for row in rows)


def test_the_phase_clock_sees_every_phase(
    a: LlamaForCausalLM, b: LlamaForCausalLM, c: LlamaForCausalLM
) -> None:
    clock = PhaseClock()
    combiner = FusionCombiner(BracketedSolver(), SharedVocab(VOCAB, None, ""), 1, clock=clock)
    decoder = BatchDecoder([CausalLMMember(m) for m in (c, a, b)], combiner, clock=clock)
    decoder.submit(TracedRow(plans(4)[0]))
    decoder.run_until_idle()
    assert clock.counts["combine"] == clock.counts["solve"] == 4
    assert clock.counts["forward"] == 3 and clock.counts["prefill"] == 1
