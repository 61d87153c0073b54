"""What the gateway learns, and how it uses it.

* a resolved clarification makes the original request an exemplar of the chosen expert;
* feedback on an answer makes the request (and, if rated up, the answer) an exemplar;
* operators add, list and delete exemplars directly;
* an expert with `fewshot: k` gets the k most similar good exemplars, with their answers,
  as user/assistant turns before the request.

Runtime exemplars belong to a tenant; routing counts them for that tenant only.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from experts.base import Message
from gateway.config import Config
from gateway.errors import ExpertNotFound, InvalidRequest, NotFound
from gateway.memory.bundle import Memory
from gateway.memory.pending import CompletionRecord
from gateway.memory.records import Exemplar, Source, Vector
from gateway.routing.embedder import Embedder

MAX_EXEMPLAR_CHARS = 8000


@dataclass(frozen=True, slots=True)
class Feedback:
    completion_id: str
    rating: int
    exemplar: Exemplar


class Learning:
    def __init__(self, memory: Memory, embedder: Embedder) -> None:
        self._memory = memory
        self._embedder = embedder

    async def learn_clarification(
        self, tenant: str, expert: str, text: str, vector: Vector
    ) -> Exemplar:
        """The request a user clarified becomes an exemplar of the expert they chose."""
        exemplar = _exemplar(tenant, expert, text, vector, "clarification")
        await self._memory.exemplars.add([exemplar])
        return exemplar

    async def remember_completion(self, record: CompletionRecord, ttl_s: float) -> None:
        await self._memory.conversation.put_completion(record, ttl_s)

    async def feedback(self, tenant: str, completion_id: str, rating: int) -> Feedback:
        """Rate an answer: +1 stores request and answer as a good exemplar, -1 as a bad one."""
        record = await self._memory.conversation.get_completion(tenant, completion_id)
        if record is None:
            raise NotFound(
                f"no answer '{completion_id}' to rate (unknown, another tenant's, or expired)",
                param="id",
            )
        vector = (await self._embedder.embed([record.text]))[0]
        exemplar = _exemplar(
            tenant, record.expert, record.text, vector, "feedback",
            response=record.answer, good=rating > 0, key=completion_id,
        )  # fmt: skip
        await self._memory.exemplars.add([exemplar])
        return Feedback(completion_id, rating, exemplar)

    async def add(
        self,
        config: Config,
        tenant: str,
        expert: str,
        text: str,
        response: str | None,
        good: bool,
    ) -> Exemplar:
        if config.expert(expert) is None:
            raise ExpertNotFound(f"unknown expert '{expert}'", param="expert")
        if not text.strip() or len(text) > MAX_EXEMPLAR_CHARS:
            raise InvalidRequest(f"text must be 1 to {MAX_EXEMPLAR_CHARS} characters", param="text")
        vector = (await self._embedder.embed([text]))[0]
        exemplar = _exemplar(tenant, expert, text, vector, "api", response=response, good=good)
        await self._memory.exemplars.add([exemplar])
        return exemplar

    async def listing(
        self, tenant: str, expert: str | None, source: Source | None, limit: int, offset: int
    ) -> list[Exemplar]:
        return await self._memory.exemplars.list_records(
            tenant=tenant, expert=expert, source=source, limit=limit, offset=offset
        )

    async def delete(self, tenant: str, exemplar_id: str) -> None:
        found = await self._memory.exemplars.get(exemplar_id)
        if found is None or found.tenant != tenant:
            raise NotFound(f"no exemplar '{exemplar_id}'", param="id")
        await self._memory.exemplars.remove([exemplar_id])

    async def fewshot(
        self, tenant: str, expert: str, k: int, vector: Vector, messages: Sequence[Message]
    ) -> tuple[Message, ...]:
        """`messages` with the k most similar answered good exemplars before the request."""
        if k <= 0:
            return tuple(messages)
        hits = await self._memory.exemplars.search(
            vector, k * 2, expert=expert, tenant=tenant, good_only=True
        )
        shots = [hit.exemplar for hit in hits if hit.exemplar.response][:k]
        if not shots:
            return tuple(messages)
        turns: list[Message] = []
        for shot in reversed(shots):  # the most similar sits next to the request
            assert shot.response is not None
            turns += [Message("user", shot.text), Message("assistant", shot.response)]
        lead = 0
        while lead < len(messages) and messages[lead].role == "system":
            lead += 1
        return (*messages[:lead], *turns, *messages[lead:])


def _exemplar(
    tenant: str,
    expert: str,
    text: str,
    vector: Vector,
    source: Source,
    *,
    response: str | None = None,
    good: bool = True,
    key: str | None = None,
) -> Exemplar:
    """Stable ids: learning the same text (or rating the same answer) again updates it."""
    basis = key if key is not None else text
    digest = hashlib.sha256(f"{tenant}\x00{expert}\x00{source}\x00{basis}".encode()).hexdigest()
    return Exemplar(
        id=f"{source[:3]}-{digest[:24]}",
        tenant=tenant,
        expert=expert,
        text=text,
        embedding=vector,
        response=response,
        source=source,
        created=time.time(),
        good=good,
    )


def exemplar_json(exemplar: Exemplar) -> dict[str, object]:
    return {
        "id": exemplar.id,
        "tenant": exemplar.tenant,
        "expert": exemplar.expert,
        "text": exemplar.text,
        "response": exemplar.response,
        "source": exemplar.source,
        "created": exemplar.created,
        "good": exemplar.good,
    }
