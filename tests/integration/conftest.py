"""Fixtures for tests against real servers (marked `integration`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.vllm import VLLMServer, vllm_server_session


@pytest.fixture(scope="session")
def vllm_server() -> Iterator[VLLMServer]:
    """A real vLLM server serving SmolLM2-135M-Instruct as "smollm2" (or TASKGATE_VLLM_URL's).

    Started once per test session on a free loopback port, stopped at the end.
    """
    with vllm_server_session() as server:
        yield server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
