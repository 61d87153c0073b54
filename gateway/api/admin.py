"""Operator routes: reload the config live, and see each expert's state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from gateway.api.auth import RequestContext, admin_context
from gateway.api.documented import ERRORS
from gateway.config import Config, ConfigError
from gateway.errors import InvalidRequest
from gateway.service import Gateway

router = APIRouter(responses=ERRORS)
Admin = Annotated[RequestContext, Depends(admin_context)]
ConfigSource = Callable[[], Config]


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


async def reload_config(gateway: Gateway, source: ConfigSource | None) -> list[str]:
    """Load and validate the config, then swap it in; an invalid one changes nothing."""
    if source is None:
        raise InvalidRequest("this gateway runs the embedded default; there is nothing to reload")
    try:
        config = await anyio.to_thread.run_sync(source)
    except ConfigError as exc:
        first = exc.issues[0].path if exc.issues else None
        raise InvalidRequest(
            f"invalid config, nothing changed:\n{exc}", param=first, code="invalid_config"
        ) from exc
    return await gateway.reload(config)


@router.post("/admin/reload")
async def reload(request: Request, context: Admin) -> JSONResponse:
    experts = await reload_config(_gateway(request), request.app.state.config_source)
    return JSONResponse({"status": "reloaded", "experts": experts})


@router.get("/admin/experts")
async def experts(request: Request, context: Admin) -> JSONResponse:
    """Each expert: kind, health, config examples and learned exemplars, and what this
    process saw: requests routed to it and the latency of its recent answers."""
    reports = await _gateway(request).expert_reports()
    return JSONResponse({"object": "list", "data": [r.to_json() for r in reports]})


@router.get("/admin/requests")
async def requests(
    request: Request, context: Admin, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> JSONResponse:
    """The caller's tenant's latest requests (this process, newest first): the text routed,
    and the decision; promote one with `POST /v1/exemplars`."""
    logged = _gateway(request).activity.recent_requests(context.tenant, limit)
    return JSONResponse({"object": "list", "data": [asdict(r) for r in logged]})


@router.get("/admin/cache")
async def cache(request: Request, context: Admin) -> JSONResponse:
    """Response cache lookups and hits in this process since it started."""
    seen = _gateway(request).activity.cache()
    hits = {"exact": seen.exact, "semantic": seen.semantic}
    return JSONResponse({"lookups": seen.lookups, "hits": hits, "hit_rate": seen.hit_rate})
