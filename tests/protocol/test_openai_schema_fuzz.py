"""schemathesis with OpenAI's own request schema: the chat operation of OpenAI's published
OpenAPI spec (tests/conformance/openai-openapi) generates requests, which go to taskgate
with `model` set to each kind of target (an `openai` expert, `auto`, a text-only tool).

Whatever the generator makes of the schema, taskgate answers without a server error, and
every answer it gives is one OpenAI's schema allows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.protocol import canned
from tests.protocol.conftest import Rig
from tests.support.openai_spec import SPEC_FILE, validate_chat_chunk, validate_chat_completion

MODELS = ["code", "chat", "auto", "calculator"]


@pytest.fixture(scope="module")
def chat_operation() -> Iterator[schemathesis.APIOperation]:  # type: ignore[name-defined]
    schema = schemathesis.openapi.from_path(str(SPEC_FILE))
    yield schema["/chat/completions"]["POST"]


def test_openais_chat_requests_never_get_a_server_error(
    rig: Rig,
    chat_operation: schemathesis.APIOperation,  # type: ignore[name-defined]
) -> None:
    rig.upstream.script(canned.answering(canned.FINAL, canned.FINAL_CHUNKS))
    statuses: list[int] = []

    @given(case=chat_operation.as_strategy(), model=st.sampled_from(MODELS))
    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def answered(case: schemathesis.Case, model: str) -> None:
        assert isinstance(case.body, dict)
        body = {**case.body, "model": model}
        response = rig.http.post("/v1/chat/completions", json=body)
        statuses.append(response.status_code)
        assert response.status_code < 500, (body, response.text)
        if response.status_code != 200:
            assert set(response.json()) == {"error"}
            return
        if body.get("stream") is True:
            lines = [line for line in response.text.splitlines() if line.startswith("data: ")]
            assert lines[-1] == "data: [DONE]"
            for line in lines[:-1]:
                validate_chat_chunk(json.loads(line.removeprefix("data: ")))
        else:
            validate_chat_completion(response.json())

    answered()
    # The generated requests reached the experts, not only the validation.
    assert statuses.count(200) >= 20, statuses
