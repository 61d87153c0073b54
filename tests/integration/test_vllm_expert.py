"""OpenAIExpert against a real vLLM server (CPU build) serving SmolLM2-135M-Instruct."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from experts.base import ExpertRejected, ExpertRequest, Message, Sampling, drain
from experts.openai_compat import OpenAIExpert
from experts.specs import OpenAISpec
from tests.support.vllm import VLLMServer

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

PROMPT = "Name three primary colors."
MAX_TOKENS = 24


@pytest.fixture
async def expert(vllm_server: VLLMServer) -> AsyncIterator[OpenAIExpert]:
    spec = OpenAISpec(
        name="smol",
        kind="openai",
        description="a small general model",
        base_url=vllm_server.base_url,
        model=vllm_server.model,
        timeout_s=120.0,
    )
    expert = OpenAIExpert(spec)
    await expert.start()
    yield expert
    await expert.aclose()


def greedy_request() -> ExpertRequest:
    return ExpertRequest(
        messages=(Message("user", PROMPT),),
        sampling=Sampling(max_tokens=MAX_TOKENS, temperature=0.0),
    )


async def ask_directly(server: VLLMServer) -> dict[str, Any]:
    """The same request as the expert's, sent with plain httpx."""
    body = {
        "model": server.model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0.0,
        "stream": False,
    }
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120.0) as client:
        response = await client.post("chat/completions", json=body)
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer


async def test_streamed_and_complete_answers_match_vllm(
    expert: OpenAIExpert, vllm_server: VLLMServer
) -> None:
    direct = await ask_directly(vllm_server)
    choice = direct["choices"][0]
    completed = await expert.complete(greedy_request())
    streamed = await drain(expert.stream(greedy_request()))

    assert completed.content == choice["message"]["content"]
    assert completed.content.strip()
    assert streamed.content == completed.content
    assert completed.finish_reason == choice["finish_reason"]
    assert streamed.finish_reason == completed.finish_reason
    # Usage as vLLM reported it (null details are dropped, everything else kept).
    usage = {key: value for key, value in direct["usage"].items() if value is not None}
    assert completed.usage is not None and streamed.usage is not None
    assert completed.usage.to_json() == usage
    assert streamed.usage.to_json() == usage


async def test_stream_passes_chunks_through(expert: OpenAIExpert) -> None:
    deltas = [delta async for delta in expert.stream(greedy_request())]
    texts = [delta.content for delta in deltas if delta.content]
    assert len(texts) > 1  # chunk by chunk, not one re-assembled piece
    assert sum(delta.finish_reason is not None for delta in deltas) == 1
    assert deltas[-1].usage is not None


async def test_length_finish_reason_is_preserved(expert: OpenAIExpert) -> None:
    request = ExpertRequest(
        messages=(Message("user", "Write a long story about the sea."),),
        sampling=Sampling(max_tokens=5, temperature=0.0),
    )
    result = await expert.complete(request)
    assert result.finish_reason == "length"
    assert result.usage is not None and result.usage.completion_tokens == 5


async def test_health_is_ok(expert: OpenAIExpert) -> None:
    health = await expert.health()
    assert health.ok, health.detail


async def test_health_names_a_model_the_server_lacks(vllm_server: VLLMServer) -> None:
    spec = OpenAISpec(
        name="ghost",
        kind="openai",
        description="not served",
        base_url=vllm_server.base_url,
        model="no-such-model",
    )
    expert = OpenAIExpert(spec)
    try:
        health = await expert.health()
    finally:
        await expert.aclose()
    assert not health.ok
    assert "no-such-model" in health.detail


async def test_too_many_tokens_is_rejected(expert: OpenAIExpert) -> None:
    request = ExpertRequest(
        messages=(Message("user", PROMPT),),
        sampling=Sampling(max_tokens=100_000, temperature=0.0),
    )
    with pytest.raises(ExpertRejected) as caught:
        await expert.complete(request)
    assert 400 <= caught.value.status < 500
    assert caught.value.expert == "smol"
    # The message is vLLM's error.message, not a raw JSON body.
    assert "max_tokens" in caught.value.message or "context" in caught.value.message
    assert "{" not in caught.value.message
    with pytest.raises(ExpertRejected):
        await drain(expert.stream(request))
