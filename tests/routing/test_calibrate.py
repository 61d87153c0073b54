"""Operating-point selection and the head's combination, on synthetic held-out scores."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.routing.calibrate import (
    HeldOut,
    Target,
    calibrate,
    choose_point,
    dispatched,
    fit_combination,
    fit_gate,
    lead,
)
from gateway.routing.head import combine


def scores(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def flags(*values: int) -> np.ndarray:
    return np.array(values, dtype=bool)


# Ten in-scope items (the last two routed to the wrong expert) and five out of scope.
BEST = scores(0.99, 0.97, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.45, 0.75, 0.55, 0.4, 0.3, 0.2)
# Every item's expert leads clearly: only the threshold decides.
SECOND = np.ones_like(BEST)
CORRECT = flags(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0)
NEGATIVE = flags(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1)


def test_oos_recall_target_keeps_that_many_negatives_out() -> None:
    point = choose_point(BEST, SECOND, CORRECT, NEGATIVE, Target("oos_recall", 0.8))
    sent = dispatched(BEST, SECOND, point.threshold, point.margin)
    assert point.met
    assert (~sent[NEGATIVE]).mean() >= 0.8
    # One negative may go through: the 0.75 one, so the threshold drops below 0.6 (the
    # last right in-scope item) but stays above the 0.55 negative.
    assert 0.55 < point.threshold <= 0.6
    assert point.in_scope_accuracy == pytest.approx(0.8)
    assert point.oos_recall == pytest.approx(0.8)


def test_full_oos_recall_costs_accuracy() -> None:
    loose = choose_point(BEST, SECOND, CORRECT, NEGATIVE, Target("oos_recall", 0.6))
    strict = choose_point(BEST, SECOND, CORRECT, NEGATIVE, Target("oos_recall", 1.0))
    assert strict.threshold > loose.threshold
    assert strict.in_scope_accuracy < loose.in_scope_accuracy
    assert strict.oos_recall == 1.0


def test_precision_target_dispatches_as_much_as_stays_precise() -> None:
    point = choose_point(BEST, SECOND, CORRECT, NEGATIVE, Target("precision", 0.9))
    sent = dispatched(BEST, SECOND, point.threshold, point.margin)
    precision = (sent & CORRECT).sum() / sent.sum()
    assert point.met and precision >= 0.9
    assert point.precision == pytest.approx(precision)
    # Lowering the threshold to the next item would break the target.
    lower = dispatched(BEST, SECOND, point.threshold - 0.051, point.margin)
    assert (lower & CORRECT).sum() / lower.sum() < 0.9


def test_unreachable_target_reports_the_closest_point() -> None:
    wrong_everywhere = np.zeros_like(CORRECT)
    point = choose_point(BEST, SECOND, wrong_everywhere, NEGATIVE, Target("precision", 0.99))
    assert not point.met
    assert point.in_scope_accuracy == 0.0


def test_margin_is_chosen_when_it_separates_the_mistakes() -> None:
    # The wrong in-scope items are near-ties; the right ones lead clearly.
    best = scores(0.9, 0.9, 0.9, 0.9, 0.6, 0.6)
    second = scores(0.85, 0.85, 0.85, 0.85, 0.05, 0.05)  # the leads
    correct = flags(1, 1, 1, 1, 0, 0)
    negative = flags(0, 0, 0, 0, 0, 0)
    point = choose_point(best, second, correct, negative, Target("precision", 0.99))
    assert point.met
    assert point.in_scope_accuracy == pytest.approx(4 / 6)
    assert dispatched(best, second, point.threshold, point.margin).tolist() == [1, 1, 1, 1, 0, 0]


def test_dispatch_all_and_nothing_are_possible_points() -> None:
    perfect = np.ones(4, bool)
    point = choose_point(scores(0.9, 0.8, 0.3, 0.2), np.zeros(4, np.float32), perfect,
                         np.zeros(4, bool), Target("precision", 0.9))  # fmt: skip
    assert point.threshold <= 0.2 and point.in_scope_accuracy == 1.0
    point = choose_point(scores(0.9, 0.8), np.zeros(2, np.float32), np.zeros(2, bool),
                         flags(0, 1), Target("oos_recall", 1.0))  # fmt: skip
    assert point.threshold > 0.9 and point.in_scope_accuracy == 0.0


def test_out_of_scope_items_count_as_turned_away_only_below_the_threshold() -> None:
    # Two out-of-scope items clear the threshold but not the margin: the router would ask
    # "which of two?", which does not turn them away.
    score = scores(0.9, 0.9, 0.9, 0.9, 0.9, 0.1)
    gap = scores(0.8, 0.8, 0.8, 0.01, 0.01, 0.8)
    correct = flags(1, 1, 1, 0, 0, 0)
    negative = flags(0, 0, 0, 1, 1, 1)
    point = choose_point(score, gap, correct, negative, Target("oos_recall", 0.9))
    assert point.met and point.oos_recall == 1.0
    assert point.threshold > 0.9 and point.in_scope_accuracy == 0.0
    loose = choose_point(score, gap, correct, negative, Target("oos_recall", 0.3))
    assert loose.in_scope_accuracy == 1.0 and loose.oos_recall == pytest.approx(1 / 3)


def synthetic_held_out(seed: int = 0, n: int = 400) -> HeldOut:
    """Three experts; the head is noisy, the similarity evidence is informative, and
    out-of-scope items have neither a leading logit nor a high similarity."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(-1, 3, size=n)
    logits = rng.normal(0, 1.0, size=(n, 3))
    sims = rng.normal(0.3, 0.1, size=(n, 3))
    inside = labels >= 0
    logits[inside, labels[inside]] += 1.5
    sims[inside, labels[inside]] += 0.4
    return HeldOut(logits.astype(np.float32), sims.astype(np.float32), labels, False)


def test_combination_probabilities_are_calibrated_on_held_out_data() -> None:
    held = synthetic_held_out()
    mix = fit_combination(held, gamma=3.0)
    found = combine(held.logits, held.similarities, held.has_none, mix)
    probs = found.probabilities()
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert ((probs >= 0) & (probs <= 1)).all()
    # Calibrated: the mean probability of "none" is close to the share of negatives.
    assert probs[:, -1].mean() == pytest.approx((held.labels < 0).mean(), abs=0.02)
    # And the best expert's share is about as often right as it claims.
    inside = held.labels >= 0
    choice, _ = lead(found.shares[inside])
    claimed = found.shares[inside].max(axis=1).mean()
    assert (choice == held.labels[inside]).mean() == pytest.approx(claimed, abs=0.05)


def test_gate_learns_from_energy_and_similarity() -> None:
    held = synthetic_held_out()
    gate = fit_gate(held)
    assert gate.energy > 0 and gate.similarity > 0 and gate.none == 0.0
    assert gate.combined == 0.0
    # The in-scope probability ranks fresh in-scope items above out-of-scope ones.
    fresh = synthetic_held_out(seed=2)
    in_scope = combine(fresh.logits, fresh.similarities, False, fit_combination(held, 0.0))
    inside, outside = in_scope.in_scope[fresh.labels >= 0], in_scope.in_scope[fresh.labels < 0]
    assert (inside[:, None] > outside[None, :]).mean() > 0.9


def test_without_negatives_the_gate_is_a_prior() -> None:
    held = synthetic_held_out()
    inside = held.labels >= 0
    positives = HeldOut(held.logits[inside], held.similarities[inside], held.labels[inside], False)
    mix = fit_combination(positives, gamma=0.0)
    assert mix.gate.combined == 1.0
    assert mix.gate.bias == pytest.approx(mix.alpha * np.log(3), abs=1e-5)
    # No evidence for any expert: "none" is as likely as each of the three.
    flat = combine(np.zeros((1, 3), np.float32), np.zeros((1, 3), np.float32), False, mix)
    assert flat.probabilities()[0] == pytest.approx([0.25] * 4, abs=1e-5)


def test_calibrate_uses_the_similarity_evidence_when_it_helps() -> None:
    held = synthetic_held_out()
    chosen = calibrate(held, Target("oos_recall", 0.9))
    assert chosen.mix.gamma > 0
    assert chosen.point.met and chosen.point.oos_recall is not None
    assert chosen.point.oos_recall >= 0.9
    # It holds (roughly) on fresh data from the same distribution.
    fresh = synthetic_held_out(seed=1)
    found = combine(fresh.logits, fresh.similarities, fresh.has_none, chosen.mix)
    _, gap = lead(found.shares)
    sent = dispatched(found.in_scope, gap, chosen.point.threshold, chosen.point.margin)
    assert (~sent[fresh.labels < 0]).mean() >= 0.8


def test_oos_recall_needs_negatives() -> None:
    held = synthetic_held_out()
    inside = HeldOut(
        held.logits[held.labels >= 0],
        held.similarities[held.labels >= 0],
        held.labels[held.labels >= 0],
        False,
    )
    with pytest.raises(ValueError, match="out-of-scope"):
        calibrate(inside, Target("oos_recall", 0.9))
