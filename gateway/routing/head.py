"""The routing head: a linear classifier on frozen embeddings, and how its evidence is
combined with the exemplar similarities into one calibrated probability per expert.

The linear part is a multinomial logistic regression over the experts, with one more
class, "none", when negative (out-of-scope) examples are known. Its log-probabilities and
the similarity evidence `s_k` (the router's per-expert exemplar score, runtime exemplars
included) are combined as

    z_k    = alpha * (log p_head(k | x) + gamma * s_k)          for every expert k
    z_none = alpha *  log p_head(none | x) + theta              (theta alone without negatives)
    p      = softmax(z_1, ..., z_K, z_none)

so every expert's score is a probability, the scores and p(none) sum to one, and a
runtime exemplar that raises `s_k` raises that expert's probability coherently.
`alpha` (a temperature), `gamma` and `theta` are calibrated on held-out data
(`gateway.routing.calibrate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.float32]
Ints = NDArray[np.int64]
HEAD_VERSION = "1"
# The bias of an expert the head never saw (no exemplars in a fold): never its choice.
_ABSENT_BIAS = -30.0


@dataclass(frozen=True, slots=True)
class Combination:
    alpha: float = 1.0
    gamma: float = 0.0
    theta: float = 0.0


@dataclass(frozen=True, slots=True, eq=False)
class LinearHead:
    """Logits `x @ weights + bias`; columns are the experts, then "none" if `has_none`."""

    weights: Floats  # [dim, n_experts (+1)]
    bias: Floats  # [n_experts (+1)]
    has_none: bool

    @property
    def n_experts(self) -> int:
        return int(self.bias.shape[0]) - int(self.has_none)

    def log_probs(self, vectors: Floats) -> Floats:
        """Log-softmax of the logits, [n, n_experts (+1)]."""
        logits = np.asarray(vectors, dtype=np.float32).reshape(-1, self.weights.shape[0])
        logits = logits @ self.weights + self.bias
        logits = logits - logits.max(axis=1, keepdims=True)
        out: Floats = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return out.astype(np.float32, copy=False)


def fit_linear(
    vectors: Floats,
    targets: Ints,
    n_experts: int,
    *,
    c: float,
    max_iter: int = 300,
    with_none: bool | None = None,
) -> LinearHead:
    """Multinomial logistic regression; `targets` are expert indices, -1 for "none".

    An expert without examples gets a column that never wins. "none" is a column when
    `with_none` (default: when some target is -1).
    """
    from sklearn.linear_model import LogisticRegression

    has_none = bool(np.any(targets < 0)) if with_none is None else with_none
    present = np.unique(targets)
    columns = n_experts + int(has_none)
    weights = np.zeros((vectors.shape[1], columns), dtype=np.float32)
    bias = np.full(columns, _ABSENT_BIAS, dtype=np.float32)
    if len(present) == 1:  # one class only: it always wins
        bias[_column(int(present[0]), n_experts)] = 0.0
        return LinearHead(weights, bias, has_none)
    model = LogisticRegression(C=c, max_iter=max_iter)
    model.fit(vectors, targets)
    coef = np.asarray(model.coef_, dtype=np.float32)
    intercept = np.asarray(model.intercept_, dtype=np.float32)
    if coef.shape[0] == 1:  # binary: sklearn keeps one row for the second class
        coef = np.concatenate([-coef / 2, coef / 2])
        intercept = np.concatenate([-intercept / 2, intercept / 2])
    for row, label in enumerate(model.classes_):
        column = _column(int(label), n_experts)
        weights[:, column] = coef[row]
        bias[column] = intercept[row]
    return LinearHead(weights, bias, has_none)


def _column(label: int, n_experts: int) -> int:
    return n_experts if label < 0 else label


def combine(log_probs: Floats, similarities: Floats, has_none: bool, mix: Combination) -> Floats:
    """Probabilities [n, n_experts + 1]; the last column is p(none)."""
    n_experts = similarities.shape[1]
    lp = np.asarray(log_probs, dtype=np.float64).reshape(-1, n_experts + int(has_none))
    sims = np.asarray(similarities, dtype=np.float64).reshape(-1, n_experts)
    z = np.empty((lp.shape[0], n_experts + 1), dtype=np.float64)
    z[:, :n_experts] = mix.alpha * (lp[:, :n_experts] + mix.gamma * sims)
    z[:, n_experts] = mix.theta + (mix.alpha * lp[:, n_experts] if has_none else 0.0)
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    out: Floats = (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
    return out


@dataclass(frozen=True, slots=True, eq=False)
class ProbabilityHead:
    """What the router asks at request time: the probability of each expert and of none."""

    linear: LinearHead
    mix: Combination

    def probabilities(self, vector: Floats, similarities: Sequence[float] | Floats) -> Floats:
        sims = np.asarray(similarities, dtype=np.float32).reshape(1, -1)
        probs = combine(self.linear.log_probs(vector), sims, self.linear.has_none, self.mix)
        row: Floats = probs[0]
        return row
