"""Validating `kind: http` entries: what an operator may configure, checked at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from experts.specs import HttpToolSpec
from gateway.config import ConfigError, parse_config

ENTRY = """\
auth: none
experts:
  - name: weather
    kind: http
    description: current weather for a city
    url: https://api.weather.example/v1/current.json
    extract: 'weather in (?P<city>[A-Za-z ]+)'
    query: {q: "{city}"}
    headers: {X-Api-Key: "${WEATHER_KEY}"}
    answer: "{city}: {response[current][temp_c]} °C"
    allow_hosts: [api.weather.example]
"""


def issues_of(text: str, env: dict[str, str] | None = None) -> list[tuple[str, int | None, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yaml", env if env is not None else {"WEATHER_KEY": "k"})
    return [(issue.path, issue.line, issue.message) for issue in caught.value.issues]


def entry_with(**changes: str) -> str:
    """`ENTRY` with lines replaced: `field="value"`, or `field=""` to drop the line."""
    lines = []
    for line in ENTRY.splitlines():
        field = line.strip().split(":", 1)[0]
        if field in changes and line.startswith("    "):
            if changes[field]:
                lines.append(f"    {field}: {changes[field]}")
        else:
            lines.append(line)
    added = [f"    {k}: {v}" for k, v in changes.items() if v and f"    {k}:" not in ENTRY]
    return "\n".join(lines + added) + "\n"


def test_an_http_entry_parses_with_its_secret_from_the_environment() -> None:
    config = parse_config(ENTRY, "c.yaml", {"WEATHER_KEY": "sk-weather"})
    (spec,) = config.experts
    assert isinstance(spec, HttpToolSpec)
    assert spec.headers["X-Api-Key"].get_secret_value() == "sk-weather"
    assert "sk-weather" not in repr(spec)
    assert spec.method == "GET" and spec.argument_names() == ["city"]
    # A live API is not cached unless the entry says so; the rest are the documented defaults.
    assert spec.cache_ttl_s == 0 and spec.semantic_cache is False
    assert (spec.max_response_bytes, spec.max_redirects, spec.allow_private) == (2**20, 3, False)


def test_a_missing_secret_names_the_header() -> None:
    ((path, line, message),) = issues_of(ENTRY, env={})
    assert (path, line) == ("experts.0.headers.X-Api-Key", 9)
    assert "WEATHER_KEY is not set" in message


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://api.weather.example/data",
        "gopher://api.weather.example/",
        "api.weather.example/v1",
        "https:///v1",
    ],
)
def test_only_http_and_https_urls(url: str) -> None:
    ((path, line, message),) = issues_of(entry_with(url=f"'{url}'"))
    assert (path, line) == ("experts.0.url", 6)
    assert "only http and https" in message or "names no host" in message


def test_credentials_belong_in_headers() -> None:
    ((path, _, message),) = issues_of(entry_with(url="https://u:p@api.weather.example/"))
    assert path == "experts.0.url" and "headers" in message


@pytest.mark.parametrize(
    "url",
    [
        "https://other.example/v1",
        "https://api.weather.example.evil.test/",
        "https://127.0.0.1/",
        "https://xapi.weather.example/",
    ],
)
def test_the_url_s_host_must_be_on_the_allowlist(url: str) -> None:
    ((path, _, message),) = issues_of(entry_with(url=url))
    assert path == "experts.0" and "is not on allow_hosts" in message


def test_the_allowlist_is_required_and_not_empty() -> None:
    ((path, _, message),) = issues_of(entry_with(allow_hosts=""))
    assert (path, message) == ("experts.0.allow_hosts", "Field required")
    ((path, _, message),) = issues_of(entry_with(allow_hosts="[]"))
    assert path == "experts.0.allow_hosts" and "at least 1" in message


@pytest.mark.parametrize("host", ["'*'", "'https://api.weather.example'", "'a b'", "'*.'", "''"])
def test_allowlist_entries_are_hosts(host: str) -> None:
    ((path, _, message),) = issues_of(entry_with(allow_hosts=f"[api.weather.example, {host}]"))
    assert path == "experts.0.allow_hosts" and "not a host name" in message


def test_host_matching() -> None:
    spec = HttpToolSpec.model_validate(
        {
            "name": "w",
            "kind": "http",
            "description": "d",
            "url": "https://API.Example.com./x",
            "allow_hosts": ["API.example.com", "*.cdn.example.net", "2001:db8::1"],
        }
    )
    assert spec.allows("api.example.com") and spec.allows("api.example.com.")
    assert spec.allows("a.cdn.example.net") and spec.allows("a.b.cdn.example.net")
    assert not spec.allows("cdn.example.net")  # a wildcard means subdomains only
    assert not spec.allows("evilcdn.example.net")
    assert not spec.allows("example.com") and not spec.allows("api.example.com.evil.test")
    assert spec.allows("2001:db8::1") and not spec.allows("2001:db8::2")


@pytest.mark.parametrize(
    ("changes", "path", "fragment"),
    [
        ({"extract": "'(?P<city>['"}, "experts.0.extract", "not a regular expression"),
        ({"extract": "'(?P<text>.+)'"}, "experts.0.extract", "reserved"),
        ({"query": '{q: "{town}"}'}, "experts.0", "uses ['town']"),
        ({"query": '{q: "{response}"}'}, "experts.0", "uses ['response']"),
        ({"answer": '"{response.__class__}"'}, "experts.0", "a field is a name"),
        ({"answer": '"{0}"'}, "experts.0", "a field is a name"),
        ({"answer": '"{}"'}, "experts.0", "a field is a name"),
        ({"answer": '"{response[a]:{response[b]}}"'}, "experts.0", "cannot hold fields"),
        ({"answer": '"{response"'}, "experts.0", "answer template"),
        ({"json_body": '{q: "{city}"}'}, "experts.0", "json_body needs method: POST"),
        ({"method": "DELETE"}, "experts.0.method", "'GET' or 'POST'"),
        ({"max_response_bytes": "0"}, "experts.0.max_response_bytes", "greater than or equal"),
        ({"max_redirects": "11"}, "experts.0.max_redirects", "less than or equal"),
        ({"timeout_s": "0"}, "experts.0.timeout_s", "greater than 0"),
        ({"health_url": "file:///x"}, "experts.0.health_url", "only http and https"),
        ({"health_url": "https://status.example/"}, "experts.0", "is not on allow_hosts"),
        ({"colour": "blue"}, "experts.0.colour", "unknown field"),
    ],
)
def test_invalid_entries_name_the_problem(
    changes: dict[str, str], path: str, fragment: str
) -> None:
    ((found_path, _, message),) = issues_of(entry_with(**changes))
    assert found_path == path
    assert fragment in message


def test_a_post_entry_with_a_json_body_template() -> None:
    text = entry_with(
        method="POST", json_body='{q: "{city}", raw: "{text}", n: 3, tags: ["{city}"]}'
    )
    (spec,) = parse_config(text, "c.yaml", {"WEATHER_KEY": "k"}).experts
    assert isinstance(spec, HttpToolSpec)
    assert spec.json_body == {"q": "{city}", "raw": "{text}", "n": 3, "tags": ["{city}"]}


def test_the_readme_example_is_valid() -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme.split("### Calling a REST API: `kind: http`", 1)[1]
    entry = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = parse_config("auth: none\nexperts:\n" + entry, "README.md", {"WEATHER_API_KEY": "k"})
    (spec,) = config.experts
    assert isinstance(spec, HttpToolSpec) and spec.argument_names() == ["city"]
    assert spec.allows("api.weather.example")
