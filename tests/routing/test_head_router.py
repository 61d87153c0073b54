"""The router's decisions when a head turns scores into calibrated probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.routing.head import Combination, Gate, LinearHead, ProbabilityHead
from gateway.routing.router import Clarify, Dispatch, Fallback, Router, RouterPolicy
from tests.routing.test_router import PROFILES, make_router, unit


def head_router(**policy: object) -> Router:
    """Axes 0-2 are the experts' topics (calculator, units, general); axis 3 is nothing."""
    weights = np.zeros((4, 3), dtype=np.float32)
    weights[0, 0] = weights[1, 1] = weights[2, 2] = 6.0
    linear = LinearHead(weights, np.zeros(3, np.float32), has_none=False)
    head = ProbabilityHead(linear, Combination(alpha=1.0, gamma=2.0, gate=Gate(bias=-1.0)))
    plain = make_router()
    settings = {"threshold": 0.5, "margin": 0.0, **policy}
    return Router(plain.index, RouterPolicy(**settings), PROFILES, head=head)  # type: ignore[arg-type]


def test_scores_are_probabilities() -> None:
    for vector in (unit(1, 0.1, 0, 0), unit(1, 1, 0, 0), unit(0, 0, 0, 1), unit(0.3, 0.2, 1, 0)):
        ranked = head_router().rank(vector)
        scores = [c.score for c in ranked]
        assert all(0.0 <= s <= 1.0 for s in scores)
        assert sum(scores) <= 1.0 + 1e-5  # the rest is the probability that none fits
        assert scores == sorted(scores, reverse=True)


def test_clear_request_dispatches_with_its_probability() -> None:
    decision = head_router().decide(unit(1, 0.1, 0, 0))
    assert isinstance(decision, Dispatch)
    assert decision.expert == "calculator"
    assert 0.5 <= decision.score <= 1.0
    # The margin is the lead in shares of the probability that some expert fits.
    assert decision.in_scope is not None and decision.score <= decision.in_scope <= 1.0
    lead = decision.score - decision.candidates[1].score
    assert decision.margin == pytest.approx(lead / decision.in_scope, abs=1e-5)


def test_request_between_two_experts_asks_which() -> None:
    decision = head_router(margin=0.2).decide(unit(1, 1, 0, 0))
    assert isinstance(decision, Clarify)
    assert decision.reason == "close_margin"
    assert set(decision.options) == {"calculator", "units"}


def test_request_like_no_expert_is_no_match() -> None:
    decision = head_router().decide(unit(0, 0, 0, 1))
    assert isinstance(decision, Clarify) and decision.reason == "no_match"
    router = head_router(on_no_match="fallback", fallback="general")
    assert isinstance(router.decide(unit(0, 0, 0, 1)), Fallback)


def test_margin_applies_to_shares_and_threshold_to_in_scope() -> None:
    vector = unit(1, 0.1, 0, 0)
    clear = head_router().decide(vector)
    assert isinstance(clear, Dispatch) and clear.in_scope is not None
    strict = head_router(margin=clear.margin + 0.001).decide(vector)
    assert isinstance(strict, Clarify) and strict.reason == "close_margin"
    # The threshold compares the probability that some expert fits, not the best's.
    assert clear.score < clear.in_scope
    between = (clear.score + clear.in_scope) / 2
    assert isinstance(head_router(threshold=between).decide(vector), Dispatch)
    above = head_router(threshold=clear.in_scope + 0.001).decide(vector)
    assert isinstance(above, Clarify) and above.reason == "no_match"


def test_runtime_exemplars_raise_their_experts_probability() -> None:
    router = head_router()
    vector = unit(0.2, 0.2, 0, 1)
    before = {c.expert: c.score for c in router.rank(vector)}
    after = {c.expert: c.score for c in router.rank(vector, {"units": [0.98]})}
    assert after["units"] > before["units"]
    assert sum(after.values()) <= 1.0 + 1e-5
    assert router.rank(vector, {"units": [0.98]})[0].expert == "units"
    closer = unit(0.2, 0.6, 0, 1)
    assert not isinstance(router.decide(closer), Dispatch)
    assert isinstance(router.decide(closer, extra={"units": [0.98]}), Dispatch)


def test_preferred_expert_wins_a_split() -> None:
    router = head_router(prefer_margin=0.25)
    decision = router.decide(unit(1, 1.1, 0, 0), prefer="calculator")
    assert isinstance(decision, Dispatch)
    assert (decision.expert, decision.reason) == ("calculator", "preferred")


def test_head_for_other_experts_is_refused() -> None:
    linear = LinearHead(np.zeros((4, 2), np.float32), np.zeros(2, np.float32), has_none=False)
    head = ProbabilityHead(linear, Combination())
    with pytest.raises(ValueError, match="different set of experts"):
        Router(make_router().index, RouterPolicy(), PROFILES, head=head)
