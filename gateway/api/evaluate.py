"""`POST /admin/eval`: `taskgate eval` on JSONL texts sent in the request (admin keys)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.auth import RequestContext, admin_context
from gateway.api.documented import ERRORS
from gateway.eval_jobs import Evaluations
from gateway.service import Gateway

router = APIRouter(responses=ERRORS)
Admin = Annotated[RequestContext, Depends(admin_context)]


class EvalRequest(BaseModel):
    """The files of `taskgate eval --train --test [--val]`, as text: one
    `{"text": ..., "label": ...}` per line; label `oos` marks out-of-scope requests."""

    model_config = ConfigDict(extra="forbid")

    train: str = Field(min_length=1)
    test: str = Field(min_length=1)
    validation: str | None = Field(default=None, min_length=1)


@router.post("/admin/eval")
async def run_eval(body: EvalRequest, request: Request, context: Admin) -> JSONResponse:
    """Build a router from `train` as the gateway would (its router and embedder settings),
    route every `test` text, and answer the metrics, the most confused routes and the
    threshold curve. One evaluation at a time (429 while one runs)."""
    gateway: Gateway = request.app.state.gateway
    evaluations: Evaluations = request.app.state.evaluations
    result = await evaluations.run(gateway.config, body.train, body.test, body.validation)
    return JSONResponse(result)
