"""Validate JSON bodies against OpenAI's own published OpenAPI spec.

The spec is vendored, unchanged, under `tests/conformance/openai-openapi/` (its origin,
version and licence are in `SOURCE.txt` there). It is read once per process and its
`components/schemas` are converted to plain JSON Schema (draft 2020-12) before any body is
checked, because the published document mixes two dialects:

- OpenAPI 3.1 / JSON Schema style: `anyOf: [..., {type: "null"}]`;
- OpenAPI 3.0 style left in it: `nullable: true` (e.g. a chunk's `finish_reason`, or
  `usage: {$ref: CompletionUsage, nullable: true}`), and boolean `exclusiveMinimum`.

`nullable: true` becomes `anyOf: [<the schema without it>, {type: "null"}]`, so that null is
allowed even where the schema has an `enum` or only a `$ref` (OpenAPI 3.0.3's reading);
`nullable: false` is dropped. A boolean `exclusiveMinimum`/`exclusiveMaximum` becomes the
numeric form. Everything else keeps the spec's semantics: `$ref`s to
`#/components/schemas/...` resolve inside the converted document, properties the schema
does not name are allowed unless it says `additionalProperties: false`, `format` is an
annotation (not asserted, as in draft 2020-12), and OpenAPI-only keywords (`discriminator`,
`x-*`, `example`) are ignored.

Validation uses `jsonschema_rs` (a dependency of schemathesis, which the dev extras pin).

    validate_chat_completion(body)   # CreateChatCompletionResponse
    validate_chat_chunk(body)        # CreateChatCompletionStreamResponse (one SSE data line)
    validate("CompletionUsage", body)

Each raises `AssertionError` naming the JSON path (`$.choices[0].finish_reason`) and the
reason for every violation found.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import jsonschema_rs
import yaml

SPEC_DIR = Path(__file__).resolve().parent.parent / "conformance" / "openai-openapi"
SPEC_FILE = SPEC_DIR / "openapi.documented.yml"

CHAT_COMPLETION = "CreateChatCompletionResponse"
CHAT_CHUNK = "CreateChatCompletionStreamResponse"

# Keywords whose value is one subschema, a list of subschemas, or a map of name to subschema.
_ONE = frozenset(
    {
        "items",
        "additionalProperties",
        "not",
        "contains",
        "propertyNames",
        "if",
        "then",
        "else",
        "unevaluatedItems",
        "unevaluatedProperties",
        "additionalItems",
    }
)
_MANY = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_MAP = frozenset({"properties", "patternProperties", "$defs", "dependentSchemas"})

_YAML_BASE: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _JSONLoader(_YAML_BASE):  # type: ignore[valid-type,misc]
    """A safe YAML loader that yields only JSON values: dates stay strings."""

    yaml_implicit_resolvers: ClassVar[dict[Any, list[tuple[str, Any]]]] = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in _YAML_BASE.yaml_implicit_resolvers.items()
    }


@functools.cache
def spec() -> dict[str, Any]:
    """The vendored spec as published (parsed once per process)."""
    with SPEC_FILE.open(encoding="utf-8") as f:
        document = yaml.load(f, Loader=_JSONLoader)
    if not isinstance(document, dict) or "components" not in document:
        raise RuntimeError(f"{SPEC_FILE.name} is not an OpenAPI document")
    return document


def to_json_schema(node: Any) -> Any:
    """One OpenAPI schema object as JSON Schema 2020-12 (see the module docstring)."""
    if isinstance(node, bool) or not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _ONE and isinstance(value, dict):
            out[key] = to_json_schema(value)
        elif key in _MANY and isinstance(value, list):
            out[key] = [to_json_schema(item) for item in value]
        elif key in _MAP and isinstance(value, dict):
            out[key] = {name: to_json_schema(item) for name, item in value.items()}
        else:
            out[key] = value
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), bool) and out.pop(bound) and limit in out:
            out[bound] = out.pop(limit)
    if out.pop("nullable", False) is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


@functools.cache
def json_schemas() -> dict[str, Any]:
    """Every `components/schemas` entry of the spec, converted to JSON Schema."""
    schemas = spec()["components"]["schemas"]
    return {name: to_json_schema(schema) for name, schema in schemas.items()}


@functools.cache
def _validator(schema_name: str) -> Any:
    schemas = json_schemas()
    if schema_name not in schemas:
        raise KeyError(f"OpenAI's spec has no components/schemas/{schema_name}")
    document = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": f"#/components/schemas/{schema_name}",
        "components": {"schemas": schemas},
    }
    return jsonschema_rs.Draft202012Validator(document, validate_formats=False, offline=True)


def validate(schema_name: str, body: dict[str, Any]) -> None:
    """Assert that `body` is valid against `components/schemas/<schema_name>`."""
    validator = _validator(schema_name)
    errors = list(validator.iter_errors(body))
    if not errors:
        return
    lines = [f"body does not match OpenAI's {schema_name}:"]
    details: list[dict[str, Any]] | None = None
    for error in errors:
        where = _json_path(list(error.instance_path))
        lines.append(f"  {where}: {error.message}")
        if error.message.endswith(("'anyOf' keyword", "'oneOf' keyword")):
            if details is None:
                details = _leaf_errors(validator, body)
            lines.extend(_alternatives(details, error, body))
    lines.append(f"  body: {_preview(body)}")
    raise AssertionError("\n".join(lines))


def validate_chat_completion(body: dict[str, Any]) -> None:
    """Assert that `body` is a chat completion (`CreateChatCompletionResponse`)."""
    validate(CHAT_COMPLETION, body)


def validate_chat_chunk(body: dict[str, Any]) -> None:
    """Assert that `body` is one streamed chunk (`CreateChatCompletionStreamResponse`)."""
    validate(CHAT_CHUNK, body)


def _leaf_errors(validator: Any, body: Any) -> list[dict[str, Any]]:
    """The innermost failures (each alternative's own reason), where the binding has them."""
    evaluate: Callable[[Any], Any] | None = getattr(validator, "evaluate", None)
    if evaluate is None:
        return []
    return list(evaluate(body).errors())


def _alternatives(details: list[dict[str, Any]], error: Any, body: Any) -> list[str]:
    at = list(error.instance_path)
    prefix = "".join(f"/{_escape(str(part))}" for part in at)
    out: list[str] = []
    for detail in details:
        location = detail.get("instanceLocation", "")
        if location != prefix and not location.startswith(prefix + "/"):
            continue
        line = f"      alternative failed: {_pointer_path(location, body)}: {detail.get('error')}"
        if line not in out:
            out.append(line)
    return out[:12]


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def _pointer_path(pointer: str, body: Any) -> str:
    """A JSON pointer into `body` as a JSON path, telling indices from keys by the body."""
    parts: list[str | int] = []
    node = body
    for raw in pointer.split("/")[1:] if pointer else []:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list) and part.isdigit():
            parts.append(int(part))
            node = node[int(part)] if int(part) < len(node) else None
        else:
            parts.append(part)
            node = node.get(part) if isinstance(node, dict) else None
    return _json_path(parts)


def _json_path(parts: list[str | int]) -> str:
    path = "$"
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.isidentifier():
            path += f".{part}"
        else:
            path += f"[{json.dumps(part)}]"
    return path


def _preview(body: Any, limit: int = 600) -> str:
    text = json.dumps(body, ensure_ascii=False, default=repr)
    return text if len(text) <= limit else text[: limit - 3] + "..."
