"""Optional OpenTelemetry tracing (off by default).

Spans are created through the OpenTelemetry API once a tracer provider is installed; until
then no span is made at all (the API's no-op spans still cost a context switch each).
`tracing: {enabled: true}` installs the SDK's provider, exporting
over OTLP/HTTP to `tracing.endpoint` (or the standard OTEL_EXPORTER_OTLP_* variables);
it needs the `tracing` extra (`pip install taskgate[tracing]`).
"""

from __future__ import annotations

import logging

from opentelemetry import trace

from gateway.config import TracingConfig

logger = logging.getLogger(__name__)

TRACER_NAME = "taskgate"


_active: trace.Tracer | None = None


def active_tracer() -> trace.Tracer | None:
    """taskgate's tracer once a tracer provider is installed (by `setup_tracing` or by the
    embedding application), else None."""
    global _active
    if _active is None and not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        _active = trace.get_tracer(TRACER_NAME)
    return _active


def setup_tracing(config: TracingConfig) -> bool:
    """Install an exporting tracer provider when tracing is enabled; True if it was."""
    if not config.enabled:
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise RuntimeError(
            "tracing.enabled needs the OpenTelemetry SDK: pip install 'taskgate[tracing]'"
        ) from exc
    provider = TracerProvider(resource=Resource.create({"service.name": config.service_name}))
    exporter = OTLPSpanExporter(endpoint=config.endpoint) if config.endpoint else OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    logger.info("tracing enabled", extra={"endpoint": config.endpoint or "from environment"})
    return True
