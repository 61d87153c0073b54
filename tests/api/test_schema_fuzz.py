"""schemathesis against the app's own OpenAPI schema: no 5xx, every response as documented.

Bounded: a few dozen generated requests per operation, against a real server on loopback
with scripted experts, an admin key and a rate limit high enough not to interfere.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from experts.registry import ExpertSet
from gateway.api.app import build_app
from gateway.config import parse_config
from gateway.service import Gateway
from tests.api.conftest import local_memory, wait_ready
from tests.fakes import KeywordEmbedder, ScriptedExpert
from tests.support.asgi import serve
from tests.support.keys import auth_block, entry, token

CONFIG = (
    auth_block(entry("fuzz", admin=True))
    + """
server: {max_body_bytes: 65536, max_tokens: 1000}
router: {threshold: 0.45, margin: 0.04, use_descriptions: false}
experts:
  - {name: calculator, kind: tool, tool: calculator, ask: do arithmetic,
     description: arithmetic, examples: [compute, percent]}
  - {name: units, kind: tool, tool: units, ask: convert units,
     description: measurements, examples: [convert, miles], fewshot: 1}
"""
)
HEADERS = {"Authorization": f"Bearer {token('fuzz')}"}
# What the schema promises: no server error, and status, content type, headers and body as
# documented. Not "every schema-valid request succeeds": some rules are not in the schema
# (a user message must have text; the server's caps are configuration).
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
]


@pytest.fixture(scope="module")
def api_schema() -> Iterator[schemathesis.BaseSchema]:
    config = parse_config(CONFIG, "fuzz.yaml", {})
    experts = [ScriptedExpert("calculator", ["12"]), ScriptedExpert("units", ["3 km"])]
    embedder = KeywordEmbedder(["compute", "percent", "convert", "miles"])
    gateway = Gateway(config, embedder, ExpertSet(experts), local_memory())
    with serve(build_app(gateway, config.server.max_body_bytes)) as url:
        wait_ready(url)
        yield schemathesis.openapi.from_url(f"{url}/openapi.json")


def test_the_api_honours_its_schema(api_schema: schemathesis.BaseSchema) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=60,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def honoured(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=HEADERS, timeout=10, checks=CHECKS)

        honoured()
