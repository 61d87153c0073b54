from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from experts.base import Message
from experts.registry import ExpertSet
from gateway.config import TracingConfig, parse_config
from gateway.outcomes import ChatCall
from gateway.service import Gateway
from gateway.tracing import setup_tracing
from tests.api.conftest import local_memory
from tests.fakes import KeywordEmbedder, ScriptedExpert

pytestmark = pytest.mark.anyio

CONFIG = (
    "auth: none\n"
    "experts:\n  - {name: calc, kind: tool, tool: calculator, description: d, examples: [sum]}\n"
)


def test_tracing_is_off_by_default() -> None:
    assert setup_tracing(TracingConfig()) is False


async def test_a_chat_request_is_one_span_with_its_route() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # once per process; other tests' spans are harmless
    config = parse_config(CONFIG, "t.yaml", {})
    gateway = Gateway(
        config, KeywordEmbedder(["sum"]), ExpertSet([ScriptedExpert("calc", ["2"])]),
        local_memory(),
    )  # fmt: skip
    await gateway.start()
    try:
        reply = await gateway.handle(ChatCall("auto", (Message("user", "sum"),), request_id="r1"))
        async for _ in reply.deltas:
            pass
    finally:
        await gateway.aclose()
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "taskgate.chat"]
    attributes = dict(span.attributes or {})
    assert attributes["taskgate.request_id"] == "r1"
    assert attributes["taskgate.action"] == "dispatch"
    assert attributes["taskgate.expert"] == "calc"
