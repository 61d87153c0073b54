"""`/v1/completions`, `/v1/embeddings` and `/v1/responses`: passed through to the expert the
request names (see `gateway.passthrough`), with the key's budgets as for chat."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from experts.specs import Endpoint
from gateway.access.gate import Access, Principal
from gateway.api.auth import RequestContext, access, chat_context
from gateway.api.documented import ERRORS
from gateway.api.sse import relay_error_event, route_headers
from gateway.errors import GatewayError
from gateway.passthrough import ForwardCall, Passed
from gateway.service import Gateway

logger = logging.getLogger(__name__)

router = APIRouter(responses=ERRORS)
ChatContext = Annotated[RequestContext, Depends(chat_context)]

_MODEL = (
    "the expert that answers, by name (GET /v1/models lists them); the request goes to its "
    "upstream with the upstream's model name"
)


class _Passed(BaseModel):
    """Only `model` is read; every field goes to the upstream as it was sent."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, description=_MODEL)


class EmbeddingsRequest(_Passed):
    input: JsonValue = Field(default=None, description="text (or tokens) to embed")


class CompletionsRequest(_Passed):
    prompt: JsonValue = Field(default=None, description="the text to complete")
    stream: bool = Field(default=False, description="relay the upstream's events as they come")


class ResponsesRequest(_Passed):
    model: str = Field(
        min_length=1,
        description=f"{_MODEL}; or `auto`: routed on the text of the input among the experts "
        "that serve responses (the best answers; no clarification question is asked)",
    )
    input: JsonValue = Field(default=None, description="a string, or a list of input items")
    stream: bool = Field(default=False, description="relay the upstream's events as they come")


def _answers(what: str, streams: bool) -> dict[int | str, dict[str, Any]]:
    content: dict[str, Any] = {"application/json": {"schema": {"type": "object"}}}
    if streams:
        content["text/event-stream"] = {"schema": {"type": "string"}}
        what += "; with `stream: true`, its server-sent events"
    return {200: {"description": what, "content": content}}


@router.post(
    "/v1/embeddings",
    response_model=None,
    responses=_answers("the upstream's embeddings, as it sent them", streams=False),
)
async def embeddings(body: EmbeddingsRequest, request: Request, context: ChatContext) -> Response:
    """Embeddings from the named expert's upstream, passed through whole."""
    return await _pass("embeddings", body, request, context)


@router.post(
    "/v1/completions",
    response_model=None,
    responses=_answers("the upstream's completion, as it sent it", streams=True),
)
async def completions(body: CompletionsRequest, request: Request, context: ChatContext) -> Response:
    """A text completion from the named expert's upstream, passed through whole."""
    return await _pass("completions", body, request, context)


@router.post(
    "/v1/responses",
    response_model=None,
    responses=_answers("the upstream's response, as it sent it", streams=True),
)
async def responses(body: ResponsesRequest, request: Request, context: ChatContext) -> Response:
    """A response from the named expert's upstream, passed through whole; with `auto`,
    from the expert that routing picks among those that serve responses."""
    return await _pass("responses", body, request, context)


async def _pass(
    endpoint: Endpoint, body: _Passed, request: Request, context: RequestContext
) -> Response:
    gateway: Gateway = request.app.state.gateway
    sent = body.model_dump(mode="json", exclude_unset=True)
    call = ForwardCall(endpoint, sent, context.tenant, context.request_id)
    passed = await gateway.forward(call)
    gate, principal = access(request), context.principal
    headers = route_headers(passed.route)
    if passed.streamed:
        return StreamingResponse(
            _relayed(passed, endpoint, gate, principal),
            status_code=passed.status,
            media_type=passed.content_type,
            headers={**headers, "Cache-Control": "no-cache"},
        )
    try:
        whole = await passed.read()
    finally:
        await gate.charge_tokens(principal, passed.tokens)
    return Response(whole, passed.status, headers, passed.content_type)


async def _relayed(
    passed: Passed, endpoint: Endpoint, gate: Access, principal: Principal
) -> AsyncIterator[bytes]:
    """The upstream's events; a failure once they flow becomes one error event."""
    try:
        try:
            async for data in passed.events():
                yield data
        except Exception as exc:  # headers are gone: report in-band
            if not isinstance(exc, GatewayError):
                logger.exception("passthrough stream failed", extra={"expert": passed.expert})
            yield relay_error_event(endpoint, exc, passed.events_sent)
    finally:
        await passed.aclose()
        await gate.charge_tokens(principal, passed.tokens)
