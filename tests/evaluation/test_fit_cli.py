"""`taskgate fit`: a few steps of fine-tuning write an embedder directory the gateway loads."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from gateway.cli import main
from gateway.routing.embedder import SentenceTransformerEmbedder, resolve_embedder_path
from gateway.routing.finetune import ARTIFACT_META

pytestmark = pytest.mark.slow


def test_fit_writes_an_embedder_the_config_can_point_to(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [{"text": f"book a flight to city {i}", "label": "flights"} for i in range(8)]
    rows += [{"text": f"cook a recipe with item {i}", "label": "recipes"} for i in range(8)]
    rows += [{"text": "what is the meaning of life", "label": "oos"}]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "fitted"
    assert main(["fit", "--train", str(train), "--out", str(out), "--epochs", "0.5"]) == 0
    assert "fine-tuned on 16 examples of 2 experts and 1 negatives" in capsys.readouterr().out
    meta = json.loads((out / ARTIFACT_META).read_text())
    assert meta["experts"] == 2 and meta["steps"] >= 1

    async def embed(runtime: str, precision: str) -> np.ndarray:
        embedder = SentenceTransformerEmbedder(
            resolve_embedder_path(str(out)),
            runtime=runtime,
            precision=precision,
            onnx_dir=tmp_path / "onnx",
        )
        await embedder.start()
        try:
            assert embedder.runtime == runtime  # the artifact's layout is exportable
            return await embedder.embed(["book a flight", "cook dinner"])
        finally:
            await embedder.aclose()

    vectors = asyncio.run(embed("torch", "float32"))
    assert vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(asyncio.run(embed("onnx", "float32")), vectors, atol=1e-5)
    assert ((asyncio.run(embed("onnx", "int8")) * vectors).sum(axis=1) > 0.99).all()
