from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from experts.base import ExpertDeclined, ExpertRejected, ExpertUnavailable
from experts.registry import ExpertSet
from gateway.api.app import build_app
from gateway.config import parse_config
from gateway.memory.bundle import Memory
from gateway.memory.cache import ResponseCache
from gateway.memory.pending import LocalConversationMemory
from gateway.memory.store import LocalStore
from gateway.service import Gateway
from tests.fakes import KeywordEmbedder, ScriptedExpert
from tests.support.asgi import serve

CONFIG = """
server: {max_body_bytes: 4096}
router: {threshold: 0.45, margin: 0.04, use_descriptions: false}
auth: none
experts:
  - {name: calculator, kind: tool, tool: calculator, ask: do arithmetic,
     description: arithmetic, examples: [compute, percent]}
  - {name: units, kind: tool, tool: units, ask: convert units,
     description: measurements, examples: [convert, miles]}
  - {name: general, kind: tool, tool: calculator, description: conversation, examples: [joke]}
  - {name: broken, kind: tool, tool: calculator, description: x, examples: [broken]}
  - {name: slow, kind: tool, tool: calculator, description: x, examples: [slow], timeout_s: 0.3}
  - {name: picky, kind: tool, tool: calculator, description: x, examples: [picky],
     fallbacks: [general]}
  - {name: lonely, kind: tool, tool: calculator, description: x, examples: [lonely]}
  - {name: midfail, kind: tool, tool: calculator, description: x, examples: [midfail]}
  - {name: strict, kind: tool, tool: calculator, description: x, examples: [strict]}
"""
KEYWORDS = ["compute", "percent", "convert", "miles", "joke", "broken", "slow", "picky",
            "lonely", "midfail", "strict", "arithmetic", "measurements", "units"]  # fmt: skip
AMBIGUOUS = "compute convert"


def make_experts() -> dict[str, ScriptedExpert]:
    return {
        "calculator": ScriptedExpert("calculator", ["12"]),
        "units": ScriptedExpert("units", ["8.047", " km"]),
        "general": ScriptedExpert("general", ["Why did", " the chicken", " cross?"]),
        "broken": ScriptedExpert("broken", error=ExpertUnavailable("broken", "connection refused")),
        "slow": ScriptedExpert("slow", ["late"], delay_s=2.0),
        "picky": ScriptedExpert("picky", error=ExpertDeclined("picky", "nothing to compute")),
        "lonely": ScriptedExpert("lonely", error=ExpertDeclined("lonely", "nothing to compute")),
        "midfail": ScriptedExpert(
            "midfail",
            ["part one", "part two"],
            error=ExpertUnavailable("midfail", "upstream dropped"),
            fail_after=1,
        ),
        "strict": ScriptedExpert("strict", error=ExpertRejected("strict", "max_tokens too big")),
    }


class Served:
    def __init__(
        self, url: str, experts: dict[str, ScriptedExpert], embedder: KeywordEmbedder
    ) -> None:
        self.url = url
        self.experts = experts
        self.embedder = embedder
        self.client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        self.http = httpx.Client(base_url=url, timeout=10)


def local_memory() -> Memory:
    cache_store = LocalStore()
    return Memory(LocalConversationMemory(), LocalStore(), ResponseCache(cache_store), cache_store)


def wait_ready(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/readyz").status_code == 200:
            return
        time.sleep(0.05)
    raise RuntimeError("gateway did not become ready")


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    config = parse_config(CONFIG, "test.yaml", {})
    experts = make_experts()
    embedder = KeywordEmbedder(KEYWORDS)
    gateway = Gateway(config, embedder, ExpertSet(list(experts.values())), local_memory())
    with serve(build_app(gateway, config.server.max_body_bytes)) as url:
        wait_ready(url)
        yield Served(url, experts, embedder)
