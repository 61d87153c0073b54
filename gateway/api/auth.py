"""Who is asking: the API key names the tenant and its rights; every request spends one
of the key's requests per minute (see `gateway.access`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from fastapi import Request

from gateway.access.gate import Access, Principal

_MAX_REQUEST_ID = 128


@dataclass(frozen=True, slots=True)
class RequestContext:
    tenant: str
    request_id: str
    principal: Principal


def new_request_id(given: str) -> str:
    """The client's request id when it is sane, else a fresh one."""
    if given and len(given) <= _MAX_REQUEST_ID and given.isprintable():
        return given
    return uuid.uuid4().hex


def access(request: Request) -> Access:
    gate: Access = request.app.state.access
    return gate


async def _context(request: Request, *, admin: bool, tokens: bool) -> RequestContext:
    gate = access(request)
    config = request.app.state.gateway.config
    principal = await gate.authenticate(config, request.headers.get("authorization"))
    if admin:
        gate.require_admin(principal)
    await gate.admit(principal, tokens=tokens)
    return RequestContext(principal.tenant, request.state.request_id, principal)


async def request_context(request: Request) -> RequestContext:
    return await _context(request, admin=False, tokens=False)


async def chat_context(request: Request) -> RequestContext:
    """Like `request_context`, and the key must have tokens left this minute."""
    return await _context(request, admin=False, tokens=True)


async def admin_context(request: Request) -> RequestContext:
    """Like `request_context`, but only keys marked `admin: true` pass (when auth is on)."""
    return await _context(request, admin=True, tokens=False)
