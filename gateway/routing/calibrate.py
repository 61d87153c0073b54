"""Calibration: from held-out predictions to the head's combination and operating point.

Held-out data are items the head did not see: the folds of the exemplars, or a
validation set. Each has the head's logits, the similarity evidence, and its label (an
expert index, or -1 for out of scope: a negative example, or an expert held out of the
fold).

The decision rule (the router applies the same one per request): dispatch the expert
with the largest share when the probability that some expert fits (`in_scope`) clears
`threshold` and that expert's share leads the runner-up's by `margin`.

An operating point is chosen for a target:

* `oos_recall: r` - at least r of the held-out out-of-scope items fall below the
  threshold; among such points the one that dispatches most in-scope items correctly.
  An out-of-scope item that clears the threshold but not the margin is not counted as
  turned away: asking "A or B?" is the wrong answer to a request for neither, and
  counting it let the calibration lean on clarifications that held on validation data
  but not on new requests (CLINC150: 0.86 out-of-scope recall on test for a 0.95 target
  on val, against 0.90 without);
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

from gateway.routing.head import (
    GATE_FEATURES,
    Combination,
    Floats,
    Gate,
    Ints,
    combine,
    gate_features,
)

logger = logging.getLogger(__name__)

Bools = NDArray[np.bool_]
MARGINS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
GAMMAS: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 5.0, 8.0)
# Inverse regularisation of the gate's logistic regression (on standardised features).
GATE_C = 1.0


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
    logits: Floats  # [n, n_experts (+1)]
    similarities: Floats  # [n, n_experts]
    labels: Ints  # [n]; -1: out of scope
    has_none: bool

    @property
    def has_negatives(self) -> bool:
        return bool(np.any(self.labels < 0))


def lead(shares: NDArray[np.floating]) -> tuple[Ints, NDArray[np.float64]]:
    """The expert with the largest share, and its share's lead over the runner-up's."""
    order = np.argsort(-shares, axis=1, kind="stable")
    rows = np.arange(len(shares))
    best = shares[rows, order[:, 0]]
    second = shares[rows, order[:, 1]] if shares.shape[1] > 1 else np.zeros(len(shares))
    return order[:, 0], np.asarray(best - second, dtype=np.float64)


def dispatched(
    score: NDArray[np.floating], gap: NDArray[np.floating], threshold: float, margin: float
) -> Bools:
    result: Bools = (score >= threshold) & (gap >= margin)
    return result


def choose_point(
    score: NDArray[np.floating],
    gap: NDArray[np.floating],
    correct: Bools,
    negative: Bools,
    target: Target,
) -> OperatingPoint:
    """The operating point (threshold on `score`, margin on `gap`) that meets `target`
    best on these items."""
    candidates = [_best_threshold(score, gap, correct, negative, target, m) for m in MARGINS]
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
    score: NDArray[np.floating],
    gap: NDArray[np.floating],
    correct: Bools,
    negative: Bools,
    target: Target,
    margin: float,
) -> OperatingPoint:
    """Sweep the threshold over the scores (ties grouped) at a fixed margin."""
    eligible = gap >= margin
    order = np.argsort(-score, kind="stable")
    scores = score[order]
    # Dispatch every item down to position i: cumulative counts at the end of tie groups.
    ends = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))
    hits = np.cumsum((eligible & correct)[order])[ends]
    sent = np.cumsum(eligible[order])[ends]
    # Out-of-scope items count as turned away only when below the threshold (see above).
    wrong_out = np.cumsum(negative[order])[ends]
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


def _between(scores: NDArray[np.floating], ends: Ints, pick: int) -> float:
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


def fit_combination(held: HeldOut, gamma: float, gate: Gate | None = None) -> Combination:
    """The temperature `alpha` for a given `gamma`, by the log-likelihood of the held-out
    in-scope labels among the experts, and the gate (`gate`, else see `fit_gate`).

    `alpha` stays within [0.05, 5] (perfectly separated held-out data would push it to
    infinity).
    """
    from scipy.optimize import minimize_scalar

    n_experts = held.similarities.shape[1]
    inside = held.labels >= 0
    logits, sims, labels = held.logits[inside], held.similarities[inside], held.labels[inside]
    rows = np.arange(len(labels))
    no_gate = Gate(combined=0.0)

    def loss(log_alpha: float) -> float:
        mix = Combination(float(np.exp(log_alpha)), gamma, no_gate)
        shares = combine(logits, sims, held.has_none, mix).shares
        return float(-np.log(shares[rows, labels] + 1e-12).mean())

    alpha = 1.0
    if len(labels):
        bounds = (float(np.log(0.05)), float(np.log(5.0)))
        found = minimize_scalar(loss, bounds=bounds, method="bounded", options={"xatol": 1e-3})
        alpha = round(float(np.exp(found.x)), 6)
    if gate is None and held.has_negatives:
        gate = fit_gate(held)
    elif gate is None:  # nothing to learn "none" from
        gate = Gate(bias=round(alpha * float(np.log(n_experts)), 6), combined=1.0)
    return Combination(alpha, gamma, gate)


def fit_gate(held: HeldOut) -> Gate:
    """A logistic regression of "in scope" on the gate's features of the held-out items,
    so `in_scope` is a probability calibrated to them."""
    from sklearn.linear_model import LogisticRegression

    features = gate_features(held.logits, held.similarities, held.has_none)
    if not held.has_none:
        features = features[:, :2]
    mean, spread = features.mean(axis=0), features.std(axis=0)
    spread = np.where(spread > 1e-9, spread, 1.0)
    inside = (held.labels >= 0).astype(np.int64)
    model = LogisticRegression(C=GATE_C, max_iter=1000)
    model.fit((features - mean) / spread, inside)
    weights = np.asarray(model.coef_, dtype=np.float64)[0] / spread
    bias = float(model.intercept_[0]) - float(weights @ mean)
    # Without a "none" column its weight stays 0.
    named = {k: round(float(w), 6) for k, w in zip(GATE_FEATURES, weights, strict=False)}
    return Gate(bias=round(bias, 6), combined=0.0, **named)


@dataclass(frozen=True, slots=True)
class Calibrated:
    mix: Combination
    point: OperatingPoint
    target: Target


def calibrate(held: HeldOut, target: Target, gammas: Sequence[float] = GAMMAS) -> Calibrated:
    """Pick gamma (how much the similarity evidence counts), fit alpha and the gate, and
    choose the operating point for `target`; gamma is chosen by that point's objective."""
    if target.kind == "oos_recall" and not held.has_negatives:
        raise ValueError("an oos_recall target needs out-of-scope items in the held-out data")
    results: list[Calibrated] = []
    gate = fit_gate(held) if held.has_negatives else None  # the same for every gamma
    for gamma in gammas:
        mix = fit_combination(held, gamma, gate)
        found = combine(held.logits, held.similarities, held.has_none, mix)
        choice, gap = lead(found.shares)
        correct = (choice == held.labels) & (held.labels >= 0)
        point = choose_point(found.in_scope, gap, correct, held.labels < 0, target)
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
