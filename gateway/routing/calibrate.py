"""Calibration: from held-out predictions to the head's combination and operating point.

Held-out data are items the head did not see: the folds of the exemplars, or a
validation set. Each has the head's log-probabilities, the similarity evidence, and its
label (an expert index, or -1 for out of scope: a negative example, or an expert held
out of the fold).

The decision rule (the router applies the same one per request): dispatch the best
expert when its probability clears `threshold` and leads the runner-up by `margin`.

An operating point is chosen for a target:

* `oos_recall: r` - at least r of the held-out out-of-scope items are not dispatched;
  among such points the one that dispatches most in-scope items correctly;
* `precision: p` - at least p of the dispatched items go to the right expert; among
  such points the one with the most correct dispatches.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from gateway.routing.head import Combination, Floats, Ints, combine

logger = logging.getLogger(__name__)

Bools = NDArray[np.bool_]
MARGINS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3)
GAMMAS: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 5.0, 8.0)


@dataclass(frozen=True, slots=True)
class Target:
    kind: Literal["oos_recall", "precision"]
    value: float

    def __str__(self) -> str:
        return f"{self.kind}={self.value:g}"


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    threshold: float
    margin: float
    # Measured on the held-out data at this point.
    in_scope_accuracy: float
    oos_recall: float | None
    precision: float
    met: bool


@dataclass(frozen=True, slots=True, eq=False)
class HeldOut:
    log_probs: Floats  # [n, n_experts (+1)]
    similarities: Floats  # [n, n_experts]
    labels: Ints  # [n]; -1: out of scope
    has_none: bool

    @property
    def has_negatives(self) -> bool:
        return bool(np.any(self.labels < 0))


def top_two(probs: Floats) -> tuple[Ints, Floats, Floats]:
    """Best expert, its probability and the runner-up's (the last column is "none")."""
    experts = probs[:, :-1]
    order = np.argsort(-experts, axis=1, kind="stable")
    rows = np.arange(len(experts))
    second = experts[rows, order[:, 1]] if experts.shape[1] > 1 else np.zeros(len(experts))
    return order[:, 0], experts[rows, order[:, 0]], np.asarray(second, dtype=np.float32)


def dispatched(best: Floats, second: Floats, threshold: float, margin: float) -> Bools:
    result: Bools = (best >= threshold) & (best - second >= margin)
    return result


def choose_point(
    best: Floats, second: Floats, correct: Bools, negative: Bools, target: Target
) -> OperatingPoint:
    """The operating point (threshold, margin) that meets `target` best on these items."""
    candidates = [_best_threshold(best, second, correct, negative, target, m) for m in MARGINS]
    met = [c for c in candidates if c.met]
    if met:
        return max(met, key=lambda c: (c.in_scope_accuracy, -c.margin))
    # Nothing meets the target: the point that comes closest to it.
    return max(candidates, key=lambda c: (_shortfall(c, target), -c.margin))


def _shortfall(point: OperatingPoint, target: Target) -> float:
    if target.kind == "oos_recall":
        return point.oos_recall if point.oos_recall is not None else 0.0
    return point.precision


def _best_threshold(
    best: Floats, second: Floats, correct: Bools, negative: Bools, target: Target, margin: float
) -> OperatingPoint:
    """Sweep the threshold over the scores (ties grouped) at a fixed margin."""
    eligible = best - second >= margin
    order = np.argsort(-best, kind="stable")
    scores = best[order]
    # Dispatch every item down to position i: cumulative counts at the end of tie groups.
    ends = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))
    hits = np.cumsum((eligible & correct)[order])[ends]
    sent = np.cumsum(eligible[order])[ends]
    wrong_out = np.cumsum((eligible & negative)[order])[ends]
    n_in, n_out = int((~negative).sum()), int(negative.sum())
    # Index 0 of each array: dispatch nothing.
    hits, sent, wrong_out = (np.concatenate([[0], a]) for a in (hits, sent, wrong_out))
    accuracy = hits / max(n_in, 1)
    # Dispatching nothing has no precision: it never meets a precision target.
    precision = np.where(sent > 0, hits / np.maximum(sent, 1), 0.0)
    recall = 1.0 - wrong_out / n_out if n_out else None
    if target.kind == "oos_recall":
        feasible = recall >= target.value if recall is not None else np.zeros_like(accuracy, bool)
    else:
        feasible = precision >= target.value
    if feasible.any():
        pick = int(np.flatnonzero(feasible)[np.argmax(accuracy[feasible])])
        met = True
    else:
        closest = recall if recall is not None and target.kind == "oos_recall" else precision
        pick, met = int(np.argmax(closest)), False
    threshold = _between(scores, ends, pick)
    return OperatingPoint(
        threshold=threshold,
        margin=margin,
        in_scope_accuracy=round(float(accuracy[pick]), 6),
        oos_recall=None if recall is None else round(float(recall[pick]), 6),
        precision=round(float(precision[pick]), 6),
        met=met,
    )


def _between(scores: Floats, ends: Ints, pick: int) -> float:
    """A threshold halfway between the last score dispatched and the first one not.

    `pick` 0 dispatches nothing; `pick` j dispatches the first j tie groups.
    """
    if pick == 0:
        return 1.000001
    last_in = float(scores[ends[pick - 1]])
    if pick == len(ends):  # everything is dispatched
        return max(0.0, last_in - 1e-6)
    first_out = float(scores[ends[pick - 1] + 1])
    return (last_in + first_out) / 2


def fit_combination(held: HeldOut, gamma: float) -> Combination:
    """Temperature `alpha` and none-bias `theta` for a given `gamma`, by the log-likelihood
    of the held-out labels (so the probabilities are calibrated to that data).

    `alpha` stays within [0.05, 5] (perfectly separated held-out data would push it to
    infinity). Without out-of-scope items `theta` cannot be learned; it is set so that a
    request with no evidence for any expert finds "none" as likely as each expert.
    """
    from scipy.optimize import minimize

    n_experts = held.similarities.shape[1]
    labels = np.where(held.labels < 0, n_experts, held.labels)
    rows = np.arange(len(labels))
    learn_theta = held.has_negatives

    def mix_of(params: NDArray[np.float64]) -> Combination:
        alpha = float(np.exp(params[0]))
        theta = float(params[1]) if learn_theta else -alpha * float(np.log(n_experts))
        return Combination(alpha=alpha, gamma=gamma, theta=theta)

    def loss(params: NDArray[np.float64]) -> float:
        p = combine(held.log_probs, held.similarities, held.has_none, mix_of(params))
        return float(-np.log(p[rows, labels].astype(np.float64) + 1e-12).mean())

    bounds = [(float(np.log(0.05)), float(np.log(5.0))), (-30.0, 30.0)][: 1 + learn_theta]
    start = np.zeros(len(bounds))
    options = {"xatol": 1e-3, "fatol": 1e-6}
    found = minimize(loss, start, method="Nelder-Mead", bounds=bounds, options=options)
    mix = mix_of(found.x)
    return Combination(round(mix.alpha, 6), gamma, round(mix.theta, 6))


@dataclass(frozen=True, slots=True)
class Calibrated:
    mix: Combination
    point: OperatingPoint
    target: Target


def calibrate(held: HeldOut, target: Target, gammas: Sequence[float] = GAMMAS) -> Calibrated:
    """Pick gamma (how much the similarity evidence counts), fit alpha and theta, and
    choose the operating point for `target`; gamma is chosen by that point's objective."""
    if target.kind == "oos_recall" and not held.has_negatives:
        raise ValueError("an oos_recall target needs out-of-scope items in the held-out data")
    results: list[Calibrated] = []
    for gamma in gammas:
        mix = fit_combination(held, gamma)
        probs = combine(held.log_probs, held.similarities, held.has_none, mix)
        choice, best, second = top_two(probs)
        correct = (choice == held.labels) & (held.labels >= 0)
        point = choose_point(best, second, correct, held.labels < 0, target)
        results.append(Calibrated(mix, point, target))
    met = [r for r in results if r.point.met]
    if met:
        return max(met, key=lambda r: (r.point.in_scope_accuracy, -r.mix.gamma))
    chosen = max(results, key=lambda r: (_shortfall(r.point, target), -r.mix.gamma))
    logger.warning(
        "routing target not met on held-out data",
        extra={"action": "calibrate", "target": str(target), "score": chosen.point.threshold},
    )
    return chosen
