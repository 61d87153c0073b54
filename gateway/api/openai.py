"""OpenAI-compatible routes: thin handlers that hand requests to the `Gateway`."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from gateway.api.auth import RequestContext, access, chat_context, request_context
from gateway.api.caps import within_caps
from gateway.api.documented import ERRORS, JSON_OR_SSE, PROMETHEUS_TEXT
from gateway.api.metering import metered
from gateway.api.schemas import ChatCompletionRequest, RouteRequest
from gateway.api.sse import chat_events, drain_reply, route_headers
from gateway.errors import ExpertNotFound
from gateway.service import AUTO, CONTENT_TYPE, Gateway

router = APIRouter(responses=ERRORS)
Context = Annotated[RequestContext, Depends(request_context)]
ChatContext = Annotated[RequestContext, Depends(chat_context)]


def cache_control(request: Request) -> frozenset[str]:
    """The request's Cache-Control directives, lower-cased (`no-cache`, `no-store`)."""
    header = request.headers.get("cache-control", "")
    return frozenset(part.strip().lower() for part in header.split(",") if part.strip())


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


@router.post("/v1/chat/completions", response_model=None, responses=JSON_OR_SSE)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, context: ChatContext
) -> Response:
    gateway = _gateway(request)
    call = body.to_call(context.tenant, context.request_id, cache_control(request))
    call = within_caps(call, gateway.config.server)
    reply = metered(await gateway.handle(call), access(request), context.principal, call)
    headers = route_headers(reply.route)
    if call.stream:
        return StreamingResponse(
            chat_events(reply, body.include_usage),
            media_type="text/event-stream",
            headers={**headers, "Cache-Control": "no-cache"},
        )
    return JSONResponse(await drain_reply(reply), headers=headers)


@router.post("/v1/route")
async def route(body: RouteRequest, request: Request, context: Context) -> JSONResponse:
    """The routing decision; with `explain: true` (admin keys) also the threshold and
    margin applied and the exemplars nearest the request, in `route.explain`."""
    gateway = _gateway(request)
    call = within_caps(body.to_call(context.tenant, context.request_id), gateway.config.server)
    if not body.explain:
        info = await gateway.route(call)
        return JSONResponse({"route": info.to_json()}, headers=route_headers(info))
    access(request).require_admin(context.principal)  # config examples are operator data
    info, explanation = await gateway.explain_route(call)
    data = {**info.to_json(), "explain": explanation.to_json()}
    return JSONResponse({"route": data}, headers=route_headers(info))


@router.get("/v1/models")
async def models(request: Request, context: Context) -> dict[str, object]:
    return {"object": "list", "data": _model_objects(request)}


@router.get("/v1/models/{model}")
async def retrieve_model(model: str, request: Request, context: Context) -> dict[str, object]:
    """One entry of `GET /v1/models`: `auto` or an expert."""
    for entry in _model_objects(request):
        if entry["id"] == model:
            return entry
    raise ExpertNotFound(f"no model '{model}'; GET /v1/models lists them", param="model")


def _model_objects(request: Request) -> list[dict[str, object]]:
    created = int(request.app.state.started_at)
    data: list[dict[str, object]] = [
        {
            "id": AUTO,
            "object": "model",
            "created": created,
            "owned_by": "taskgate",
            "description": "routes each request to the best expert",
        }
    ]
    for name, kind, description in _gateway(request).expert_profiles():
        data.append(
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "taskgate",
                "kind": kind,
                "description": description,
            }
        )
    return data


@router.get("/metrics", responses=PROMETHEUS_TEXT)
async def metrics(request: Request) -> Response:
    return Response(_gateway(request).metrics.exposition(), media_type=CONTENT_TYPE)


@router.get("/healthz")
async def healthz() -> dict[str, object]:
    return {"status": "ok", "time": time.time()}


@router.get("/readyz", response_model=None)
async def readyz(request: Request) -> JSONResponse:
    gateway = _gateway(request)
    failure: str | None = request.app.state.startup_error
    if gateway.ready:
        memory = gateway.memory_status()
        if not memory.ok:  # still serving: routing uses what it last synced
            body = {
                "status": "degraded",
                "detail": memory.detail,
                "queued_writes": memory.queued_writes,
            }
            return JSONResponse(body)
        return JSONResponse({"status": "ready"})
    status = "failed" if failure else "starting"
    return JSONResponse({"status": status, "detail": failure}, status_code=503)
