"""The solvers and the closed forms behind them, on random logits (properties 3, 4, 6, 7)."""

from __future__ import annotations

import pytest
import torch

from experts.fusion.objective import (
    divergences,
    evaluate,
    fused_logits,
    kl,
    log_probs,
    loss,
    prepare,
)
from experts.fusion.solvers import (
    BracketedSolver,
    GridSolver,
    Solver,
    StaticSolver,
    build_solver,
    one_hot_choice,
)
from tests.experts.fusion.references import loop_grid

SOLVERS = [BracketedSolver(), GridSolver(), StaticSolver(0.7)]


def logits(
    rows: int, vocab: int, experts: int, *, seed: int, spread: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Large, small base and experts [B, T, V]: experts are the small base plus a shift."""
    generator = torch.Generator().manual_seed(seed)
    large = 2.0 * torch.randn(rows, vocab, generator=generator)
    small = 2.0 * torch.randn(rows, vocab, generator=generator)
    shift = spread * torch.randn(rows, experts, vocab, generator=generator)
    return large, small, small[:, None, :] + shift


def zeros(rows: int, experts: int) -> torch.Tensor:
    return torch.zeros(rows, experts)


# -- the closed forms --------------------------------------------------------------------


def test_divergences_are_the_kls_of_the_fused_distribution() -> None:
    large, small, experts = logits(4, 50, 2, seed=1)
    problem = prepare(large, small, experts)
    alpha = torch.tensor([[0.3, 1.7]] * 4)
    f, g = divergences(problem, alpha)
    for t in range(2):
        fused = log_probs(large + alpha[:, t : t + 1] * problem.shift[:, t])
        torch.testing.assert_close(f[:, t], kl(fused, log_probs(large)), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(g[:, t], kl(log_probs(large), fused), atol=1e-5, rtol=1e-4)
    targets = (kl(log_probs(experts), log_probs(small)[:, None]), problem.target_f)
    torch.testing.assert_close(*targets)


@pytest.mark.parametrize("point", [0.05, 0.4, 1.0, 1.9])
def test_derivatives_match_finite_differences(point: float) -> None:
    """Property 7: f' = a Var~[d], g' = E~[d] - E_P[d] (and the second derivatives)."""
    large, small, experts = (x.double() for x in logits(6, 80, 2, seed=7, spread=1.5))
    problem = prepare(large, small, experts)
    alpha, h = torch.full((6, 2), point, dtype=torch.float64), 1e-5
    at, up, down = (
        evaluate(problem, alpha),
        evaluate(problem, alpha + h),
        evaluate(problem, alpha - h),
    )
    for value, slope, name in [(at.f, at.df, "f"), (at.g, at.dg, "g")]:
        upper, lower = (up.f, down.f) if name == "f" else (up.g, down.g)
        torch.testing.assert_close(slope, (upper - lower) / (2 * h), rtol=1e-6, atol=1e-9)
        assert torch.all(slope >= 0), f"{name} must be non-decreasing for a >= 0"
        assert torch.all(value >= -1e-12)
    torch.testing.assert_close(at.d2f, (up.df - down.df) / (2 * h), rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(at.d2g, (up.dg - down.dg) / (2 * h), rtol=1e-5, atol=1e-8)


def test_fusion_is_eq4() -> None:
    large, small, experts = logits(3, 40, 2, seed=2)
    problem = prepare(large, small, experts)
    alpha = torch.tensor([[0.5, 0.0], [0.0, 1.2], [0.3, 0.9]])
    expected = log_probs(large) + sum(
        alpha[:, t : t + 1] * (log_probs(experts[:, t]) - log_probs(small)) for t in range(2)
    )
    torch.testing.assert_close(fused_logits(problem, alpha), expected)


# -- bracketed vs grid vs a plain loop (property 4) ---------------------------------------


@pytest.mark.parametrize("experts", [1, 3])
def test_grid_agrees_with_a_plain_loop(experts: int) -> None:
    large, small, shifted = logits(24, 60, experts, seed=11)
    solver = GridSolver()
    alpha = solver(prepare(large, small, shifted), zeros(24, experts))
    reference = loop_grid(large, small, shifted, solver.grid)
    for row, (index, value) in enumerate(reference):
        expected = torch.zeros(experts)
        expected[index] = value
        torch.testing.assert_close(alpha[row], expected, msg=f"row {row}")


@pytest.mark.parametrize(("spread", "seed"), [(0.3, 1), (1.0, 2), (2.5, 3), (6.0, 4)])
def test_bracketed_matches_grid_within_its_resolution(spread: float, seed: int) -> None:
    large, small, experts = logits(128, 200, 1, seed=seed, spread=spread)
    problem = prepare(large, small, experts)
    grid = GridSolver()(problem, zeros(128, 1))
    bracketed = BracketedSolver()(problem, zeros(128, 1))
    assert torch.all((bracketed - grid).abs() <= 0.1 + 1e-6)
    # ...and it is at least as good as the grid's point on the loss it minimises.
    ours, theirs = (
        loss(problem, *divergences(problem, bracketed)),
        loss(problem, *divergences(problem, grid)),
    )
    assert torch.all(ours <= theirs + 1e-5 * (1 + theirs))


def test_bracketed_with_several_experts_is_at_least_as_good_as_grid() -> None:
    large, small, experts = logits(64, 120, 3, seed=5)
    problem = prepare(large, small, experts)
    grid = GridSolver()(problem, zeros(64, 3))
    bracketed = BracketedSolver()(problem, zeros(64, 3))
    assert torch.all((bracketed > 0).sum(-1) <= 1), "one expert at a time"

    def best(alpha: torch.Tensor) -> torch.Tensor:
        return loss(problem, *divergences(problem, alpha)).gather(
            -1, alpha.argmax(-1, keepdim=True)
        )

    assert torch.all(best(bracketed) <= best(grid) + 1e-5 * (1 + best(grid)))


def test_the_grid_is_the_papers() -> None:
    grid = GridSolver().grid
    assert len(grid) == 21 and grid[0] == 0.0 and grid[10] == 1.0 and grid[-1] == 2.0


# -- invariances (properties 3 and 6) ----------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: s.name)
def test_shifting_any_models_logits_per_row_changes_nothing(solver: Solver) -> None:
    large, small, experts = logits(16, 100, 2, seed=3)
    generator = torch.Generator().manual_seed(9)

    def offset(x: torch.Tensor) -> torch.Tensor:
        return x + 20.0 * torch.randn(*x.shape[:-1], 1, generator=generator)

    base = prepare(large, small, experts)
    moved = prepare(offset(large), offset(small), offset(experts))
    alpha, alpha_moved = solver(base, zeros(16, 2)), solver(moved, zeros(16, 2))
    torch.testing.assert_close(alpha_moved, alpha, atol=1e-4, rtol=0)
    fused, fused_moved = fused_logits(base, alpha), fused_logits(moved, alpha_moved)
    assert torch.equal(fused.argmax(-1), fused_moved.argmax(-1))


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: s.name)
def test_copies_of_one_expert_give_the_single_expert_result(solver: Solver) -> None:
    large, small, experts = logits(16, 100, 1, seed=4)
    single = prepare(large, small, experts)
    copies = prepare(large, small, experts.expand(16, 3, 100).contiguous())
    one, three = solver(single, zeros(16, 1)), solver(copies, zeros(16, 3))
    if solver.name == "static":  # proxy-tuning adds every expert's shift
        torch.testing.assert_close(three, one.expand(16, 3))
        return
    torch.testing.assert_close(three[:, :1], one)
    assert torch.all(three[:, 1:] == 0), "ties go to the first expert"
    torch.testing.assert_close(fused_logits(copies, three), fused_logits(single, one))


# -- identity, null expert, degenerate steps ----------------------------------------------


@pytest.mark.parametrize("solver", [BracketedSolver(), GridSolver()], ids=lambda s: s.name)
def test_identity_picks_one(solver: Solver) -> None:
    """Large = small base: the large model must move exactly as far as the expert did."""
    large, _, experts = logits(32, 100, 1, seed=6, spread=2.0)
    alpha = solver(prepare(large, large, experts), zeros(32, 1))
    torch.testing.assert_close(alpha, torch.ones(32, 1), atol=1e-4, rtol=0)


@pytest.mark.parametrize("solver", [BracketedSolver(), GridSolver()], ids=lambda s: s.name)
def test_a_null_expert_keeps_the_previous_weight(solver: Solver) -> None:
    large, small, _ = logits(8, 100, 1, seed=8)
    problem = prepare(large, small, small[:, None, :])
    assert torch.equal(solver(problem, zeros(8, 1)), zeros(8, 1))
    previous = torch.full((8, 1), 0.6)
    assert torch.equal(solver(problem, previous), previous)


def test_near_one_hot_rows_keep_the_previous_weights_and_others_do_not() -> None:
    large, small, experts = logits(2, 50, 1, seed=10)
    peaked = torch.full((50,), -80.0)
    peaked[3] = 80.0
    large[0], small[0], experts[0, 0] = peaked, peaked, peaked + 0.01 * torch.arange(50.0)
    previous = torch.tensor([[1.3], [1.3]])
    for solver in (BracketedSolver(), GridSolver()):
        alpha = solver(prepare(large, small, experts), previous)
        assert alpha[0, 0] == 1.3
        assert alpha[1, 0] != 1.3


def test_ties_between_experts_go_to_the_lowest_index() -> None:
    alpha = torch.tensor([[0.5, 0.7, 0.9], [0.5, 0.7, 0.9]])
    losses = torch.tensor([[2.0, 1.0, 1.0], [1.0, 1.0, 3.0]])
    expected = torch.tensor([[0.0, 0.7, 0.0], [0.5, 0.0, 0.0]])
    assert torch.equal(one_hot_choice(alpha, losses), expected)


def test_masked_ids_get_no_probability_and_no_weight() -> None:
    large, small, experts = logits(4, 30, 1, seed=12)
    mask = torch.ones(30, dtype=torch.bool)
    mask[[5, 29]] = False
    problem = prepare(large, small, experts, mask)
    alpha = BracketedSolver()(problem, zeros(4, 1))
    fused = fused_logits(problem, alpha)
    assert torch.all(torch.isfinite(alpha))
    assert torch.all(fused[:, ~mask] == float("-inf")) and torch.all(torch.isfinite(fused[:, mask]))
    # Masking equals dropping those ids altogether.
    keep = mask.nonzero()[:, 0]
    dropped = prepare(large[:, keep], small[:, keep], experts[..., keep])
    torch.testing.assert_close(alpha, BracketedSolver()(dropped, zeros(4, 1)), atol=1e-5, rtol=0)


def test_static_is_proxy_tuning() -> None:
    large, small, experts = logits(3, 20, 2, seed=13)
    problem = prepare(large, small, experts)
    assert torch.equal(StaticSolver()(problem, zeros(3, 2)), torch.ones(3, 2))
    assert torch.equal(StaticSolver(0.25)(problem, zeros(3, 2)), torch.full((3, 2), 0.25))


def test_build_solver_by_name() -> None:
    assert isinstance(build_solver("bracketed"), BracketedSolver)
    assert isinstance(build_solver("grid", alpha_max=1.5), GridSolver)
    static = build_solver("static", alpha=0.5)
    assert isinstance(static, StaticSolver) and static.alpha == 0.5
    with pytest.raises(ValueError, match="unknown solver"):
        build_solver("newton")
    with pytest.raises(ValueError, match=r"multiple of 0\.1"):
        GridSolver(alpha_max=1.05)
