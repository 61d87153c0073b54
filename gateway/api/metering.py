"""Token budgets: a reply's tokens are charged to its API key once the reply ends."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import AsyncIterator

from experts.base import Delta
from gateway.access.gate import Access, Principal
from gateway.outcomes import ChatCall, Reply
from gateway.streams import close_stream

# Where an expert reports no usage: about four characters a token.
_CHARS_PER_TOKEN = 4


def metered(reply: Reply, gate: Access, principal: Principal, call: ChatCall) -> Reply:
    if principal.tpm is None:
        return reply
    return dataclasses.replace(reply, deltas=_charging(reply.deltas, gate, principal, call))


async def _charging(
    deltas: AsyncIterator[Delta], gate: Access, principal: Principal, call: ChatCall
) -> AsyncIterator[Delta]:
    reported: int | None = None
    characters = 0
    try:
        async for delta in deltas:
            characters += len(delta.content)
            if delta.usage is not None:
                reported = delta.usage.total_tokens
            yield delta
    finally:
        await close_stream(deltas)
        if reported is None:
            prompt = sum(len(m.content) for m in call.messages)
            reported = math.ceil((prompt + characters) / _CHARS_PER_TOKEN)
        await gate.charge_tokens(principal, reported)
