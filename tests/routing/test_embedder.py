from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from gateway.routing.embedder import (
    EmbedderUnavailable,
    SentenceTransformerEmbedder,
    resolve_embedder_path,
)

pytestmark = pytest.mark.anyio


async def test_concurrent_requests_share_a_batch_and_match_single_encodes() -> None:
    path = resolve_embedder_path("builtin:all-MiniLM-L6-v2")
    embedder = SentenceTransformerEmbedder(path, batch_wait_ms=50, cache_size=0)
    await embedder.start()
    try:
        texts = [f"request number {i}" for i in range(8)]
        together = await asyncio.gather(*(embedder.embed([t]) for t in texts))
        assert embedder.batches < len(texts)
        assert embedder.dim == 384
        for text, rows in zip(texts, together, strict=True):
            alone = await embedder.embed([text])
            assert rows.shape == (1, 384) and rows.dtype == np.float32
            assert np.linalg.norm(rows[0]) == pytest.approx(1.0, abs=1e-5)
            np.testing.assert_allclose(rows, alone, atol=1e-5)
    finally:
        await embedder.aclose()


async def test_cache_answers_repeated_texts_without_the_model() -> None:
    embedder = SentenceTransformerEmbedder(resolve_embedder_path("builtin:all-MiniLM-L6-v2"))
    await embedder.start()
    try:
        first = await embedder.embed(["same text", "other text", "same text"])
        batches = embedder.batches
        again = await embedder.embed(["same text"])
        assert embedder.batches == batches
        np.testing.assert_array_equal(first[0], again[0])
        np.testing.assert_array_equal(first[0], first[2])
        assert (await embedder.embed([])).shape == (0, 384)
    finally:
        await embedder.aclose()


async def test_unknown_embedders_are_refused(tmp_path: Path) -> None:
    with pytest.raises(EmbedderUnavailable, match="unknown builtin"):
        resolve_embedder_path("builtin:nope")
    with pytest.raises(EmbedderUnavailable, match="not found"):
        resolve_embedder_path(str(tmp_path / "missing"))
    with pytest.raises(EmbedderUnavailable, match="not started"):
        await SentenceTransformerEmbedder(tmp_path).embed(["x"])


async def test_int8_embeddings_stay_close_to_float32_and_are_cached_apart() -> None:
    path = resolve_embedder_path("builtin:all-MiniLM-L6-v2")
    full = SentenceTransformerEmbedder(path, precision="float32", cache_size=0)
    quantized = SentenceTransformerEmbedder(path, precision="int8", cache_size=0)
    assert SentenceTransformerEmbedder(path).precision == "float32"  # the default
    texts = ["convert 5 miles to km", "write a haiku about autumn", "what is 15% of 80"]
    await full.start()
    await quantized.start()
    try:
        reference, approximate = await full.embed(texts), await quantized.embed(texts)
    finally:
        await full.aclose()
        await quantized.aclose()
    assert approximate.shape == reference.shape and approximate.dtype == np.float32
    cosines = (reference * approximate).sum(axis=1)
    assert cosines.min() > 0.9
    assert not np.allclose(reference, approximate, atol=1e-4)  # it is another model
    # Embedding caches on disk are keyed by identity: the two never share entries.
    assert full.identity != quantized.identity
    with pytest.raises(ValueError, match="precision"):
        SentenceTransformerEmbedder(path, precision="int4")
