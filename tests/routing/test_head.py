"""The routing head on small synthetic data: fitting, probabilities, the combination."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.routing.fitting import HeadOptions, fit_head, head_wanted
from gateway.routing.head import Combination, Gate, ProbabilityHead, combine, fit_linear
from tests.routing.synthetic import clusters


def test_logistic_head_separates_clusters() -> None:
    data = clusters(4, 30)
    head = fit_linear(data.vectors, data.targets, 4, c=10.0)
    assert not head.has_none and head.n_experts == 4
    log_probs = head.log_probs(data.vectors)
    assert log_probs.shape == (120, 4)
    assert np.allclose(np.exp(log_probs).sum(1), 1.0, atol=1e-5)
    assert (log_probs.argmax(1) == data.targets).mean() > 0.95


def test_negatives_become_the_none_class() -> None:
    data = clusters(3, 30, negatives=30)
    head = fit_linear(data.vectors, data.targets, 3, c=10.0)
    assert head.has_none and head.log_probs(data.vectors).shape == (120, 4)


def test_an_expert_without_examples_never_wins() -> None:
    data = clusters(3, 20)
    keep = data.targets != 1
    head = fit_linear(data.vectors[keep], data.targets[keep], 3, c=10.0)
    assert (head.log_probs(data.vectors).argmax(1) != 1).all()


def test_two_experts_use_the_binary_model() -> None:
    data = clusters(2, 20)
    head = fit_linear(data.vectors, data.targets, 2, c=10.0)
    assert (head.log_probs(data.vectors).argmax(1) == data.targets).mean() > 0.95


def test_combination_sums_to_one_and_similarity_raises_an_expert() -> None:
    logits = np.log(np.array([[0.5, 0.3, 0.2]], dtype=np.float32))
    mix = Combination(alpha=1.0, gamma=3.0, gate=Gate(similarity=4.0, combined=0.0))
    low = combine(logits, np.array([[0.2, 0.2, 0.2]], np.float32), False, mix).probabilities()
    high = combine(logits, np.array([[0.2, 0.9, 0.2]], np.float32), False, mix).probabilities()
    assert low.shape == (1, 4)
    assert low.sum() == pytest.approx(1.0) and high.sum() == pytest.approx(1.0)
    assert high[0, 1] > low[0, 1]
    assert high[0, 1] > high[0, 0]
    # A higher best similarity makes it likelier that some expert fits.
    assert high[0, -1] < low[0, -1]


def test_shares_do_not_depend_on_the_gate() -> None:
    logits = np.array([[2.0, 1.0, 0.0, 5.0]], dtype=np.float32)  # the last is "none"
    sims = np.array([[0.5, 0.4, 0.1]], dtype=np.float32)
    a = combine(logits, sims, True, Combination(gamma=1.0, gate=Gate(none=-1.0, combined=0.0)))
    b = combine(logits, sims, True, Combination(gamma=1.0, gate=Gate(bias=3.0)))
    assert np.allclose(a.shares, b.shares)
    assert a.in_scope[0] == pytest.approx(1 / (1 + np.exp(5.0)))
    assert a.in_scope[0] < b.in_scope[0]


def test_probability_head_scores_one_request() -> None:
    data = clusters(3, 20)
    head = ProbabilityHead(fit_linear(data.vectors, data.targets, 3, c=10.0), Combination())
    probs = head.probabilities(data.vectors[0], [0.9, 0.1, 0.1])
    assert probs.shape == (4,) and probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert int(np.argmax(probs[:-1])) == 0
    in_scope, shares = head.assess(data.vectors[0], [0.9, 0.1, 0.1])
    assert np.allclose(shares * in_scope, probs[:-1], atol=1e-6)


def test_head_wanted_needs_enough_examples() -> None:
    assert not head_wanted(HeadOptions(), {"a": 10, "b": 30})
    assert head_wanted(HeadOptions(), {"a": 20, "b": 30})
    assert head_wanted(HeadOptions(mode="on"), {"a": 2, "b": 3})
    assert not head_wanted(HeadOptions(mode="on"), {"a": 1, "b": 3})
    assert not head_wanted(HeadOptions(mode="off"), {"a": 100, "b": 100})
    assert not head_wanted(HeadOptions(mode="on"), {"a": 100})


def test_folds_without_negatives_hold_experts_out_as_pseudo_out_of_scope() -> None:
    fitted = fit_head(clusters(6, 25), HeadOptions(target=None))
    report = fitted.report
    assert report.held_out == "folds" and report.n_held_out == 150
    # Experts held out of a fold played "out of scope": an oos_recall target is possible.
    target_fit = fit_head(clusters(6, 25), HeadOptions(folds=3, mode="on"))
    assert target_fit.report.point.oos_recall is not None
    assert 0.0 < fitted.threshold <= 1.0


def test_validation_set_calibrates_instead_of_folds() -> None:
    data = clusters(4, 30, negatives=20)
    check = clusters(4, 10, negatives=10, seed=0)
    fitted = fit_head(data, HeadOptions(), validation=check)
    assert fitted.report.held_out == "validation" and fitted.report.n_held_out == 50


def test_fixed_numbers_override_the_calibrated_ones() -> None:
    fitted = fit_head(clusters(4, 25), HeadOptions(threshold=0.7, margin=0.1))
    assert (fitted.threshold, fitted.margin) == (0.7, 0.1)
