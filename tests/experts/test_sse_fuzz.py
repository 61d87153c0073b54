"""Fuzzing the `openai` expert's stream reading: SSE framing, chunk parsing, and the whole
path from bytes on a socket to deltas. Whatever an upstream sends, the expert yields
deltas or raises one of the expert errors, within its timeout; never anything else.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experts.base import Delta, ExpertError, ExpertRequest, Message
from experts.openai_compat import MalformedUpstream, OpenAIExpert, SSEDecoder
from experts.openai_wire import parse_chunk
from experts.specs import OpenAISpec
from tests.support.upstream import Stream, upstream_server

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
CHUNKISH = st.fixed_dictionaries(
    {},
    optional={
        "choices": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "index": st.integers(-1, 2) | JSON,
                    "delta": st.fixed_dictionaries({}, optional={"content": JSON}) | JSON,
                    "finish_reason": st.sampled_from(["stop", "length", None]) | JSON,
                },
            )
            | JSON,
            max_size=3,
        )
        | JSON,
        "usage": st.fixed_dictionaries(
            {},
            optional={"prompt_tokens": JSON, "completion_tokens": JSON, "total_tokens": JSON},
        )
        | JSON,
        "error": JSON,
    },
)
LINES = st.one_of(
    st.text(max_size=60),
    st.builds(lambda v: "data: " + json.dumps(v), CHUNKISH),
    st.builds(lambda v: "data: " + json.dumps(v), JSON),
    st.sampled_from(["", "data: [DONE]", ": keep-alive", "event: x", "data:", "data: {"]),
)


@settings(max_examples=400, deadline=None, database=None)
@given(st.lists(LINES, max_size=20))
def test_framing_and_chunk_parsing_fail_only_as_malformed(lines: list[str]) -> None:
    decoder = SSEDecoder()
    for line in [*lines, ""]:
        data = decoder.feed(line)
        if data is None or data == "[DONE]":
            continue
        try:
            parsed = parse_chunk(data)
        except MalformedUpstream:
            continue
        assert parsed is None or isinstance(parsed, Delta)


def _piece(line: str) -> bytes:
    return (line + "\n").encode()


PIECES = st.lists(
    st.one_of(
        LINES.map(_piece),
        st.binary(max_size=40),
        st.sampled_from([b"\n", b"\r\n", b"data: [DONE]\n\n"]),
    ),
    max_size=12,
)


async def _stream_through_a_socket(pieces: list[bytes], abort: bool) -> None:
    answer = Stream(*pieces, abort=abort)
    async with upstream_server(answer) as upstream:
        spec = OpenAISpec(
            name="fuzz", kind="openai", description="d", base_url=f"{upstream.url}/v1",
            model="m", timeout_s=5, max_retries=0,
        )  # fmt: skip
        expert = OpenAIExpert(spec, retry_backoff_s=0.0)
        request = ExpertRequest(messages=(Message("user", "hi"),))
        try:
            async with asyncio.timeout(10):
                async for delta in expert.stream(request):
                    assert isinstance(delta, Delta)
        except ExpertError:
            pass
        finally:
            await expert.aclose()


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(PIECES, st.booleans())
def test_any_bytes_from_the_upstream_end_as_deltas_or_an_expert_error(
    pieces: list[bytes], abort: bool
) -> None:
    asyncio.run(_stream_through_a_socket(pieces, abort))


# Findings, kept as regression tests.


@pytest.mark.parametrize(
    "data",
    ["[" * 100_000, '{"choices": ' + "[" * 100_000, '{"usage": {"prompt_tokens": 1e999}}'],
    ids=["deep-array", "deep-choices", "huge-float"],
)
def test_pathological_chunks_are_malformed(data: str) -> None:
    with pytest.raises(MalformedUpstream):
        parse_chunk(data)
