"""Weight solvers: the a_t of Eq. 4 for every row at one step, vectorised over rows.

- `GridSolver`: the paper's brute force, a in [0, a_max] in steps of 0.1 (paper-faithful; the
  reference in tests).
- `BracketedSolver` (the default): a coarse scan, then safeguarded Newton on the loss's slope,
  with the closed-form derivatives f' = a Var~[d] and g' = E~[d] - E_P[d] (see `objective`);
  a fixed number of vocabulary passes (8 by default), no host sync. Matches `grid` within
  the grid's step.
- `StaticSolver`: proxy-tuning (Liu et al., 2024), a fixed a for every expert.

Several experts are searched one at a time (a one-hot over experts, as the paper does) and
the best is kept, against the summed Eq. 3 loss; ties go to the lowest expert index.
Degenerate steps, where every KL in play is below `eps` (near one-hot distributions), keep
the previous weights.
"""

from __future__ import annotations

from typing import Protocol

import torch

from experts.fusion.objective import (
    Evaluation,
    FusionProblem,
    Tensor,
    divergences,
    evaluate,
    loss,
    slope_and_curvature,
)

DEFAULT_ALPHA_MAX = 2.0
GRID_STEP = 0.1
DEFAULT_EPS = 1e-6
DEFAULT_ITERATIONS = 4
DEFAULT_COARSE = 4
TIE_TOLERANCE = 1e-6  # relative: experts whose losses are this close count as tied


class Solver(Protocol):
    """Chooses the weights [B, T] for one step, given the previous step's weights."""

    @property
    def name(self) -> str: ...

    def __call__(self, problem: FusionProblem, previous: Tensor) -> Tensor: ...


class StaticSolver:
    """Proxy-tuning: every expert at the fixed weight `alpha` (default 1.0)."""

    name = "static"

    def __init__(self, alpha: float = 1.0) -> None:
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.alpha = alpha

    def __call__(self, problem: FusionProblem, previous: Tensor) -> Tensor:
        return torch.full_like(problem.target_f, self.alpha)


class GridSolver:
    """The paper's search: every a on the grid 0, 0.1, ..., a_max for each expert (Eq. 3)."""

    name = "grid"

    def __init__(
        self,
        alpha_max: float = DEFAULT_ALPHA_MAX,
        step: float = GRID_STEP,
        eps: float = DEFAULT_EPS,
    ) -> None:
        points = round(alpha_max / step)
        if points < 1 or abs(points * step - alpha_max) > 1e-9:
            raise ValueError(f"alpha_max {alpha_max} is not a positive multiple of {step}")
        self.grid = [k * alpha_max / points for k in range(points + 1)]
        self.eps = eps

    def __call__(self, problem: FusionProblem, previous: Tensor) -> Tensor:
        losses, last = [], None
        for point in self.grid:
            alpha = torch.full_like(problem.target_f, point)
            last = divergences(problem, alpha)
            losses.append(loss(problem, *last))
        assert last is not None
        stacked = torch.stack(losses, dim=-1)  # [B, T, K]
        best = stacked.argmin(dim=-1)  # the first (smallest a) among equal losses
        grid = _on_device(self.grid, stacked)
        chosen = one_hot_choice(grid[best], stacked.gather(-1, best[..., None])[..., 0])
        return keep_when_degenerate(chosen, previous, problem, *last, eps=self.eps)


class BracketedSolver:
    """A coarse scan, then safeguarded Newton on dL/da inside the best cell (Eq. 3).

    L(a) = (f - f*)^2 + (g - g*)^2, with f and g non-decreasing, falls while both are below
    their targets and rises once both are above; in between it is almost always unimodal.
    The scan (`coarse` points, spacing a_max / coarse) picks the basin of the lowest value;
    the slope's sign there says which neighbouring cell holds the minimum. Each iteration
    then takes the Newton step when it stays inside the bracket and the curvature is
    positive, else bisects, and shrinks the bracket by the slope's sign. The scan's points
    and every iteration cost one vocabulary pass (f, g, f', g', f'', g'' together).
    """

    name = "bracketed"

    def __init__(
        self,
        alpha_max: float = DEFAULT_ALPHA_MAX,
        iterations: int = DEFAULT_ITERATIONS,
        eps: float = DEFAULT_EPS,
        coarse: int = DEFAULT_COARSE,
    ) -> None:
        if alpha_max <= 0 or iterations < 1 or coarse < 1:
            raise ValueError("alpha_max must be > 0, iterations and coarse >= 1")
        self.alpha_max, self.iterations, self.eps = alpha_max, iterations, eps
        self.points = [alpha_max * k / coarse for k in range(coarse + 1)]

    def __call__(self, problem: FusionProblem, previous: Tensor) -> Tensor:
        alpha, slope, curvature, low, high, top = self._scan(problem)
        alpha, low, high = _safeguarded(alpha, slope, curvature, low, high)
        for _ in range(self.iterations):
            slope, curvature = slope_and_curvature(problem, evaluate(problem, alpha))
            alpha, low, high = _safeguarded(alpha, slope, curvature, low, high)
        if problem.experts > 1:
            alpha = one_hot_choice(alpha, loss(problem, *divergences(problem, alpha)))
        return keep_when_degenerate(alpha, previous, problem, top.f, top.g, eps=self.eps)

    def _scan(
        self, problem: FusionProblem
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Evaluation]:
        """The best scan point per row and expert, its slope and curvature, and its cell."""
        zeros = torch.zeros_like(problem.target_f)
        losses, slopes, curvatures = [loss(problem, zeros, zeros)], [zeros], [zeros]
        top: Evaluation | None = None
        for point in self.points[1:]:
            top = evaluate(problem, torch.full_like(zeros, point))
            slope, curvature = slope_and_curvature(problem, top)
            losses.append(loss(problem, top.f, top.g))
            slopes.append(slope)
            curvatures.append(curvature)
        assert top is not None
        best = torch.stack(losses, dim=-1).argmin(dim=-1, keepdim=True)
        grid = _on_device(self.points, zeros)
        last = len(self.points) - 1
        slope = torch.stack(slopes, dim=-1).gather(-1, best)[..., 0]
        curvature = torch.stack(curvatures, dim=-1).gather(-1, best)[..., 0]
        best = best[..., 0]
        falling = slope <= 0  # at 0 the slope is exactly 0 and L falls just after
        low = torch.where(falling, grid[best], grid[(best - 1).clamp(min=0)])
        high = torch.where(falling, grid[(best + 1).clamp(max=last)], grid[best])
        return grid[best], slope, curvature, low, high, top


_CONSTANTS: dict[tuple[tuple[float, ...], torch.dtype, torch.device], Tensor] = {}


def _on_device(values: list[float], like: Tensor) -> Tensor:
    """`values` as a tensor beside `like`, made once: a copy from the host inside a step
    would stall it, and cannot be recorded in a CUDA graph."""
    key = (tuple(values), like.dtype, like.device)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = torch.tensor(values, dtype=like.dtype, device=like.device)
    return _CONSTANTS[key]


def _safeguarded(
    alpha: Tensor, slope: Tensor, curvature: Tensor, low: Tensor, high: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """One safeguarded Newton step on the slope: shrink the bracket, step or bisect."""
    low = torch.where(slope <= 0, torch.maximum(low, alpha), low)
    high = torch.where(slope >= 0, torch.minimum(high, alpha), high)
    safe = torch.where(curvature > 0, curvature, torch.ones_like(curvature))
    step = alpha - slope / safe
    inside = (curvature > 0) & (step >= low) & (step <= high)
    return torch.where(inside, step, 0.5 * (low + high)), low, high


def one_hot_choice(alpha: Tensor, losses: Tensor) -> Tensor:
    """Keep only the expert with the lowest loss per row (ties: the lowest index), [B, T]."""
    if alpha.shape[-1] == 1:
        return alpha
    best = losses.min(dim=-1, keepdim=True).values
    near = losses <= best + TIE_TOLERANCE * (1.0 + best.abs())
    index = near.to(torch.int32).argmax(dim=-1, keepdim=True)  # the first tied expert
    return torch.zeros_like(alpha).scatter(-1, index, alpha.gather(-1, index))


def keep_when_degenerate(
    alpha: Tensor,
    previous: Tensor,
    problem: FusionProblem,
    f_top: Tensor,
    g_top: Tensor,
    eps: float,
) -> Tensor:
    """Rows where every KL (the experts' targets, and f, g at a_max) is below eps keep `previous`.

    f and g are non-decreasing, so below eps at a_max means below eps for every a searched.
    """
    every = torch.stack([problem.target_f, problem.target_g, f_top, g_top], dim=-1)
    degenerate = every.amax(dim=(-1, -2)) < eps  # [B]
    return torch.where(degenerate[:, None], previous, alpha)


def build_solver(
    name: str, alpha: float | None = None, alpha_max: float = DEFAULT_ALPHA_MAX
) -> Solver:
    """The solver a spec names: `bracketed`, `grid` or `static`."""
    if name == "bracketed":
        return BracketedSolver(alpha_max)
    if name == "grid":
        return GridSolver(alpha_max)
    if name == "static":
        return StaticSolver(1.0 if alpha is None else alpha)
    raise ValueError(f"unknown solver {name!r}; expected bracketed, grid or static")
