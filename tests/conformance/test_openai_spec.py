"""The OpenAI-spec helper (`tests/support/openai_spec.py`) itself, on hand-made bodies.

No server is needed: these only check that the helper accepts what OpenAI's published spec
(vendored in `openai-openapi/`, OpenAPI 3.1.0, info.version 2.3.0) accepts and rejects what
it rejects, with an `AssertionError` that names the JSON path.

What that spec requires, as found here (extra properties, such as the gateway's `route`,
are allowed everywhere below: none of these schemas sets `additionalProperties: false`):

- a chat completion (`CreateChatCompletionResponse`): `id`, `object` (only
  "chat.completion"), `created` (integer), `model`, `choices`; `usage` is optional but,
  when present, is not nullable and needs `prompt_tokens`, `completion_tokens` and
  `total_tokens`;
- each of its `choices`: `index`, `message`, `finish_reason` (one of stop, length,
  tool_calls, content_filter, function_call; not null) and `logprobs` (required, may be
  null);
- its `message` (`ChatCompletionResponseMessage`): `role` (only "assistant"), `content`
  and `refusal` (both required, both may be null); each `tool_calls` item is a function
  call (`id`, `type` "function", `function` with `name` and `arguments`) or a custom one;
- a stream chunk (`CreateChatCompletionStreamResponse`): `id`, `object` (only
  "chat.completion.chunk"), `created`, `model`, `choices` (may be empty, as in the final
  usage chunk); `usage` may be null here;
- each of its `choices`: `index`, `delta`, `finish_reason` (required, may be null);
  `logprobs` is optional (null or an object with both `content` and `refusal`);
- a `delta` (`ChatCompletionStreamResponseDelta`): nothing is required (`{}` is valid);
  `role` may be any of developer, system, user, assistant, tool; a `tool_calls` chunk item
  needs only `index`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest

from tests.support import openai_spec
from tests.support.openai_spec import validate, validate_chat_chunk, validate_chat_completion


def completion() -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "taskgate-test",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello.", "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
    }


def chunk() -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "taskgate-test",
        "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": "He"}, "finish_reason": None}
        ],
    }


def test_a_minimal_chat_completion_passes() -> None:
    validate_chat_completion(completion())


def test_extra_properties_such_as_the_gateways_route_are_allowed() -> None:
    body = completion()
    body["route"] = {"expert": "code", "score": 0.9}
    body["choices"][0]["message"]["reasoning_content"] = None
    validate_chat_completion(body)


def test_a_completion_with_tool_calls_and_usage_passes() -> None:
    body = completion()
    body["choices"][0]["finish_reason"] = "tool_calls"
    body["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
            }
        ],
    }
    body["usage"] = {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}
    validate_chat_completion(body)


def test_stream_chunks_pass() -> None:
    validate_chat_chunk(chunk())
    last = chunk()
    last["choices"][0] = {"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}
    validate_chat_chunk(last)
    usage_only = chunk()
    usage_only["choices"] = []
    usage_only["usage"] = {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}
    validate_chat_chunk(usage_only)
    no_usage = chunk()
    no_usage["usage"] = None  # `nullable: true` (OpenAPI 3.0 style) in the spec
    validate_chat_chunk(no_usage)


def test_a_tool_call_chunk_passes() -> None:
    body = chunk()
    body["choices"][0]["delta"] = {
        "tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f"}},
        ]
    }
    validate_chat_chunk(body)
    body["choices"][0]["delta"] = {"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}
    validate_chat_chunk(body)


def broken(edit: str) -> dict[str, Any]:
    body = completion()
    choice = body["choices"][0]
    if edit == "no choices":
        del body["choices"]
    elif edit == "bogus finish_reason":
        choice["finish_reason"] = "bogus"
    elif edit == "null finish_reason":
        choice["finish_reason"] = None
    elif edit == "chunk object":
        body["object"] = "chat.completion.chunk"
    elif edit == "no logprobs":
        del choice["logprobs"]
    elif edit == "no refusal":
        del choice["message"]["refusal"]
    elif edit == "string created":
        body["created"] = "1700000000"
    elif edit == "tool call without arguments":
        choice["message"]["tool_calls"] = [
            {"id": "call_1", "type": "function", "function": {"name": "f"}}
        ]
    elif edit == "partial usage":
        body["usage"] = {"prompt_tokens": 1}
    return body


@pytest.mark.parametrize(
    ("edit", "where", "reason"),
    [
        ("no choices", "$:", '"choices" is a required property'),
        ("bogus finish_reason", "$.choices[0].finish_reason:", '"bogus" is not one of'),
        ("null finish_reason", "$.choices[0].finish_reason:", "null is not"),
        ("chunk object", "$.object:", '"chat.completion.chunk" is not one of'),
        ("no logprobs", "$.choices[0]:", '"logprobs" is a required property'),
        ("no refusal", "$.choices[0].message:", '"refusal" is a required property'),
        ("string created", "$.created:", 'is not of type "integer"'),
        ("tool call without arguments", "$.choices[0].message.tool_calls[0]", "arguments"),
        ("partial usage", "$.usage:", '"total_tokens" is a required property'),
    ],
)
def test_wrong_completions_fail_with_the_path_and_the_reason(
    edit: str, where: str, reason: str
) -> None:
    with pytest.raises(AssertionError) as failure:
        validate_chat_completion(broken(edit))
    message = str(failure.value)
    assert "CreateChatCompletionResponse" in message
    assert any(where in line and reason in line for line in message.splitlines()), message


def test_wrong_chunks_fail() -> None:
    body = chunk()
    body["choices"][0]["finish_reason"] = "bogus"
    with pytest.raises(AssertionError, match=r"\$\.choices\[0\]\.finish_reason"):
        validate_chat_chunk(body)
    body = chunk()
    del body["choices"][0]["finish_reason"]
    with pytest.raises(AssertionError, match='"finish_reason" is a required property'):
        validate_chat_chunk(body)
    with pytest.raises(AssertionError, match=r"\$\.object"):
        validate_chat_chunk(completion())


def test_a_completion_is_not_a_chunk_and_the_reverse() -> None:
    with pytest.raises(AssertionError):
        validate_chat_completion(chunk())
    with pytest.raises(AssertionError):
        validate_chat_chunk(completion())


def test_validate_takes_any_component_schema_by_name() -> None:
    validate("CompletionUsage", {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3})
    with pytest.raises(AssertionError, match='"total_tokens" is a required property'):
        validate("CompletionUsage", {"prompt_tokens": 1, "completion_tokens": 2})
    with pytest.raises(KeyError, match="NoSuchSchema"):
        validate("NoSuchSchema", {})


def test_the_spec_fields_this_module_documents_are_still_required() -> None:
    schemas = openai_spec.spec()["components"]["schemas"]
    response, stream = schemas["CreateChatCompletionResponse"], schemas[openai_spec.CHAT_CHUNK]
    assert set(response["required"]) == {"id", "object", "created", "model", "choices"}
    assert set(response["properties"]["choices"]["items"]["required"]) == {
        "index",
        "message",
        "finish_reason",
        "logprobs",
    }
    assert set(schemas["ChatCompletionResponseMessage"]["required"]) == {
        "role",
        "content",
        "refusal",
    }
    assert set(stream["required"]) == {"id", "object", "created", "model", "choices"}
    assert set(stream["properties"]["choices"]["items"]["required"]) == {
        "index",
        "delta",
        "finish_reason",
    }
    assert "required" not in schemas["ChatCompletionStreamResponseDelta"]


def test_openapi_30_nullable_becomes_a_null_alternative() -> None:
    schema = {
        "type": "string",
        "enum": ["stop"],
        "nullable": True,
        "properties": {"n": {"$ref": "#/components/schemas/X", "nullable": True}},
    }
    converted = openai_spec.to_json_schema(schema)
    assert converted["anyOf"][1] == {"type": "null"}
    assert "nullable" not in converted["anyOf"][0]
    inner = converted["anyOf"][0]["properties"]["n"]
    assert inner == {"anyOf": [{"$ref": "#/components/schemas/X"}, {"type": "null"}]}
    assert openai_spec.to_json_schema({"nullable": False, "type": "string"}) == {"type": "string"}
    assert openai_spec.to_json_schema(
        {"type": "number", "minimum": 0, "exclusiveMinimum": True}
    ) == {"type": "number", "exclusiveMinimum": 0}
    # A property that happens to be called "nullable" is a property, not the keyword.
    kept = openai_spec.to_json_schema({"properties": {"nullable": {"type": "boolean"}}})
    assert kept == {"properties": {"nullable": {"type": "boolean"}}}


def test_every_component_schema_of_the_spec_converts_and_compiles() -> None:
    schemas = openai_spec.json_schemas()
    assert len(schemas) > 100

    def keywords(node: Any, in_map: bool = False) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if not in_map:
                    yield key
                yield from keywords(value, in_map=key in {"properties", "patternProperties"})
        elif isinstance(node, list):
            for item in node:
                yield from keywords(item)

    assert "nullable" not in set(keywords(schemas))
    everything = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "anyOf": [{"$ref": f"#/components/schemas/{name}"} for name in schemas],
        "components": {"schemas": schemas},
    }
    jsonschema_rs.Draft202012Validator(everything, validate_formats=False, offline=True)
