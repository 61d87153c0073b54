"""Plain reference implementations the tests compare the fusion code against."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from experts.decoding import LogitsTransform
from experts.fusion.objective import fused_logits, prepare
from experts.fusion.solvers import Solver

Tensor = torch.Tensor


def loop_grid(
    large: Tensor, small: Tensor, experts: Tensor, grid: Sequence[float]
) -> list[tuple[int, float]]:
    """The paper's search written as loops over rows, experts and grid points, in float64,
    with the KLs from their definitions: per row, (expert index, a) of the first minimum of
    sum_t' (KL(P~||P) - KL(Q_t'||Q))^2 + (KL(P||P~) - KL(Q||Q_t'))^2."""

    def kl(p: Tensor, q: Tensor) -> float:
        return float((p * (p.log() - q.log())).sum())

    choices = []
    for row in range(large.shape[0]):
        p = torch.softmax(large[row].double(), -1)
        q = torch.softmax(small[row].double(), -1)
        qs = [torch.softmax(experts[row, t].double(), -1) for t in range(experts.shape[1])]
        best: tuple[float, int, float] | None = None
        for t in range(experts.shape[1]):
            shift = experts[row, t].double().log_softmax(-1) - small[row].double().log_softmax(-1)
            for a in grid:
                fused = torch.softmax(large[row].double().log_softmax(-1) + a * shift, -1)
                f, g = kl(fused, p), kl(p, fused)
                value = sum((f - kl(qt, q)) ** 2 + (g - kl(q, qt)) ** 2 for qt in qs)
                if best is None or value < best[0]:
                    best = (value, t, a)
        assert best is not None
        choices.append((best[1], best[2]))
    return choices


Model = Callable[[Tensor], Tensor]  # full token ids [1, L] -> next-token logits [1, V]


def greedy_without_cache(
    models: Sequence[Model],
    solver: Solver | None,
    prompt: Sequence[int],
    steps: int,
    transforms: Sequence[LogitsTransform] = (),
) -> tuple[list[int], list[list[float]]]:
    """Recompute every member on the whole sequence at every step (no KV cache), fuse with
    `solver` (None: decode the first model alone), apply `transforms`, take the argmax."""
    ids, tokens, alphas = list(prompt), [], []
    previous = torch.zeros((1, max(len(models) - 2, 0)))
    for _ in range(steps):
        with torch.inference_mode():
            logits = [model(torch.tensor([ids])) for model in models]
        if solver is None:
            scores = logits[0]
        else:
            problem = prepare(logits[0], logits[1], torch.stack(logits[2:], dim=1))
            previous = solver(problem, previous)
            scores = fused_logits(problem, previous)
            alphas.append(previous[0].tolist())
        for transform in transforms:
            scores = transform(torch.tensor([ids]), scores)
        token = int(scores.argmax(-1))
        ids.append(token)
        tokens.append(token)
    return tokens, alphas


def last_logits(model: torch.nn.Module) -> Model:
    def run(ids: Tensor) -> Tensor:
        out: Tensor = model(input_ids=ids).logits[:, -1, :]
        return out

    return run
