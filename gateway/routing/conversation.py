"""From a conversation to a routing decision.

The routing text is the last user turn. Two kinds of turn get more than that:

* the answer to a clarification question the gateway asked: it resolves the pending
  question (by expert name, ordinal, or similarity) and dispatches the *original* request;
* a short follow-up ("and in kilometres?") that does not route on its own: it is routed
  with the previous user turn as context, and the expert that answered before wins a tie;
* the results of tool calls: the conversation continues with the expert that made the
  calls (remembered by their ids), without routing or asking.

`Constraints` say which experts may answer (those that can take what the request carries)
and whether a question is an answer at all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from gateway.memory.pending import ConversationMemory, PendingClarification, conversation_key
from gateway.memory.records import ExemplarStore, Vector
from gateway.routing.clarify import resolve_by_name, resolve_by_ordinal
from gateway.routing.embedder import Embedder
from gateway.routing.router import Candidate, Clarify, Decision, Dispatch, Router

logger = logging.getLogger(__name__)

Resolution = Literal["name", "ordinal", "similarity"]


class ChatTurn(Protocol):
    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...

    @property
    def raw(self) -> Mapping[str, object] | None: ...


@dataclass(frozen=True, slots=True)
class Constraints:
    """Which experts may answer (None: any), and whether the gateway may ask a question."""

    allowed: frozenset[str] | None = None
    ask: bool = True


ANY = Constraints()


@dataclass(frozen=True, slots=True)
class Turns:
    last_user: str
    # The assistant turn just before the last user turn, and the user turn before that.
    previous_assistant: str | None
    previous_user: str | None
    # Index of the previous user turn in the messages (the original request of a clarification).
    previous_user_index: int | None


def read_turns(messages: Sequence[ChatTurn]) -> Turns:
    last = len(messages) - 1
    while last >= 0 and messages[last].role != "user":
        last -= 1
    if last < 0:
        raise ValueError("the conversation has no user turn")
    assistant = last - 1 if last >= 1 and messages[last - 1].role == "assistant" else None
    previous = next((i for i in range(last - 1, -1, -1) if messages[i].role == "user"), None)
    return Turns(
        last_user=messages[last].content,
        previous_assistant=messages[assistant].content if assistant is not None else None,
        previous_user=messages[previous].content if previous is not None else None,
        previous_user_index=previous,
    )


@dataclass(frozen=True, slots=True)
class RoutingOptions:
    followup_max_words: int = 12
    resolve_threshold: float = 0.25
    clarification_ttl_s: float = 900.0
    turn_ttl_s: float = 3600.0
    # How many learned exemplars a routing decision looks at.
    exemplar_k: int = 32


@dataclass(frozen=True, slots=True)
class Routed:
    decision: Decision
    routing_text: str
    # How many leading messages the expert gets (a resolved clarification drops the
    # question and the answer, so the expert sees the original request).
    keep_messages: int
    resolved: Resolution | None = None
    followup: bool = False
    # The embedding of `routing_text` (None when routing was skipped).
    vector: Vector | None = None


class ConversationRouter:
    def __init__(
        self,
        embedder: Embedder,
        router: Callable[[], Router],
        memory: ConversationMemory,
        options: RoutingOptions,
        exemplars: ExemplarStore | None = None,
    ) -> None:
        self._embedder = embedder
        self._router = router
        self._memory = memory
        self._options = options
        self._exemplars = exemplars

    async def route(
        self,
        messages: Sequence[ChatTurn],
        tenant: str,
        *,
        remember: bool = True,
        constraints: Constraints = ANY,
    ) -> Routed:
        """Decide for the conversation; with `remember`, a Clarify is stored as pending."""
        router = self._router()
        turns = read_turns(messages)
        if messages[-1].role == "tool":
            calls = tool_result_ids(messages)
            affine = await self._tool_affinity(router, calls, turns, len(messages), tenant)
            if affine is not None and _permitted(affine.decision, constraints):
                return affine
            constraints = replace(constraints, ask=False)  # no question mid tool loop
        resolved = await self._resolve_clarification(router, turns, tenant, remember)
        if resolved is not None and _permitted(resolved.decision, constraints):
            return resolved
        routed = await self._route_text(router, turns, len(messages), tenant, constraints)
        if remember and isinstance(routed.decision, Clarify):
            await self._remember_question(tenant, routed.decision, turns.last_user)
        return routed

    async def remember_answer(
        self, tenant: str, answer: str, expert: str, tool_calls: Sequence[str] = ()
    ) -> None:
        """Record which expert gave `answer` (so a follow-up can prefer it) and made
        `tool_calls` (so their results go back to it)."""
        ttl = self._options.turn_ttl_s
        if answer.strip():
            await self._memory.put_turn(tenant, conversation_key("turn", answer), expert, ttl)
        for call_id in tool_calls:
            await self._memory.put_turn(tenant, conversation_key("tool", call_id), expert, ttl)

    async def _tool_affinity(
        self, router: Router, calls: Sequence[str], turns: Turns, n_messages: int, tenant: str
    ) -> Routed | None:
        """The expert that made the tool calls whose results the request brings back."""
        for call_id in calls:
            expert = await self._memory.get_turn(tenant, conversation_key("tool", call_id))
            if expert is not None and expert in router.profiles:
                decision = Dispatch(expert, 1.0, 1.0, (Candidate(expert, 1.0),), "tool_affinity")
                return Routed(decision, turns.last_user, n_messages)
        return None

    async def _route_text(
        self, router: Router, turns: Turns, n_messages: int, tenant: str, constraints: Constraints
    ) -> Routed:
        vector = (await self._embedder.embed([turns.last_user]))[0]
        learned = await self._learned(router, vector, tenant)
        allowed, ask = constraints.allowed, constraints.ask
        decision = router.decide(vector, extra=learned, allowed=allowed, ask=ask)
        routed = Routed(decision, turns.last_user, n_messages, vector=vector)
        if isinstance(decision, Dispatch) or not self._is_followup(turns):
            return routed
        assert turns.previous_user is not None
        previous_expert = await self._previous_expert(router, turns, tenant, allowed)
        context = f"{turns.previous_user}\n{turns.last_user}"
        context_vector = (await self._embedder.embed([context]))[0]
        learned = await self._learned(router, context_vector, tenant)
        with_context = router.decide(
            context_vector, prefer=previous_expert, extra=learned, allowed=allowed, ask=ask
        )
        if isinstance(with_context, Dispatch):
            return Routed(
                replace(with_context, reason=f"followup_{with_context.reason}"),
                context,
                n_messages,
                followup=True,
                vector=context_vector,
            )
        return routed

    async def _learned(self, router: Router, vector: Vector, tenant: str) -> dict[str, list[float]]:
        """Similarities of the tenant's learned exemplars, per expert, to count in routing."""
        if self._exemplars is None:
            return {}
        hits = await self._exemplars.search(
            vector, self._options.exemplar_k, tenant=tenant, good_only=True
        )
        learned: dict[str, list[float]] = {}
        for hit in hits:
            if hit.exemplar.expert in router.profiles:
                learned.setdefault(hit.exemplar.expert, []).append(hit.score)
        return learned

    def _is_followup(self, turns: Turns) -> bool:
        return (
            turns.previous_user is not None
            and len(turns.last_user.split()) <= self._options.followup_max_words
        )

    async def _previous_expert(
        self, router: Router, turns: Turns, tenant: str, allowed: frozenset[str] | None
    ) -> str | None:
        """Who answered the previous turn: remembered, else where that turn routes."""
        if turns.previous_assistant:
            key = conversation_key("turn", turns.previous_assistant)
            remembered = await self._memory.get_turn(tenant, key)
            if remembered is not None and remembered in router.profiles:
                return remembered
        assert turns.previous_user is not None
        vector = (await self._embedder.embed([turns.previous_user]))[0]
        learned = await self._learned(router, vector, tenant)
        decision = router.decide(vector, extra=learned, allowed=allowed)
        return decision.expert if isinstance(decision, Dispatch) else None

    async def _remember_question(self, tenant: str, decision: Clarify, asked_about: str) -> None:
        pending = PendingClarification(
            decision.question, decision.options, decision.reason, time.time()
        )
        key = conversation_key("clarify", asked_about, decision.question)
        await self._memory.put_clarification(
            tenant, key, pending, self._options.clarification_ttl_s
        )

    async def _resolve_clarification(
        self, router: Router, turns: Turns, tenant: str, remember: bool
    ) -> Routed | None:
        if turns.previous_assistant is None or turns.previous_user is None:
            return None
        key = conversation_key("clarify", turns.previous_user, turns.previous_assistant)
        pending = await self._memory.get_clarification(tenant, key)
        if pending is None:
            return None
        options = [name for name in pending.options if name in router.profiles]
        choice, how = await self._resolve_reply(router, turns.last_user, options)
        if choice is None or how is None:
            logger.info("clarification reply did not resolve", extra={"action": "unresolved"})
            return None
        if remember:
            await self._memory.drop_clarification(tenant, key)
        vector = (await self._embedder.embed([turns.previous_user]))[0]
        ranked = router.rank(vector, await self._learned(router, vector, tenant))
        score = next((c.score for c in ranked if c.expert == choice), 0.0)
        rival = max((c.score for c in ranked if c.expert != choice), default=-1.0)
        margin = round(score - rival, 6)
        decision = Dispatch(choice, score, margin, ranked, reason=f"clarified_by_{how}")
        assert turns.previous_user_index is not None
        return Routed(decision, turns.previous_user, turns.previous_user_index + 1, resolved=how)

    async def _resolve_reply(
        self, router: Router, reply: str, options: Sequence[str]
    ) -> tuple[str | None, Resolution | None]:
        named = resolve_by_name(reply, options, list(router.profiles))
        if named is not None:
            return named, "name"
        ordinal = resolve_by_ordinal(reply, options)
        if ordinal is not None:
            return ordinal, "ordinal"
        vector = (await self._embedder.embed([reply]))[0]
        similar = router.closest_profile(vector, options, self._options.resolve_threshold)
        return (similar, "similarity") if similar is not None else (None, None)


def tool_result_ids(messages: Sequence[ChatTurn]) -> list[str]:
    """The `tool_call_id`s of the tool results that end the conversation, latest first."""
    ids: list[str] = []
    for message in reversed(messages):
        if message.role != "tool":
            break
        call_id = (message.raw or {}).get("tool_call_id")
        if isinstance(call_id, str):
            ids.append(call_id)
    return ids


def _permitted(decision: Decision, constraints: Constraints) -> bool:
    allowed = constraints.allowed
    if isinstance(decision, Clarify):
        return constraints.ask
    return allowed is None or decision.expert in allowed
