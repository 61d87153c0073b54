"""The server's caps on one request: how many messages, how long each, how many tokens."""

from __future__ import annotations

from gateway.config import ServerConfig
from gateway.errors import InvalidRequest
from gateway.outcomes import ChatCall


def within_caps(call: ChatCall, server: ServerConfig) -> ChatCall:
    if len(call.messages) > server.max_messages:
        raise InvalidRequest(
            f"messages: {len(call.messages)} messages; this gateway takes at most "
            f"{server.max_messages}",
            param="messages",
            code="too_many_messages",
        )
    for index, message in enumerate(call.messages):
        if len(message.content) > server.max_message_chars:
            raise InvalidRequest(
                f"messages[{index}].content: {len(message.content)} characters; this "
                f"gateway takes at most {server.max_message_chars} a message",
                param=f"messages.{index}.content",
                code="message_too_long",
            )
    wanted = call.sampling.max_tokens
    if wanted is not None and wanted > server.max_tokens:
        key = call.sampling.max_tokens_key
        raise InvalidRequest(
            f"{key}: {wanted} is over this gateway's cap of {server.max_tokens}",
            param=key,
            code="max_tokens_too_large",
        )
    n = call.extra.get("n")
    if isinstance(n, int) and n > server.max_n:
        raise InvalidRequest(
            f"n: {n} choices; this gateway gives at most {server.max_n} a request",
            param="n",
            code="n_too_large",
        )
    return call
