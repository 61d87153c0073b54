"""Three tiny random Llama models over the byte vocabulary: A (small base, and the large
model in identity tests), B (the task expert), C (a large model unlike both)."""

from __future__ import annotations

import pytest
from transformers import LlamaForCausalLM

from tests.experts.fusion import harness
from tests.experts.fusion.harness import VOCAB
from tests.experts.fusion.tiny import tiny_llama


@pytest.fixture(scope="module")
def a() -> LlamaForCausalLM:
    return tiny_llama(VOCAB, seed=1)


@pytest.fixture(scope="module")
def b() -> LlamaForCausalLM:
    return tiny_llama(VOCAB, seed=2)


@pytest.fixture(scope="module")
def c() -> LlamaForCausalLM:
    return tiny_llama(VOCAB, seed=3)


@pytest.fixture(params=["dynamic", "static"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Decoders built by the harness run on this engine (see harness.ENGINE)."""
    monkeypatch.setattr(harness, "ENGINE", request.param)
    return str(request.param)
