"""The on-disk fit cache: hits, misses, invalidation, and damaged entries."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from gateway.routing.calibrate import Target
from gateway.routing.fitcache import ArrayCache, EmbeddingCache
from gateway.routing.fitting import Exemplars, HeadOptions, fit_head
from tests.routing.synthetic import clusters


def entries(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.npz"))


def test_second_fit_is_a_hit_with_the_same_head(tmp_path: Path) -> None:
    cache = ArrayCache(tmp_path)
    data = clusters(4, 25)
    first = fit_head(data, HeadOptions(), cache=cache)
    second = fit_head(data, HeadOptions(), cache=cache)
    assert not first.report.cached and second.report.cached
    assert len(entries(tmp_path)) == 1
    assert second.threshold == first.threshold and second.margin == first.margin
    assert second.report.seconds == first.report.seconds  # the time the fit took
    assert second.report.mix == first.report.mix
    assert np.array_equal(second.head.linear.weights, first.head.linear.weights)
    vector = data.vectors[3]
    sims = [0.5, 0.1, 0.2, 0.3]
    assert np.allclose(
        second.head.probabilities(vector, sims), first.head.probabilities(vector, sims)
    )


def test_changed_inputs_miss(tmp_path: Path) -> None:
    cache = ArrayCache(tmp_path)
    data = clusters(4, 25)
    fit_head(data, HeadOptions(), cache=cache)
    relabelled = Exemplars(data.vectors, np.roll(data.targets, 1), data.experts)
    moved = Exemplars(data.vectors * 0.999, data.targets, data.experts)
    renamed = Exemplars(data.vectors, data.targets, ("a", "b", "c", "d"))
    for changed in (relabelled, moved, renamed):
        assert not fit_head(changed, HeadOptions(), cache=cache).report.cached
    for options in (HeadOptions(c=1.0), HeadOptions(target=Target("precision", 0.8)),
                    HeadOptions(threshold=0.6)):  # fmt: skip
        assert not fit_head(data, options, cache=cache).report.cached
    assert len(entries(tmp_path)) == 7
    # Whether a head is wanted ("auto"/"on") does not change the fit itself.
    assert fit_head(data, replace(HeadOptions(), mode="on"), cache=cache).report.cached


def test_damaged_entry_is_a_miss_and_is_rewritten(tmp_path: Path) -> None:
    cache = ArrayCache(tmp_path)
    data = clusters(3, 20)
    fit_head(data, HeadOptions(), cache=cache)
    (entry,) = entries(tmp_path)
    entry.write_bytes(b"not a zip file")
    again = fit_head(data, HeadOptions(), cache=cache)
    assert not again.report.cached
    assert fit_head(data, HeadOptions(), cache=cache).report.cached


def test_unwritable_cache_still_fits(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    fitted = fit_head(clusters(3, 20), HeadOptions(), cache=ArrayCache(blocker / "sub"))
    assert not fitted.report.cached


def test_embedding_cache_is_keyed_by_identity_and_texts(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    vectors = np.eye(3, dtype=np.float32)
    cache.store("model-a", ["x", "y", "z"], vectors)
    loaded = cache.load("model-a", ["x", "y", "z"])
    assert loaded is not None and np.array_equal(loaded, vectors)
    assert cache.load("model-b", ["x", "y", "z"]) is None
    assert cache.load("model-a", ["x", "y"]) is None
    assert cache.load("model-a", ["xy", "z", ""]) is None
