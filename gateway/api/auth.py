"""Who is asking: the API key (when keys are configured) names the tenant."""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass

from fastapi import Request

from gateway.config import AuthConfig
from gateway.errors import Unauthorized

DEFAULT_TENANT = "default"
_MAX_REQUEST_ID = 128


@dataclass(frozen=True, slots=True)
class RequestContext:
    tenant: str
    request_id: str


def new_request_id(given: str) -> str:
    """The client's request id when it is sane, else a fresh one."""
    if given and len(given) <= _MAX_REQUEST_ID and given.isprintable():
        return given
    return uuid.uuid4().hex


def tenant_for(auth: AuthConfig, authorization: str | None) -> str:
    if not auth.keys:
        return DEFAULT_TENANT
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    for entry in auth.keys:
        if hmac.compare_digest(entry.key.get_secret_value().encode(), token.strip().encode()):
            return entry.tenant
    raise Unauthorized("invalid API key")


async def request_context(request: Request) -> RequestContext:
    auth: AuthConfig = request.app.state.gateway.config.auth
    tenant = tenant_for(auth, request.headers.get("authorization"))
    return RequestContext(tenant, request.state.request_id)
