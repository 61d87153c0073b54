from __future__ import annotations

import asyncio
import json
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


# Texts of different lengths: batched together, they are padded.
MIXED_LENGTHS = ["convert 5 miles to km", "a much longer request about writing a haiku on autumn",
                 "what is 15% of 80", "x"]  # fmt: skip


def files_in(folder: Path) -> int:
    return len(list(folder.iterdir()))


async def test_onnx_runtime_gives_torchs_embeddings(tmp_path: Path) -> None:
    path = resolve_embedder_path("builtin:all-MiniLM-L6-v2")
    torch_run = SentenceTransformerEmbedder(path, cache_size=0)
    onnx_run = SentenceTransformerEmbedder(
        path, precision="float32", cache_size=0, runtime="onnx", onnx_dir=tmp_path
    )
    texts = MIXED_LENGTHS
    await torch_run.start()
    await onnx_run.start()
    try:
        assert (torch_run.runtime, onnx_run.runtime) == ("torch", "onnx")
        assert onnx_run.dim == 384
        reference = await torch_run.embed(texts)
        together = await onnx_run.embed(texts)
        alone = np.concatenate([await onnx_run.embed([text]) for text in texts])
    finally:
        await torch_run.aclose()
        await onnx_run.aclose()
    np.testing.assert_allclose(together, reference, atol=1e-5)
    np.testing.assert_allclose(alone, reference, atol=1e-5)
    assert files_in(tmp_path) == 1  # exported once, then reused
    again = SentenceTransformerEmbedder(
        path, precision="float32", runtime="onnx", onnx_dir=tmp_path
    )
    await again.start()
    await again.aclose()
    assert files_in(tmp_path) == 1


async def test_onnx_int8_is_batch_independent_close_to_float32_and_the_auto_default(
    tmp_path: Path,
) -> None:
    path = resolve_embedder_path("builtin:all-MiniLM-L6-v2")
    full = SentenceTransformerEmbedder(
        path, precision="float32", cache_size=0, runtime="onnx", onnx_dir=tmp_path
    )
    auto = SentenceTransformerEmbedder(path, cache_size=0, runtime="auto", onnx_dir=tmp_path)
    texts = MIXED_LENGTHS
    await full.start()
    await auto.start()
    try:
        assert (auto.runtime, auto.precision) == ("onnx", "int8")
        reference = await full.embed(texts)
        together = await auto.embed(texts)
        alone = np.concatenate([await auto.embed([text]) for text in texts])
        beside_others = await auto.embed([texts[0], "something else entirely " * 20])
    finally:
        await full.aclose()
        await auto.aclose()
    # Each token is scaled on its own: a text's embedding does not depend on its batch
    # (up to float rounding in the attention of differently padded batches).
    np.testing.assert_allclose(together, alone, atol=1e-3)
    np.testing.assert_allclose(beside_others[0], alone[0], atol=1e-3)
    assert (together * reference).sum(axis=1).min() > 0.99
    assert not np.allclose(together, reference, atol=1e-4)
    assert len({full.identity, auto.identity}) == 2  # cached apart
    assert "int8-per-row-onnx" in auto.identity
    assert files_in(tmp_path) == 2  # the float32 export and its int8 rewrite, both reused
    again = SentenceTransformerEmbedder(path, precision="int8", runtime="onnx", onnx_dir=tmp_path)
    await again.start()
    await again.aclose()
    assert files_in(tmp_path) == 2 and again.identity == auto.identity


def max_pooled_copy(path: Path, folder: Path) -> Path:
    """The builtin model with max pooling, a shape the ONNX encoder does not reproduce."""
    for item in path.iterdir():
        if item.name != "1_Pooling":
            (folder / item.name).symlink_to(item)
    (folder / "1_Pooling").mkdir()
    config = json.loads((path / "1_Pooling" / "config.json").read_text())
    config.update(pooling_mode_mean_tokens=False, pooling_mode_max_tokens=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(config))
    return folder


async def test_auto_falls_back_to_torch_float32_where_onnx_cannot_run(tmp_path: Path) -> None:
    path = resolve_embedder_path("builtin:all-MiniLM-L6-v2")
    (tmp_path / "model").mkdir()
    max_pooled = max_pooled_copy(path, tmp_path / "model")
    auto = SentenceTransformerEmbedder(max_pooled, runtime="auto", onnx_dir=tmp_path / "onnx")
    await auto.start()
    try:
        assert (auto.runtime, auto.precision) == ("torch", "float32")
        assert (await auto.embed(["x"])).shape == (1, 384)
    finally:
        await auto.aclose()
    forced = SentenceTransformerEmbedder(max_pooled, runtime="onnx", onnx_dir=tmp_path / "onnx")
    with pytest.raises(EmbedderUnavailable, match="pooling"):
        await forced.start()
    (tmp_path / "not-a-folder").write_text("")  # a cache directory it cannot create
    unwritable = SentenceTransformerEmbedder(
        path, runtime="auto", onnx_dir=tmp_path / "not-a-folder" / "onnx"
    )
    await unwritable.start()
    try:
        assert (unwritable.runtime, unwritable.precision) == ("torch", "float32")
    finally:
        await unwritable.aclose()
    on_gpu = SentenceTransformerEmbedder(path, device="cuda", runtime="onnx", onnx_dir=tmp_path)
    with pytest.raises(EmbedderUnavailable, match="CPU only"):
        await on_gpu.start()
    with pytest.raises(ValueError, match="runtime"):
        SentenceTransformerEmbedder(path, runtime="onnx")  # nowhere to export to


def test_only_the_usual_sentence_transformers_shape_is_exported(tmp_path: Path) -> None:
    from gateway.routing.onnx_encoder import NotExportable, pooling_of

    assert pooling_of(resolve_embedder_path("builtin:all-MiniLM-L6-v2")) == "mean"
    with pytest.raises(NotExportable):
        pooling_of(tmp_path)
    (tmp_path / "modules.json").write_text(
        '[{"type": "sentence_transformers.models.Transformer", "path": ""},'
        ' {"type": "sentence_transformers.models.Pooling", "path": "p"},'
        ' {"type": "sentence_transformers.models.Dense", "path": "d"}]'
    )
    with pytest.raises(NotExportable, match="Dense"):
        pooling_of(tmp_path)


def test_sentence_transformers_6_layouts_are_exported(tmp_path: Path) -> None:
    """Version 6 saves module types under new paths and one `pooling_mode` string (what
    `taskgate fit` writes); they are the same modules."""
    from gateway.routing.onnx_encoder import NotExportable, pooling_of

    def layout(mode: str, last: str = "normalize.Normalize") -> None:
        st = "sentence_transformers"
        types = [
            f"{st}.base.modules.transformer.Transformer",
            f"{st}.sentence_transformer.modules.pooling.Pooling",
            f"{st}.base.modules.{last}",
        ]
        paths = ["", "1_Pooling", "2"]
        modules = [{"type": t, "path": p} for t, p in zip(types, paths, strict=True)]
        (tmp_path / "modules.json").write_text(json.dumps(modules))
        (tmp_path / "1_Pooling").mkdir(exist_ok=True)
        (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": mode}))

    layout("mean")
    assert pooling_of(tmp_path) == "mean"
    layout("cls")
    assert pooling_of(tmp_path) == "cls"
    layout("max")
    with pytest.raises(NotExportable, match="max"):
        pooling_of(tmp_path)
    layout("mean", last="dense.Dense")
    with pytest.raises(NotExportable, match="Dense"):
        pooling_of(tmp_path)
