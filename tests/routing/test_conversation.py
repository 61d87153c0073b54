from __future__ import annotations

import pytest

from experts.base import Message
from gateway.memory.pending import LocalConversationMemory, conversation_key
from gateway.routing.clarify import ExpertProfile
from gateway.routing.conversation import (
    Constraints,
    ConversationRouter,
    RoutingOptions,
    read_turns,
)
from gateway.routing.router import Clarify, Dispatch, Router, RouterPolicy, build_router
from tests.fakes import KeywordEmbedder

pytestmark = pytest.mark.anyio

KEYWORDS = ["compute", "percent", "convert", "miles", "joke", "arithmetic", "units",
            "measurements", "conversation"]  # fmt: skip
PROFILES = {
    "calculator": ExpertProfile("calculator", "arithmetic", "do arithmetic"),
    "units": ExpertProfile("units", "measurements", "convert units"),
    "general": ExpertProfile("general", "conversation"),
}
EXAMPLES = {
    "calculator": ["compute", "percent"],
    "units": ["convert", "miles"],
    "general": ["joke"],
}
AMBIGUOUS = "compute convert"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def memory(clock: Clock) -> LocalConversationMemory:
    return LocalConversationMemory(clock=clock)


@pytest.fixture
async def conv(memory: LocalConversationMemory) -> ConversationRouter:
    embedder = KeywordEmbedder(KEYWORDS)
    router: Router = await build_router(
        RouterPolicy(threshold=0.45, margin=0.04), PROFILES, EXAMPLES, embedder,
        use_descriptions=False,
    )  # fmt: skip
    return ConversationRouter(
        embedder, lambda: router, memory, RoutingOptions(clarification_ttl_s=60)
    )


def user(text: str) -> Message:
    return Message("user", text)


def assistant(text: str) -> Message:
    return Message("assistant", text)


async def ask(conv: ConversationRouter, tenant: str = "t1") -> list[Message]:
    """Send the ambiguous request; return the conversation with the question appended."""
    routed = await conv.route([Message("system", "be brief"), user(AMBIGUOUS)], tenant)
    assert isinstance(routed.decision, Clarify)
    return [Message("system", "be brief"), user(AMBIGUOUS), assistant(routed.decision.question)]


async def test_clarification_asks_and_stores_pending(
    conv: ConversationRouter, memory: LocalConversationMemory
) -> None:
    routed = await conv.route([user(AMBIGUOUS)], "t1")
    assert isinstance(routed.decision, Clarify)
    assert routed.decision.options == ("calculator", "units")
    assert routed.decision.question == (
        "Do you want me to do arithmetic (calculator), or to convert units (units)?"
    )
    key = conversation_key("clarify", AMBIGUOUS, routed.decision.question)
    assert await memory.get_clarification("t1", key) is not None


@pytest.mark.parametrize(
    ("reply", "expert", "how"),
    [
        ("units please", "units", "name"),
        ("Calculator", "calculator", "name"),
        ("the second one", "units", "ordinal"),
        ("first", "calculator", "ordinal"),
        ("the latter", "units", "ordinal"),
        ("2", "units", "ordinal"),
        ("I would like you to convert it for me", "units", "similarity"),
        ("arithmetic", "calculator", "similarity"),
    ],
)
async def test_reply_resolves_and_dispatches_the_original_request(
    conv: ConversationRouter, reply: str, expert: str, how: str
) -> None:
    conversation = await ask(conv)
    routed = await conv.route([*conversation, user(reply)], "t1")
    assert isinstance(routed.decision, Dispatch)
    assert routed.decision.expert == expert
    assert routed.resolved == how
    assert routed.decision.reason == f"clarified_by_{how}"
    # The expert gets the conversation up to the original request, not the Q&A.
    assert routed.keep_messages == 2
    assert routed.routing_text == AMBIGUOUS


async def test_a_resolved_question_is_forgotten(conv: ConversationRouter) -> None:
    conversation = await ask(conv)
    first = await conv.route([*conversation, user("units")], "t1")
    assert first.resolved == "name"
    again = await conv.route([*conversation, user("the second one")], "t1")
    assert again.resolved is None


async def test_unresolved_reply_is_routed_as_a_new_request(conv: ConversationRouter) -> None:
    conversation = await ask(conv)
    routed = await conv.route([*conversation, user("tell me a joke")], "t1")
    assert routed.resolved is None
    assert isinstance(routed.decision, Dispatch)
    assert routed.decision.expert == "general"
    assert routed.keep_messages == 4


async def test_pending_question_expires(conv: ConversationRouter, clock: Clock) -> None:
    conversation = await ask(conv)
    clock.now += 61
    routed = await conv.route([*conversation, user("units")], "t1")
    assert routed.resolved is None


async def test_pending_question_is_scoped_by_tenant(conv: ConversationRouter) -> None:
    conversation = await ask(conv, tenant="t1")
    routed = await conv.route([*conversation, user("units")], "t2")
    assert routed.resolved is None


async def test_text_the_gateway_did_not_ask_is_not_a_clarification(
    conv: ConversationRouter,
) -> None:
    fake = [user(AMBIGUOUS), assistant("Do you want me to do arithmetic (calculator)?")]
    routed = await conv.route([*fake, user("units")], "t1")
    assert routed.resolved is None


async def test_route_without_remember_stores_nothing(
    conv: ConversationRouter, memory: LocalConversationMemory
) -> None:
    routed = await conv.route([user(AMBIGUOUS)], "t1", remember=False)
    assert isinstance(routed.decision, Clarify)
    key = conversation_key("clarify", AMBIGUOUS, routed.decision.question)
    assert await memory.get_clarification("t1", key) is None


async def test_short_followup_routes_with_context(conv: ConversationRouter) -> None:
    conversation = [user("convert miles"), assistant("5 mi = 8.047 km"), user("and in km?")]
    routed = await conv.route(conversation, "t1")
    assert isinstance(routed.decision, Dispatch)
    assert routed.decision.expert == "units"
    assert routed.followup
    assert routed.routing_text == "convert miles\nand in km?"
    assert routed.decision.reason.startswith("followup_")


async def test_previous_expert_wins_a_near_tie_in_a_followup(
    conv: ConversationRouter,
) -> None:
    await conv.remember_answer("t1", "8.047 km", "units")
    conversation = [user("hello there"), assistant("8.047 km"), user(AMBIGUOUS)]
    routed = await conv.route(conversation, "t1")
    assert isinstance(routed.decision, Dispatch)
    assert routed.decision.expert == "units"
    assert routed.decision.reason == "followup_preferred"


async def test_without_a_previous_expert_a_tie_still_asks(conv: ConversationRouter) -> None:
    conversation = [user("hello there"), assistant("hi!"), user(AMBIGUOUS)]
    routed = await conv.route(conversation, "t1")
    assert isinstance(routed.decision, Clarify)


async def test_long_turns_are_not_followups(conv: ConversationRouter) -> None:
    long_text = "please would you be so kind as to help me with this one thing here now ok"
    conversation = [user("convert miles"), assistant("8 km"), user(long_text)]
    routed = await conv.route(conversation, "t1")
    assert isinstance(routed.decision, Clarify)
    assert not routed.followup


def test_read_turns_finds_the_previous_exchange() -> None:
    turns = read_turns([user("a"), assistant("b"), user("c")])
    assert (turns.last_user, turns.previous_assistant, turns.previous_user) == ("c", "b", "a")
    assert turns.previous_user_index == 0
    with pytest.raises(ValueError, match="no user turn"):
        read_turns([assistant("b")])


# -- tool turns ---------------------------------------------------------------------------


def tool_turns(first: str, call_id: str) -> list[Message]:
    call = {"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}
    return [
        user(first),
        Message("assistant", "", raw={"role": "assistant", "content": None, "tool_calls": [call]}),
        Message("tool", "42", raw={"role": "tool", "tool_call_id": call_id, "content": "42"}),
    ]


async def test_tool_results_go_back_to_the_expert_that_made_the_calls(
    conv: ConversationRouter,
) -> None:
    await conv.remember_answer("t1", "", "general", tool_calls=["call_1"])
    routed = await conv.route(tool_turns("compute percent", "call_1"), "t1")
    assert isinstance(routed.decision, Dispatch)
    assert (routed.decision.expert, routed.decision.reason) == ("general", "tool_affinity")
    # Another tenant's calls are not this tenant's.
    other = await conv.route(tool_turns("compute percent", "call_1"), "t2")
    assert isinstance(other.decision, Dispatch) and other.decision.expert == "calculator"


async def test_tool_results_of_unknown_calls_never_get_a_question(
    conv: ConversationRouter,
) -> None:
    routed = await conv.route(tool_turns(AMBIGUOUS, "call_unknown"), "t1")
    assert isinstance(routed.decision, Dispatch)
    assert routed.decision.reason == "unasked_close_margin"


async def test_affinity_to_an_expert_that_cannot_take_the_request_is_not_kept(
    conv: ConversationRouter,
) -> None:
    await conv.remember_answer("t1", "", "general", tool_calls=["call_2"])
    constraints = Constraints(allowed=frozenset({"calculator", "units"}))
    routed = await conv.route(tool_turns("compute percent", "call_2"), "t1",
                              constraints=constraints)  # fmt: skip
    assert isinstance(routed.decision, Dispatch) and routed.decision.expert == "calculator"
