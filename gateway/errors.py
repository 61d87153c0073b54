"""The one `GatewayError` tree. Each error knows its HTTP status and OpenAI error shape."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar


class GatewayError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code

    def headers(self) -> dict[str, str]:
        """HTTP headers the error response carries (e.g. Retry-After)."""
        return {}

    def error_object(self) -> dict[str, object]:
        """OpenAI's error object: the body is `{"error": <this>}`."""
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(GatewayError):
    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    default_code = "not_found"


class Forbidden(GatewayError):
    status = 403
    type = "permission_error"
    default_code = "admin_key_required"


class ExpertNotFound(NotFound):
    default_code = "model_not_found"


class UpstreamRejected(GatewayError):
    """An expert's upstream refused the request with a 4xx: the client gets that status,
    the upstream's error object as it was (`message`, `type`, `param`, `code`, and anything
    else in it) and its `Retry-After`, as if it had asked the upstream itself. The expert
    is named in the `X-Route-Expert` header."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        expert: str,
        error: Mapping[str, object] | None = None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status  # type: ignore[misc]  # this error's status is the upstream's
        self.type = _TYPES.get(status, "invalid_request_error")  # type: ignore[misc]
        self.expert = expert
        self.error = dict(error or {})
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        headers = {"X-Route-Expert": self.expert}
        if self.retry_after:
            headers["Retry-After"] = self.retry_after
        return headers

    def error_object(self) -> dict[str, object]:
        return {**super().error_object(), **self.error} if self.error else super().error_object()


# OpenAI's error types by status, for upstreams whose error body names none.
_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    default_code = "payload_too_large"


class ExpertCannotAnswer(GatewayError):
    """The expert found nothing it can do with this request and no fallback could."""

    status = 422
    type = "invalid_request_error"
    default_code = "expert_declined"


class ExpertBusy(GatewayError):
    """The expert is serving as many requests as it may, and no slot freed up in time."""

    status = 429
    type = "rate_limit_error"
    default_code = "expert_busy"


class EvaluationRunning(GatewayError):
    """An evaluation is already running on this gateway; they run one at a time."""

    status = 429
    type = "rate_limit_error"
    default_code = "evaluation_running"


class RateLimited(GatewayError):
    """The API key spent its requests or tokens for this minute."""

    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


class AuthUnavailable(GatewayError):
    """The key store (Redis) could not be read, so the key cannot be checked."""

    status = 503
    type = "service_unavailable"
    default_code = "auth_unavailable"


class NotReady(GatewayError):
    status = 503
    type = "service_unavailable"
    default_code = "not_ready"


class RoutingUnavailable(GatewayError):
    """The request needs the embedder (`model: auto`) and it failed."""

    status = 503
    type = "service_unavailable"
    default_code = "routing_unavailable"


class ExpertFailed(GatewayError):
    status = 502
    type = "upstream_error"
    default_code = "expert_failed"


class ExpertTimedOut(GatewayError):
    status = 504
    type = "upstream_error"
    default_code = "expert_timeout"


class ExpertDown(GatewayError):
    """The expert is unhealthy or unreachable and has no healthy fallback."""

    status = 503
    type = "service_unavailable"
    default_code = "expert_unavailable"
