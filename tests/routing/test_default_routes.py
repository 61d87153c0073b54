"""The embedded default config routed with the real packaged MiniLM embedder."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from experts.base import Message
from gateway.config import load_config
from gateway.memory.pending import LocalConversationMemory
from gateway.routing.builder import RouterBuilder, routing_spec
from gateway.routing.conversation import ConversationRouter, RoutingOptions
from gateway.routing.embedder import SentenceTransformerEmbedder, resolve_embedder_path
from gateway.routing.router import Clarify, Dispatch

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def conv() -> AsyncIterator[ConversationRouter]:
    config = load_config(None, {})
    embedder = SentenceTransformerEmbedder(resolve_embedder_path(config.embedder.model))
    await embedder.start()
    router = await RouterBuilder(embedder).build(routing_spec(config.router, config.experts))
    yield ConversationRouter(embedder, lambda: router, LocalConversationMemory(), RoutingOptions())
    await embedder.aclose()


@pytest.mark.parametrize(
    ("text", "expert"),
    [
        ("what is 15% of 80", "calculator"),
        ("what's 2 to the power of 16", "calculator"),
        ("convert 5 miles to km", "units"),
        ("how many ounces in 2 kg", "units"),
        ("tell me a short joke", "general"),
        ("write a limerick about a cat", "general"),
    ],
)
async def test_default_experts_route(conv: ConversationRouter, text: str, expert: str) -> None:
    routed = await conv.route([Message("user", text)], "t")
    assert isinstance(routed.decision, Dispatch), routed.decision
    assert routed.decision.expert == expert


async def test_unrelated_request_asks(conv: ConversationRouter) -> None:
    routed = await conv.route([Message("user", "what is the weather like")], "t")
    assert isinstance(routed.decision, Clarify)
    assert routed.decision.reason == "no_match"


@pytest.mark.parametrize(
    ("first", "answer", "followup", "expert"),
    [
        ("convert 5 miles to km", "5 mi = 8.047 km", "and in feet?", "units"),
        ("tell me a short joke", "Why did the chicken cross the road?", "now make it shorter",
         "general"),
    ],
)  # fmt: skip
async def test_followups_stay_with_the_conversation(
    conv: ConversationRouter, first: str, answer: str, followup: str, expert: str
) -> None:
    alone = await conv.route([Message("user", followup)], "t", remember=False)
    conversation = [Message("user", first), Message("assistant", answer), Message("user", followup)]
    routed = await conv.route(conversation, "t")
    assert isinstance(routed.decision, Dispatch)
    assert routed.decision.expert == expert
    assert routed.followup
    # On its own the follow-up would not have been dispatched.
    assert not isinstance(alone.decision, Dispatch)
