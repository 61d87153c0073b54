"""Routes for what the gateway learns: feedback on answers, and the exemplar admin API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from gateway.api.auth import RequestContext, admin_context, request_context
from gateway.api.documented import ERRORS
from gateway.api.schemas import ExemplarIn, FeedbackRequest
from gateway.learning import exemplar_json
from gateway.memory.records import Source
from gateway.service import Gateway

router = APIRouter(responses=ERRORS)
Context = Annotated[RequestContext, Depends(request_context)]
# Writing exemplars changes routing for the whole tenant: admin keys only.
Admin = Annotated[RequestContext, Depends(admin_context)]


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


@router.post("/v1/feedback")
async def feedback(body: FeedbackRequest, request: Request, context: Context) -> JSONResponse:
    result = await _gateway(request).feedback(context.tenant, body.id, body.rating)
    return JSONResponse(
        {
            "id": result.completion_id,
            "rating": result.rating,
            "exemplar": exemplar_json(result.exemplar),
        }
    )


@router.post("/v1/exemplars", status_code=201)
async def add_exemplar(body: ExemplarIn, request: Request, context: Admin) -> JSONResponse:
    exemplar = await _gateway(request).add_exemplar(
        context.tenant, body.expert, body.text, body.response, body.good
    )
    return JSONResponse(exemplar_json(exemplar), status_code=201)


@router.get("/v1/exemplars")
async def list_exemplars(
    request: Request,
    context: Context,
    expert: str | None = None,
    source: Source | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> JSONResponse:
    found = await _gateway(request).exemplars(context.tenant, expert, source, limit, offset)
    return JSONResponse({"object": "list", "data": [exemplar_json(e) for e in found]})


@router.delete("/v1/exemplars/{exemplar_id}", status_code=204)
async def delete_exemplar(exemplar_id: str, request: Request, context: Admin) -> Response:
    await _gateway(request).delete_exemplar(context.tenant, exemplar_id)
    return Response(status_code=204)
