"""What the OpenAPI schema says of responses beyond the happy path: the error body every
4xx/5xx carries, and the content types a route may answer with."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """OpenAI's error shape."""

    error: ErrorDetail


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("invalid request: the message and `param` name the problem"),
    401: _error("missing, invalid or revoked API key"),
    403: _error("this needs an admin key"),
    404: _error("no such expert, exemplar or completion"),
    413: _error("request body over server.max_body_bytes"),
    422: _error("the expert could not do anything with this request"),
    429: _error("rate limit, or the expert is at its concurrency limit (see Retry-After)"),
    502: _error("the expert failed"),
    503: _error("the gateway is starting, or a component it needs is down"),
    504: _error("the expert did not answer in time"),
}
JSON_OR_SSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "a chat completion, or with `stream: true` server-sent chunks",
        "content": {"application/json": {}, "text/event-stream": {}},
    }
}
PROMETHEUS_TEXT: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "metrics in the Prometheus text format",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}
