"""Building routers from config: when a head is fitted, the settings, the caches."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config, parse_config
from gateway.routing.builder import RouterBuilder, routing_spec
from gateway.routing.calibrate import Target
from tests.fakes import KeywordEmbedder

pytestmark = pytest.mark.anyio

KEYWORDS = ["rain", "sun", "song", "guitar"]
CONFIG = """
router:
  use_descriptions: false
  target: {{oos_recall: 0.8}}
  negative_examples: [hello there, what now]
  head: {{mode: {mode}, min_examples: 3}}
auth: none
experts:
  - {{name: weather, kind: tool, tool: calculator, description: weather,
     examples: [rain, sun, rain sun, sun sun]}}
  - {{name: music, kind: tool, tool: calculator, description: music,
     examples: [song, guitar, song guitar, guitar guitar]}}
"""


class NamedEmbedder(KeywordEmbedder):
    """A keyword embedder with an identity, so its embeddings can be cached on disk."""

    @property
    def identity(self) -> str:
        return "keywords-v1"


def test_config_settings_reach_the_spec() -> None:
    config = parse_config(CONFIG.format(mode="on"), "c.yaml", {})
    spec = routing_spec(config.router, config.experts)
    assert spec.head.mode == "on" and spec.head.min_examples == 3
    assert spec.head.target == Target("oos_recall", 0.8)
    assert list(spec.negatives) == ["hello there", "what now"]
    assert spec.examples["music"] == ["song", "guitar", "song guitar", "guitar guitar"]


def test_a_target_names_exactly_one_goal() -> None:
    both = "{oos_recall: 0.8, precision: 0.9}"
    bad = CONFIG.format(mode="auto").replace("{oos_recall: 0.8}", both)
    with pytest.raises(ConfigError, match="exactly one"):
        parse_config(bad, "c.yaml", {})


async def test_embedded_default_keeps_cosine_routing() -> None:
    config = load_config(None, {})
    spec = routing_spec(config.router, config.experts)
    builder = RouterBuilder(KeywordEmbedder(["convert", "compute"]))
    router = await builder.build(spec)
    assert router.head is None and builder.last_fit is None
    assert (router.policy.threshold, router.policy.margin) == (0.45, 0.04)


async def test_head_is_fitted_and_calibrated_when_asked(tmp_path: Path) -> None:
    config = parse_config(CONFIG.format(mode="on"), "c.yaml", {})
    builder = RouterBuilder(KeywordEmbedder(KEYWORDS), tmp_path)
    router = await builder.build(routing_spec(config.router, config.experts))
    assert router.head is not None and router.head.linear.has_none
    assert builder.last_fit is not None and builder.last_fit.target == "oos_recall=0.8"
    assert 0.0 <= router.policy.threshold <= 1.000001
    off = parse_config(CONFIG.format(mode="off"), "c.yaml", {})
    assert (await builder.build(routing_spec(off.router, off.experts))).head is None


async def test_second_build_reads_embeddings_and_fit_from_disk(tmp_path: Path) -> None:
    config = parse_config(CONFIG.format(mode="on"), "c.yaml", {})
    spec = routing_spec(config.router, config.experts)
    first = NamedEmbedder(KEYWORDS)
    await RouterBuilder(first, tmp_path).build(spec)
    assert first.calls
    again = NamedEmbedder(KEYWORDS)
    builder = RouterBuilder(again, tmp_path)
    await builder.build(spec)
    assert again.calls == []
    assert builder.last_fit is not None and builder.last_fit.cached
