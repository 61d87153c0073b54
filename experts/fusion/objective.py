"""What dynamic logit fusion matches, in closed form (Fan et al., 2024, "On Giant's
Shoulders: Effortless Weak to Strong by Dynamic Logits Fusion", §3).

Notation (every tensor in log-space, float32 unless the caller hands float64):

- z_L, P = softmax(z_L): the large base model; z_S, Q: the small base; z_t, Q_t: expert t.
- d_t = z_t - z_S: expert t's shift. The fused distribution (Eq. 4) is
  P~ = softmax(z_L + sum_t a_t d_t).
- For one expert at weight a: f(a) = KL(P~ || P) and g(a) = KL(P || P~). Eq. 3 asks for the
  a >= 0 that makes them equal to the expert's own move, KL(Q_t || Q) and KL(Q || Q_t).

With A(a) = logsumexp(z_L + a d) and E~ the expectation under P~:

    f(a) = a E~[d] - (A(a) - A(0))        f'(a) = a Var~[d]      f''(a) = Var~[d] + a M3~[d]
    g(a) = (A(a) - A(0)) - a E_P[d]       g'(a) = E~[d] - E_P[d]  g''(a) = Var~[d]

so f and g are non-decreasing for a >= 0 and one pass over the vocabulary gives both with
their first two derivatives. Every function here is vectorised over the leading dimensions
(rows, experts) and syncs nothing to the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Tensor = torch.Tensor


@dataclass(frozen=True, slots=True)
class FusionProblem:
    """One decoding step of B rows with T experts over V ids, ready for a solver."""

    large: Tensor  # z_L as log-probabilities, [B, 1, V] (broadcasts over experts)
    large_norm: Tensor  # A(0) = logsumexp(z_L), [B, 1] (zero up to rounding)
    shift: Tensor  # d_t = z_t - z_S, [B, T, V]; 0 on masked ids
    shift_mean: Tensor  # E_P[d_t], [B, T]
    powers: Tensor  # rows 1, c, c^2, c^3 with c = d_t - E_P[d_t], [B, T, 4, V]
    target_f: Tensor  # KL(Q_t || Q), [B, T]
    target_g: Tensor  # KL(Q || Q_t), [B, T]

    @property
    def rows(self) -> int:
        return int(self.shift.shape[0])

    @property
    def experts(self) -> int:
        return int(self.shift.shape[1])


@dataclass(frozen=True, slots=True)
class Evaluation:
    """f, g and their first two derivatives at the weights evaluated, each [B, T]."""

    f: Tensor
    g: Tensor
    df: Tensor
    dg: Tensor
    d2f: Tensor
    d2g: Tensor


def log_probs(logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """Log-softmax over the last dimension in float32 (float64 stays); masked ids get -inf."""
    if logits.dtype != torch.float64:
        logits = logits.float()
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return torch.log_softmax(logits, dim=-1)


def kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) over the last dimension, from log-probabilities (0 log 0 = 0)."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(dim=-1)


def _dot(rows: Tensor, weights: Tensor) -> Tensor:
    """sum_v rows[..., k, v] * weights[..., v] as one batched matrix product, [..., k]."""
    return torch.einsum("...kv,...v->...k", rows, weights)


def prepare(
    large: Tensor, small: Tensor, experts: Tensor, mask: Tensor | None = None
) -> FusionProblem:
    """The step's problem from raw logits: large and small [B, V], experts [B, T, V].

    Logits are normalised first, so adding a constant to any row of any model changes
    nothing. `mask` ([V], bool) marks the ids every tokenizer shares; the others get -inf.
    The KL targets use KL(Q_t || Q) = E_Qt[d_t] and KL(Q || Q_t) = -E_Q[d_t].
    """
    z_large = log_probs(large, mask)[:, None, :]
    z_small = log_probs(small, mask)[:, None, :]
    z_experts = log_probs(experts, mask)
    shift = z_experts - z_small
    if mask is not None:
        shift = torch.where(mask, shift, torch.zeros_like(shift))
    shift_mean = _dot(shift[..., None, :], z_large.exp().expand_as(shift))[..., 0]
    centred = shift - shift_mean[..., None]
    squared = centred * centred
    powers = torch.stack([torch.ones_like(shift), centred, squared, squared * centred], dim=-2)
    return FusionProblem(
        large=z_large,
        large_norm=torch.logsumexp(z_large, dim=-1),
        shift=shift,
        shift_mean=shift_mean,
        powers=powers,
        target_f=_dot(shift[..., None, :], z_experts.exp())[..., 0],
        target_g=-_dot(shift[..., None, :], z_small.exp().expand_as(shift))[..., 0],
    )


def evaluate(problem: FusionProblem, alpha: Tensor) -> Evaluation:
    """f, g, f', g', f'', g'' with expert t alone at weight alpha[b, t]: one vocabulary pass.

    The unnormalised weights exp(z_L + a d - max) meet the precomputed powers of the
    centred shift c in one batched product: their sums give A(a) and the moments of c
    under P~, so E~[d] - E_P[d] = E~[c] exactly and Var~, M3~ follow from the raw moments.
    """
    logits = torch.addcmul(problem.large, alpha[..., None], problem.shift)
    top = logits.amax(dim=-1, keepdim=True)
    sums = _dot(problem.powers, logits.sub_(top).exp_())  # [B, T, 4]
    total = sums[..., 0]
    mean, second, third = (sums[..., k] / total for k in (1, 2, 3))
    moved = top[..., 0] + total.log() - problem.large_norm  # A(a) - A(0)
    variance = (second - mean * mean).clamp(min=0)
    skew = third - 3 * mean * second + 2 * mean * mean * mean
    return Evaluation(
        f=alpha * (problem.shift_mean + mean) - moved,
        g=moved - alpha * problem.shift_mean,
        df=alpha * variance,
        dg=mean,
        d2f=variance + alpha * skew,
        d2g=variance,
    )


def divergences(problem: FusionProblem, alpha: Tensor) -> tuple[Tensor, Tensor]:
    """Only f and g at alpha (what a grid search needs), each [B, T]."""
    at = evaluate(problem, alpha)
    return at.f, at.g


def mean_targets(problem: FusionProblem) -> tuple[Tensor, Tensor]:
    """The experts' mean KL targets, [B, 1] each.

    Summing Eq. 3's squared gaps over the experts equals, up to a constant, T times the
    squared gap to their mean: sum_t (f - f_t)^2 = T (f - mean_t f_t)^2 + const.
    """
    return (
        problem.target_f.mean(dim=-1, keepdim=True),
        problem.target_g.mean(dim=-1, keepdim=True),
    )


def loss(problem: FusionProblem, f: Tensor, g: Tensor) -> Tensor:
    """Eq. 3 (summed over the experts, through their mean targets), [B, T]."""
    target_f, target_g = mean_targets(problem)
    return (f - target_f) ** 2 + (g - target_g) ** 2


def slope_and_curvature(problem: FusionProblem, at: Evaluation) -> tuple[Tensor, Tensor]:
    """The loss's first and second derivatives in a, from the closed forms above."""
    target_f, target_g = mean_targets(problem)
    gap_f, gap_g = at.f - target_f, at.g - target_g
    slope = 2.0 * (gap_f * at.df + gap_g * at.dg)
    curvature = 2.0 * (at.df * at.df + gap_f * at.d2f + at.dg * at.dg + gap_g * at.d2g)
    return slope, curvature


def fused_logits(problem: FusionProblem, alpha: Tensor) -> Tensor:
    """Eq. 4: z_L + sum_t a_t (z_t - z_S), [B, V] (log-space; masked ids stay -inf)."""
    return problem.large[:, 0, :] + (alpha[..., None] * problem.shift).sum(dim=1)
