"""Routing explained: the nearest configured and learned exemplars of the chosen experts."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.memory.records import Exemplar
from gateway.memory.store import LocalStore
from gateway.routing.clarify import ExpertProfile
from gateway.routing.explain import explain
from gateway.routing.router import ExemplarIndex, Router, RouterPolicy


def unit(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


VECTORS = {
    "calculator": np.stack([unit(1, 0, 0), unit(1, 1, 0), unit(0, 0, 1)]),
    "units": np.stack([unit(0, 1, 0)]),
}
TEXTS = {"calculator": ["sum", "sum of lengths", "other"], "units": ["convert"]}
PROFILES = {name: ExpertProfile(name, name) for name in VECTORS}


def router(texts: dict[str, list[str]] | None = TEXTS) -> Router:
    return Router(ExemplarIndex(VECTORS, 3, texts), RouterPolicy(threshold=0.5), PROFILES)


def test_nearest_ranks_an_experts_exemplars_by_similarity() -> None:
    index = router().index
    nearest = index.nearest(unit(1, 0.2, 0), "calculator", 2)
    assert [text for text, _ in nearest] == ["sum", "sum of lengths"]
    assert nearest[0][1] == pytest.approx(float(unit(1, 0.2, 0) @ unit(1, 0, 0)), abs=1e-6)
    assert index.nearest(unit(1, 0, 0), "nobody", 3) == []
    assert index.nearest(unit(1, 0, 0), "calculator", 0) == []


def test_an_index_without_texts_has_nothing_to_show() -> None:
    assert router(None).index.nearest(unit(1, 0, 0), "calculator", 3) == []


@pytest.mark.anyio
async def test_explain_merges_configured_and_learned_exemplars_of_the_tenant() -> None:
    store = LocalStore()
    await store.start()
    learned = Exemplar("api-1", "acme", "calculator", "learned sum", unit(1, 0.05, 0), source="api")
    theirs = Exemplar("api-2", "other", "calculator", "their sum", unit(1, 0, 0), source="api")
    bad = Exemplar("fee-1", "acme", "calculator", "bad", unit(1, 0, 0), source="feedback",
                   good=False)  # fmt: skip
    await store.add([learned, theirs, bad])
    explained = await explain(router(), store, unit(1, 0.1, 0), ["calculator"], "acme", k=3)
    assert (explained.threshold, explained.margin, explained.scale) == (0.5, 0.04, "similarity")
    shown = [(s.text, s.source, s.id) for s in explained.exemplars]
    assert shown == [("learned sum", "api", "api-1"), ("sum", "config", None),
                     ("sum of lengths", "config", None)]  # fmt: skip
    body = explained.to_json()
    assert body["exemplars"][0] == {"expert": "calculator", "text": "learned sum",  # type: ignore[index]
                                    "similarity": explained.exemplars[0].similarity,
                                    "source": "api", "id": "api-1"}  # fmt: skip
    await store.aclose()
