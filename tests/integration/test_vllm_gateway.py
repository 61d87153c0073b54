"""A real vLLM server registered as an `openai` expert, through the gateway process.

Streamed and non-streamed answers must pass through intact: the same tokens and usage as
asking vLLM directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.gateway import gateway_process
from tests.support.vllm import VLLMServer

pytestmark = pytest.mark.integration

PROMPT = "Name three colours of the rainbow."
CONFIG = """
auth: none
experts:
  - name: smol
    kind: openai
    base_url: {base_url}
    model: {model}
    description: general chat with a small language model
    examples: [tell me a short joke, write a haiku about autumn, name three colours]
  - name: calculator
    kind: tool
    tool: calculator
    description: arithmetic with numbers
    examples: [what is 15% of 80, compute 3.5 * (12 - 4)]
"""


@pytest.fixture(scope="module")
def clients(
    vllm_server: VLLMServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[openai.OpenAI, openai.OpenAI]]:
    config = Path(tmp_path_factory.mktemp("cfg")) / "taskgate.yaml"
    config.write_text(CONFIG.format(base_url=vllm_server.base_url, model=vllm_server.model))
    with gateway_process(config) as url:
        gateway = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        direct = openai.OpenAI(base_url=vllm_server.base_url, api_key="unused", max_retries=0)
        yield gateway, direct


def ask(client: openai.OpenAI, model: str, **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PROMPT}],
        temperature=0,
        max_tokens=24,
        # Every call must reach vLLM: a cached earlier answer would be replayed in the
        # gateway's own chunks, not vLLM's.
        extra_headers={"Cache-Control": "no-cache"},
        **kwargs,
    )


def test_non_streamed_answer_is_vllms_answer(
    clients: tuple[openai.OpenAI, openai.OpenAI], vllm_server: VLLMServer
) -> None:
    gateway, direct = clients
    ours = ask(gateway, "smol")
    theirs = ask(direct, vllm_server.model)
    assert ours.choices[0].message.content == theirs.choices[0].message.content
    assert ours.choices[0].finish_reason == theirs.choices[0].finish_reason
    assert ours.usage.model_dump(exclude_none=True) == theirs.usage.model_dump(exclude_none=True)
    assert ours.model == "smol"


def test_streamed_answer_is_vllms_stream(
    clients: tuple[openai.OpenAI, openai.OpenAI], vllm_server: VLLMServer
) -> None:
    gateway, direct = clients
    options = {"stream": True, "stream_options": {"include_usage": True}}
    ours = list(ask(gateway, "smol", **options))
    theirs = list(ask(direct, vllm_server.model, **options))

    def pieces(chunks: list[Any]) -> list[str]:
        return [
            c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
        ]

    def finish(chunks: list[Any]) -> list[str]:
        return [
            c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
        ]

    assert pieces(ours) == pieces(theirs)
    assert len(pieces(ours)) > 1
    assert finish(ours) == finish(theirs)
    assert ours[-1].usage.model_dump(exclude_none=True) == theirs[-1].usage.model_dump(
        exclude_none=True
    )


def test_auto_routes_chat_to_vllm_and_arithmetic_to_the_tool(
    clients: tuple[openai.OpenAI, openai.OpenAI],
) -> None:
    gateway, _ = clients
    chat = gateway.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "tell me a joke"}], max_tokens=16
    )
    assert chat.model == "smol" and chat.choices[0].message.content
    maths = gateway.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "what is 15% of 80"}]
    )
    assert maths.model == "calculator"
    assert maths.choices[0].message.content == "15% of 80 = 12"


def test_upstream_rejection_is_vllms_own_400_naming_the_expert(
    clients: tuple[openai.OpenAI, openai.OpenAI],
) -> None:
    gateway, direct = clients
    request: dict[str, Any] = {
        # over vLLM's 2048-token context, under the gateway's own cap (server.max_tokens)
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 10_000,
    }
    with pytest.raises(openai.BadRequestError) as via:
        gateway.chat.completions.create(model="smol", **request)
    with pytest.raises(openai.BadRequestError) as upstream:
        direct.chat.completions.create(model=direct.models.list().data[0].id, **request)
    assert via.value.body == upstream.value.body
    assert via.value.response.headers["x-route-expert"] == "smol"
