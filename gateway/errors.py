"""The one `GatewayError` tree. Each error knows its HTTP status and OpenAI error shape."""

from __future__ import annotations

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
