"""Who is asking: the API key (when keys are configured) names the tenant."""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass

from fastapi import Request

from gateway.config import ApiKey, AuthConfig
from gateway.errors import Forbidden, Unauthorized

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


def key_for(auth: AuthConfig, authorization: str | None) -> ApiKey | None:
    """The configured key the request presents; None when authentication is off."""
    if not auth.keys:
        return None
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    for entry in auth.keys:
        if hmac.compare_digest(entry.key.get_secret_value().encode(), token.strip().encode()):
            return entry
    raise Unauthorized("invalid API key")


def tenant_for(auth: AuthConfig, authorization: str | None) -> str:
    key = key_for(auth, authorization)
    return key.tenant if key is not None else DEFAULT_TENANT


async def request_context(request: Request) -> RequestContext:
    auth: AuthConfig = request.app.state.gateway.config.auth
    tenant = tenant_for(auth, request.headers.get("authorization"))
    return RequestContext(tenant, request.state.request_id)


async def admin_context(request: Request) -> RequestContext:
    """Like `request_context`, but only keys marked `admin: true` pass (when auth is on)."""
    auth: AuthConfig = request.app.state.gateway.config.auth
    key = key_for(auth, request.headers.get("authorization"))
    if key is not None and not key.admin:
        raise Forbidden("this endpoint needs an API key with admin: true")
    tenant = key.tenant if key is not None else DEFAULT_TENANT
    return RequestContext(tenant, request.state.request_id)
