"""Synthetic embeddings for routing tests: one cluster per expert, scattered negatives."""

from __future__ import annotations

import numpy as np

from gateway.routing.fitting import Exemplars


def clusters(
    n_experts: int, per_expert: int, negatives: int = 0, dim: int = 16, seed: int = 0
) -> Exemplars:
    """Unit vectors around one centre per expert; negatives around no centre at all."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_experts, dim))
    rows = [centres[k] + rng.normal(scale=0.6, size=(per_expert, dim)) for k in range(n_experts)]
    rows.append(rng.normal(scale=1.2, size=(negatives, dim)))
    vectors = np.concatenate(rows).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    targets = np.concatenate(
        [np.full(per_expert, k) for k in range(n_experts)] + [np.full(negatives, -1)]
    ).astype(np.int64)
    return Exemplars(vectors, targets, tuple(f"e{k}" for k in range(n_experts)))
