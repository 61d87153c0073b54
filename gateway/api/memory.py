"""Routes for what the gateway learns: feedback on answers, and the exemplar admin API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from gateway.api.auth import RequestContext, access, admin_context, request_context
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
    """The tenant's learned exemplars; `source=config` lists the configured examples instead
    (read-only, shared by every tenant; admin keys only)."""
    gateway = _gateway(request)
    if source == "config":
        access(request).require_admin(context.principal)
        examples = [
            _config_example(spec.name, i, text)
            for spec in gateway.config.experts
            if expert is None or spec.name == expert
            for i, text in enumerate(spec.examples)
        ]
        return JSONResponse({"object": "list", "data": examples[offset : offset + limit]})
    found = await gateway.exemplars(context.tenant, expert, source, limit, offset)
    return JSONResponse({"object": "list", "data": [exemplar_json(e) for e in found]})


def _config_example(expert: str, index: int, text: str) -> dict[str, object]:
    return {
        "id": f"config:{expert}:{index}",
        "tenant": None,
        "expert": expert,
        "text": text,
        "response": None,
        "source": "config",
        "created": None,
        "good": True,
    }


@router.delete("/v1/exemplars/{exemplar_id}", status_code=204)
async def delete_exemplar(exemplar_id: str, request: Request, context: Admin) -> Response:
    await _gateway(request).delete_exemplar(context.tenant, exemplar_id)
    return Response(status_code=204)
