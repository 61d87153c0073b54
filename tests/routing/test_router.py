from __future__ import annotations

import numpy as np
import pytest

from gateway.routing.clarify import ExpertProfile, question_for
from gateway.routing.router import (
    Clarify,
    Dispatch,
    ExemplarIndex,
    Fallback,
    Router,
    RouterPolicy,
)

PROFILES = {
    "calculator": ExpertProfile("calculator", "arithmetic with numbers", "do arithmetic"),
    "units": ExpertProfile("units", "converting measurements", "convert units"),
    "general": ExpertProfile("general", "general conversation"),
}


def unit(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def make_router(**policy: object) -> Router:
    # Axes: 0 = arithmetic, 1 = units, 2 = chat, 3 = nothing known.
    index = ExemplarIndex(
        {
            "calculator": np.stack([unit(1, 0, 0, 0), unit(1, 0.2, 0, 0)]),
            "units": np.stack([unit(0, 1, 0, 0)]),
            "general": np.stack([unit(0, 0, 1, 0)]),
        },
        dim=4,
    )
    return Router(index, RouterPolicy(**policy), PROFILES)  # type: ignore[arg-type]


def test_dispatch_when_best_clears_threshold_and_margin() -> None:
    decision = make_router().decide(unit(1, 0.1, 0, 0))
    assert isinstance(decision, Dispatch)
    assert decision.expert == "calculator"
    assert decision.score == pytest.approx(float(unit(1, 0.1, 0, 0) @ unit(1, 0.2, 0, 0)), abs=1e-5)
    assert [c.expert for c in decision.candidates] == ["calculator", "units", "general"]
    assert decision.margin == pytest.approx(decision.score - decision.candidates[1].score)


def test_clarify_on_small_margin_names_the_close_candidates() -> None:
    decision = make_router(margin=0.2).decide(unit(1, 1.5, 0, 0))
    assert isinstance(decision, Clarify)
    assert decision.reason == "close_margin"
    assert decision.options == ("units", "calculator")
    assert decision.question == (
        "Do you want me to convert units (units), or to do arithmetic (calculator)?"
    )


def test_margin_exactly_met_dispatches() -> None:
    router = make_router(margin=0.0)
    decision = router.decide(unit(1, 1.5, 0, 0))
    assert isinstance(decision, Dispatch)


def test_no_match_clarifies_with_every_candidate() -> None:
    decision = make_router().decide(unit(0.1, 0.1, 0.1, 1))
    assert isinstance(decision, Clarify)
    assert decision.reason == "no_match"
    assert set(decision.options) == {"calculator", "units", "general"}
    assert decision.question.startswith("I'm not sure which of my experts fits this.")
    assert "help with general conversation (general)" in decision.question


def test_no_match_falls_back_when_configured() -> None:
    router = make_router(on_no_match="fallback", fallback="general")
    decision = router.decide(unit(0.1, 0.1, 0.1, 1))
    assert isinstance(decision, Fallback)
    assert decision.expert == "general"
    assert decision.score < 0.45


def test_unknown_fallback_is_refused() -> None:
    with pytest.raises(ValueError, match="fallback expert"):
        make_router(on_no_match="fallback", fallback="nobody")


def test_preferred_expert_wins_a_near_tie() -> None:
    router = make_router(margin=0.2)
    vector = unit(1, 1.5, 0, 0)
    decision = router.decide(vector, prefer="calculator")
    assert isinstance(decision, Dispatch)
    assert decision.expert == "calculator"
    assert decision.reason == "preferred"


def test_preferred_expert_does_not_beat_a_clear_winner() -> None:
    decision = make_router().decide(unit(1, 0.05, 0, 0), prefer="units")
    assert isinstance(decision, Dispatch)
    assert decision.expert == "calculator"


def test_mean_of_top_k_aggregates_the_best_exemplars() -> None:
    vector = unit(1, 0, 0, 0)
    router_max = make_router(aggregate="max")
    router_mean = make_router(aggregate="mean_topk", top_k=2)
    best_max = router_max.rank(vector)[0]
    best_mean = router_mean.rank(vector)[0]
    assert best_max.score == pytest.approx(1.0, abs=1e-5)
    expected = (1.0 + float(unit(1, 0.2, 0, 0)[0])) / 2
    assert best_mean.score == pytest.approx(expected, abs=1e-5)


def test_expert_without_exemplars_scores_lowest() -> None:
    index = ExemplarIndex({"a": np.stack([unit(1, 0)]), "b": np.zeros((0, 2), np.float32)}, 2)
    profiles = {"a": ExpertProfile("a", "a"), "b": ExpertProfile("b", "b")}
    ranked = Router(index, RouterPolicy(), profiles).rank(unit(0, 1))
    assert ranked[-1].expert == "b"
    assert ranked[-1].score == -1.0


def test_question_lists_three_options_in_order() -> None:
    options = [PROFILES["units"], PROFILES["calculator"], PROFILES["general"]]
    assert question_for(options, "close_margin") == (
        "Do you want me to convert units (units), to do arithmetic (calculator), "
        "or to help with general conversation (general)?"
    )


# -- constraints: which experts may answer, and whether a question is an answer ------------


def test_only_allowed_experts_are_candidates() -> None:
    decision = make_router().decide(unit(1, 0.1, 0, 0), allowed=frozenset({"units", "general"}))
    assert [c.expert for c in decision.candidates] == ["units", "general"]
    assert not isinstance(decision, Dispatch) or decision.expert != "calculator"


def test_a_question_offers_only_allowed_experts() -> None:
    decision = make_router(margin=0.2).decide(
        unit(1, 1.5, 1.4, 0), allowed=frozenset({"calculator", "general"})
    )
    assert isinstance(decision, Clarify)
    assert set(decision.options) == {"general", "calculator"}


def test_without_asking_the_best_candidate_is_dispatched() -> None:
    close = make_router(margin=0.2).decide(unit(1, 1.5, 0, 0), ask=False)
    assert isinstance(close, Dispatch)
    assert (close.expert, close.reason) == ("units", "unasked_close_margin")
    nothing = make_router().decide(unit(0, 0, 0, 1), ask=False)
    assert isinstance(nothing, Dispatch) and nothing.reason == "unasked_no_match"


def test_a_fallback_that_cannot_take_the_request_is_passed_over() -> None:
    router = make_router(on_no_match="fallback", fallback="general")
    assert isinstance(router.decide(unit(0, 0, 0, 1)), Fallback)
    allowed = frozenset({"calculator", "units"})
    assert isinstance(router.decide(unit(0, 0, 0, 1), allowed=allowed), Clarify)
    unasked = router.decide(unit(0, 0, 0, 1), allowed=allowed, ask=False)
    assert isinstance(unasked, Dispatch) and unasked.expert in allowed
