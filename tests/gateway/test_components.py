from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gateway.components import build_memory
from gateway.config import parse_config, with_redis_url
from gateway.memory.records import Exemplar
from gateway.memory.redis_conversation import RedisConversationMemory
from gateway.memory.redis_store import RedisStore
from gateway.memory.store import LocalStore

pytestmark = pytest.mark.anyio

EXPERTS = (
    "auth: none\nexperts:\n  - {name: calc, kind: tool, tool: calculator, description: maths}\n"
)


async def test_local_memory_with_a_snapshot_keeps_exemplars_across_restarts(
    tmp_path: Path,
) -> None:
    snapshot = tmp_path / "exemplars.snapshot"
    config = parse_config(f"memory: {{snapshot: {snapshot}}}\n{EXPERTS}", "c.yaml", {})
    vector = np.ones(4, dtype=np.float32) / 2
    memory = build_memory(config)
    assert isinstance(memory.exemplars, LocalStore)
    await memory.start()
    await memory.exemplars.add([Exemplar("e1", "acme", "calc", "two plus two", vector)])
    await memory.aclose()
    again = build_memory(config)
    await again.start()
    try:
        found = await again.exemplars.get("e1")
        assert found is not None and found.text == "two plus two"
    finally:
        await again.aclose()


async def test_redis_url_from_the_environment_selects_the_redis_memory() -> None:
    config = with_redis_url(parse_config(EXPERTS, "c.yaml", {}), "redis://127.0.0.1:1/0")
    assert (config.memory.backend, config.memory.url) == ("redis", "redis://127.0.0.1:1/0")
    memory = build_memory(config)
    assert isinstance(memory.exemplars, RedisStore)
    assert isinstance(memory.conversation, RedisConversationMemory)
    await memory.aclose()  # never started: closing still releases the client
