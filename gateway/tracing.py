"""Optional OpenTelemetry tracing (off by default).

Spans are always created through the OpenTelemetry API, which costs nothing until a tracer
provider is installed. `tracing: {enabled: true}` installs the SDK's provider, exporting
over OTLP/HTTP to `tracing.endpoint` (or the standard OTEL_EXPORTER_OTLP_* variables);
it needs the `tracing` extra (`pip install taskgate[tracing]`).
"""

from __future__ import annotations

import logging

from opentelemetry import trace

from gateway.config import TracingConfig

logger = logging.getLogger(__name__)

TRACER_NAME = "taskgate"


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


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
