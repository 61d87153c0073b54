"""The routing head: a linear classifier on frozen embeddings, and how its evidence and
the exemplar similarities become calibrated probabilities.

The linear part is a multinomial logistic regression over the experts, with one more
class, "none", when negative (out-of-scope) examples are known. A request's route is
decided in two parts, each calibrated on held-out data (`gateway.routing.calibrate`):

* **which expert**, if one fits: with `l_k` the head's expert logits, `E = logsumexp_k l_k`
  (the head's energy) and `s_k` the similarity evidence (the router's per-expert exemplar
  score, runtime exemplars included),

      z_k = alpha * (l_k - E + gamma * s_k),      share_k = softmax(z)_k

* **whether any expert fits** (the gate): `in_scope = sigmoid(g)` with

      g = bias + energy * E + similarity * max_k s_k + none * l_none + combined * logsumexp_k z_k

  whose weights are a logistic regression on held-out in-scope and out-of-scope items
  when there are such items, else `combined = 1` and `bias = alpha * log K` (a request
  with no evidence for any expert finds "none" as likely as each expert).

An expert's probability is `in_scope * share_k`; with `1 - in_scope` for "none" they sum
to one. The energy and the best similarity separate out-of-scope requests better than
the best expert's probability does (`benchmarks/oos_scores.py`), which is why the gate
is its own score. A runtime exemplar that raises `s_k` raises that expert's share and,
through the best similarity, the probability that some expert fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.float32]
Ints = NDArray[np.int64]
HEAD_VERSION = "2"
# The bias of an expert the head never saw (no exemplars in a fold): never its choice.
_ABSENT_BIAS = -30.0
# The gate's features, in this order (see `gate_features`).
GATE_FEATURES = ("energy", "similarity", "none")


@dataclass(frozen=True, slots=True)
class Gate:
    """Weights of the gate's logit (see the module docstring)."""

    bias: float = 0.0
    energy: float = 0.0
    similarity: float = 0.0
    none: float = 0.0
    combined: float = 1.0

    @property
    def feature_weights(self) -> NDArray[np.float64]:
        """The weights of `gate_features`' columns, in `GATE_FEATURES` order."""
        return np.array([getattr(self, name) for name in GATE_FEATURES], dtype=np.float64)


@dataclass(frozen=True, slots=True)
class Combination:
    alpha: float = 1.0
    gamma: float = 0.0
    gate: Gate = field(default_factory=Gate)


@dataclass(frozen=True, slots=True, eq=False)
class LinearHead:
    """Logits `x @ weights + bias`; columns are the experts, then "none" if `has_none`."""

    weights: Floats  # [dim, n_experts (+1)]
    bias: Floats  # [n_experts (+1)]
    has_none: bool

    @property
    def n_experts(self) -> int:
        return int(self.bias.shape[0]) - int(self.has_none)

    def logits(self, vectors: Floats) -> Floats:
        """[n, n_experts (+1)]."""
        rows = np.asarray(vectors, dtype=np.float32).reshape(-1, self.weights.shape[0])
        out: Floats = rows @ self.weights + self.bias
        return out

    def log_probs(self, vectors: Floats) -> Floats:
        """Log-softmax of the logits over every column, [n, n_experts (+1)]."""
        logits = self.logits(vectors)
        out: Floats = logits - _logsumexp(logits)[:, None]
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


def _logsumexp(values: NDArray[np.floating]) -> NDArray[np.floating]:
    """Row-wise, [n, m] -> [n]."""
    top = values.max(axis=1)
    out: NDArray[np.floating] = top + np.log(np.exp(values - top[:, None]).sum(axis=1))
    return out


def _split(
    logits: Floats, similarities: Floats, has_none: bool
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """(expert logits, none logit or zeros, similarities) as float64, shapes checked."""
    n_experts = similarities.shape[-1]
    lg = np.asarray(logits, dtype=np.float64).reshape(-1, n_experts + int(has_none))
    sims = np.asarray(similarities, dtype=np.float64).reshape(-1, n_experts)
    none = lg[:, n_experts] if has_none else np.zeros(len(lg))
    return lg[:, :n_experts], none, sims


def gate_features(logits: Floats, similarities: Floats, has_none: bool) -> NDArray[np.float64]:
    """[n, 3], in `GATE_FEATURES` order: the head's energy, the best similarity, the "none"
    logit (0 without one)."""
    return _features(*_split(logits, similarities, has_none))


def _features(
    experts: NDArray[np.float64], none: NDArray[np.float64], sims: NDArray[np.float64]
) -> NDArray[np.float64]:
    return np.stack([_logsumexp(experts), sims.max(axis=1), none], axis=1)


@dataclass(frozen=True, slots=True, eq=False)
class Assessment:
    """Per request: the probability that some expert fits, and each expert's share of it."""

    in_scope: NDArray[np.float64]  # [n]
    shares: NDArray[np.float64]  # [n, n_experts], rows sum to one

    def probabilities(self) -> Floats:
        """[n, n_experts + 1]: each expert's probability, then "none"'s."""
        out = np.concatenate([self.shares * self.in_scope[:, None], 1 - self.in_scope[:, None]], 1)
        return out.astype(np.float32)


def combine(logits: Floats, similarities: Floats, has_none: bool, mix: Combination) -> Assessment:
    experts, none, sims = _split(logits, similarities, has_none)
    features = _features(experts, none, sims)
    energy = features[:, 0]
    z = mix.alpha * (experts - energy[:, None] + mix.gamma * sims)
    combined = _logsumexp(z)
    gate = mix.gate
    g = gate.bias + features @ gate.feature_weights + gate.combined * combined
    in_scope = 0.5 * (1.0 + np.tanh(0.5 * g))  # the logistic function, without overflow
    return Assessment(in_scope, np.exp(z - combined[:, None]))


@dataclass(frozen=True, slots=True, eq=False)
class ProbabilityHead:
    """What the router asks at request time."""

    linear: LinearHead
    mix: Combination

    def assess(
        self, vector: Floats, similarities: Sequence[float] | Floats
    ) -> tuple[float, NDArray[np.float64]]:
        """(probability that some expert fits, each expert's share of it)."""
        found = self._combined(vector, similarities)
        return float(found.in_scope[0]), found.shares[0]

    def probabilities(self, vector: Floats, similarities: Sequence[float] | Floats) -> Floats:
        """[n_experts + 1]: each expert's probability, then "none"'s; they sum to one."""
        row: Floats = self._combined(vector, similarities).probabilities()[0]
        return row

    def _combined(self, vector: Floats, similarities: Sequence[float] | Floats) -> Assessment:
        sims = np.asarray(similarities, dtype=np.float32).reshape(1, -1)
        return combine(self.linear.logits(vector), sims, self.linear.has_none, self.mix)
