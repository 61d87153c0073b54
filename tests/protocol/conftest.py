"""One scripted OpenAI upstream and one gateway in front of it, for the module's tests.

Experts: `code` (kind `openai`, in front of the upstream: takes everything), `chat` (the
same, but configured to take neither `n` > 1 nor logprobs), `calculator` (a scripted
expert configured as a `tool`: text only).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from experts.openai_compat import OpenAIExpert
from experts.registry import ExpertSet
from experts.specs import OpenAISpec
from gateway.api.app import build_app
from gateway.config import parse_config
from gateway.service import Gateway
from tests.api.conftest import local_memory, wait_ready
from tests.fakes import KeywordEmbedder, ScriptedExpert
from tests.protocol import canned
from tests.support.asgi import serve
from tests.support.threaded import threaded_upstream
from tests.support.upstream import Upstream

KEYWORDS = ["weather", "python", "story", "poem", "compute", "percent"]


@dataclass
class Rig:
    upstream: Upstream
    direct: openai.OpenAI
    gateway: openai.OpenAI
    http: httpx.Client
    scripted: dict[str, ScriptedExpert]

    def sent(self, back: int = 1) -> dict[str, Any]:
        """A chat request the upstream received (the last one by default)."""
        chats = [r for r in self.upstream.requests if r.path.endswith("/chat/completions")]
        return chats[-back].json()

    def same_requests(self) -> dict[str, Any]:
        """The last two requests, one direct and one through the gateway, are the same but
        for `stream`, which the gateway always states; the gateway's."""
        gateway, direct = self.sent(1), self.sent(2)
        assert gateway.pop("stream") is bool(direct.pop("stream", False))
        assert gateway == direct
        return gateway


def config_for(upstream: Upstream, code_options: str = "") -> str:
    return f"""
auth: none
router: {{threshold: 0.45, margin: 0.04, use_descriptions: false}}
health: {{interval_s: 60}}
experts:
  - {{name: code, kind: openai, base_url: "{upstream.url}/v1", model: {canned.MODEL},
     description: weather and code, examples: [weather, python], max_retries: 0{code_options}}}
  - {{name: chat, kind: openai, base_url: "{upstream.url}/v1", model: {canned.MODEL},
     description: stories, examples: [story, poem], max_retries: 0,
     capabilities: [tools, images, audio, files]}}
  - {{name: calculator, kind: tool, tool: calculator, description: arithmetic,
     examples: [compute, percent]}}
"""


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    with rig_for() as made:
        yield made


@contextmanager
def rig_for(code_options: str = "") -> Iterator[Rig]:
    """A rig whose `code` expert has these extra spec fields (`, timeout_s: 0.5`)."""
    with threaded_upstream() as upstream:
        config = parse_config(config_for(upstream, code_options), "protocol.yaml", {})
        code, chat = (OpenAIExpert(spec) for spec in config.experts[:2]
                      if isinstance(spec, OpenAISpec))  # fmt: skip
        calculator = ScriptedExpert("calculator", ["12"])
        embedder = KeywordEmbedder(KEYWORDS)
        upstream.script(canned.answering(canned.FINAL, canned.FINAL_CHUNKS))
        experts = ExpertSet([code, chat, calculator])
        gateway = Gateway(config, embedder, experts, local_memory())
        with serve(build_app(gateway, config.server.max_body_bytes)) as url:
            wait_ready(url)
            yield Rig(
                upstream,
                openai.OpenAI(base_url=f"{upstream.url}/v1", api_key="k", max_retries=0),
                openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0),
                httpx.Client(base_url=url, timeout=30),
                {"calculator": calculator},
            )


