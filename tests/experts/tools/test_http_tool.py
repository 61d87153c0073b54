"""The `http` tool expert against real `aiohttp.web` servers on 127.0.0.1.

Names other than IP addresses are looked up in `FakeDNS` (our own stand-in for the system
resolver, the one fake at the network edge), so a test can point `api.test` at the
loopback server, or at an address the guard must refuse.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from experts.base import (
    ExpertRejected,
    ExpertRequest,
    ExpertTimeout,
    ExpertUnavailable,
    ExpertUnreachable,
    Message,
)
from experts.registry import BuildContext, build_expert
from experts.specs import HttpToolSpec
from experts.tools import ProbedTool, ToolExpert, ToolUnavailable
from experts.tools.http_guard import ForbiddenAddress, GuardedResolver
from experts.tools.http_tool import HttpTool
from tests.support.upstream import Answer, delayed, json_reply, text_reply, upstream_server

pytestmark = pytest.mark.anyio

WEATHER = r"weather in (?P<city>[A-Za-z ]+?)\??$"


class FakeDNS(AbstractResolver):
    """Answers each name with the next of its scripted address lists (the last repeats)."""

    def __init__(self, **names: Sequence[Sequence[str]]) -> None:
        self._answers = {name.replace("_", "."): list(lists) for name, lists in names.items()}
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        answers = self._answers.get(host)
        if not answers:
            raise OSError(f"no such host {host}")
        addresses = answers.pop(0) if len(answers) > 1 else answers[0]
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        return None


def spec_for(url: str, **fields: object) -> HttpToolSpec:
    entry: dict[str, object] = {
        "name": "web",
        "kind": "http",
        "description": "a REST endpoint",
        "url": url,
        "allow_hosts": ["127.0.0.1"],
        "allow_private": True,
        "timeout_s": 5,
    }
    entry.update(fields)
    return HttpToolSpec.model_validate(entry)


@asynccontextmanager
async def http_expert(spec: HttpToolSpec, dns: FakeDNS | None = None) -> AsyncIterator[ToolExpert]:
    expert = ToolExpert(spec, HttpTool(spec, resolver=dns or FakeDNS()))
    await expert.start()
    try:
        yield expert
    finally:
        await expert.aclose()


def ask(text: str) -> ExpertRequest:
    return ExpertRequest(messages=(Message("user", text),), request_id="r1")


async def answer_of(spec: HttpToolSpec, text: str, dns: FakeDNS | None = None) -> str:
    async with http_expert(spec, dns) as expert:
        return (await expert.complete(ask(text))).content


# --- answering -------------------------------------------------------------------------


async def weather(request: web.BaseRequest) -> web.StreamResponse:
    """A weather API that echoes the query it parsed."""
    return web.json_response({"current": {"temp_c": 21.5}, "query": dict(request.query)})


async def test_get_with_query_arguments_from_the_message() -> None:
    async with upstream_server(weather) as server:
        spec = spec_for(
            f"{server.url}/v1/current?key=k",
            extract=WEATHER,
            query={"q": "{city}", "units": "metric"},
            answer="{city}: {response[current][temp_c]} °C ({response[query]})",
        )
        answer = await answer_of(spec, "what is the weather in Oslo?")
    assert answer == 'Oslo: 21.5 °C ({"key": "k", "q": "Oslo", "units": "metric"})'
    (seen,) = server.requests
    assert seen.method == "GET" and seen.path == "/v1/current"
    assert seen.headers["Accept-Encoding"] == "identity"


async def test_query_values_are_encoded_not_spliced() -> None:
    async with upstream_server(weather) as server:
        spec = spec_for(
            server.url,
            extract=r"look up (?P<term>.+)",
            query={"q": "{term}"},
            answer="{response[query]}",
        )
        answer = await answer_of(spec, "look up a&b=c#d e")
    assert answer == '{"q": "a&b=c#d e"}'


async def test_post_json_body_and_configured_headers() -> None:
    async with upstream_server(text_reply("stored")) as server:
        spec = spec_for(
            f"{server.url}/notes",
            method="POST",
            extract=r"note about (?P<topic>\w+)",
            json_body={"note": "{text}", "tags": ["{topic}", "chat"], "priority": 3},
            headers={"X-Api-Key": "s3cret"},
        )
        assert "s3cret" not in repr(spec)
        assert await answer_of(spec, "take a note about lunch") == "stored"
    (seen,) = server.requests
    assert seen.method == "POST" and seen.headers["Content-Type"] == "application/json"
    assert seen.headers["X-Api-Key"] == "s3cret"
    assert seen.json() == {
        "note": "take a note about lunch",
        "tags": ["lunch", "chat"],
        "priority": 3,
    }


async def test_streaming_answers_like_complete() -> None:
    async with upstream_server(json_reply({"n": [1, 2]})) as server:
        spec = spec_for(server.url, answer="numbers: {response[n]}")
        async with http_expert(spec) as expert:
            deltas = [delta async for delta in expert.stream(ask("count"))]
    assert [delta.content for delta in deltas] == ["numbers: [1, 2]", ""]
    assert deltas[-1].finish_reason == "stop" and deltas[-1].usage is not None


async def test_a_message_without_the_arguments_is_the_client_s_fault() -> None:
    spec = spec_for("http://127.0.0.1:9/", extract=WEATHER)
    with pytest.raises(ExpertRejected, match="must match") as caught:
        await answer_of(spec, "tell me a joke")
    assert caught.value.status == 400
    hinted = spec_for("http://127.0.0.1:9/", extract=WEATHER, hint="name a city: weather in Oslo")
    with pytest.raises(ExpertRejected, match="name a city"):
        await answer_of(hinted, "what's the weather")


async def test_cookies_are_not_kept_between_requests() -> None:
    async def set_cookie(request: web.BaseRequest) -> web.StreamResponse:
        response = web.Response(text="hi")
        response.set_cookie("session", "alice")
        return response

    async with upstream_server(set_cookie) as server, http_expert(spec_for(server.url)) as expert:
        await expert.complete(ask("one"))
        await expert.complete(ask("two"))
    assert all("Cookie" not in seen.headers for seen in server.requests)


# --- where it may connect ------------------------------------------------------------------


async def test_loopback_is_refused_without_allow_private() -> None:
    async with upstream_server(text_reply("secret")) as server:
        spec = spec_for(server.url, allow_private=False)
        with pytest.raises(ExpertUnavailable, match=r"127\.0\.0\.1 is a loopback address"):
            await answer_of(spec, "hello")
    assert server.requests == []


async def test_a_name_resolving_to_loopback_is_refused_at_connection_time() -> None:
    async with upstream_server(text_reply("secret")) as server:
        url = f"http://api.test:{server.port}/"
        dns = FakeDNS(api_test=[["127.0.0.1", "::1"]])
        spec = spec_for(url, allow_hosts=["*.test"], allow_private=False)
        with pytest.raises(ExpertUnavailable, match=r"resolves only to .*127\.0\.0\.1 \(loopback"):
            await answer_of(spec, "hello", dns)
        assert dns.lookups == ["api.test"]
        # The same name and server, with private addresses allowed, is answered.
        allowed = spec_for(url, allow_hosts=["*.test"])
        assert await answer_of(allowed, "hello", FakeDNS(api_test=[["127.0.0.1"]])) == "secret"
    assert len(server.requests) == 1


async def test_the_system_resolver_s_localhost_is_refused() -> None:
    async with upstream_server(text_reply("secret")) as server:
        url = f"http://localhost:{server.port}/"
        tool = HttpTool(spec_for(url, allow_hosts=["localhost"], allow_private=False))
        try:
            with pytest.raises(ToolUnavailable, match="refused to connect to localhost"):
                await tool.run("hello")
        finally:
            await tool.aclose()
    assert server.requests == []


async def test_an_ipv6_loopback_literal_is_refused() -> None:
    tool = HttpTool(spec_for("http://[::1]:9/", allow_hosts=["::1"], allow_private=False))
    try:
        with pytest.raises(ToolUnavailable, match="loopback"):
            await tool.run("hello")
    finally:
        await tool.aclose()


async def test_dns_rebinding_is_checked_on_every_lookup() -> None:
    dns = FakeDNS(api_test=[["93.184.216.34"], ["127.0.0.1"]])
    guarded = GuardedResolver(dns)
    (first,) = await guarded.resolve("api.test", 80)
    assert first["host"] == "93.184.216.34"
    with pytest.raises(ForbiddenAddress, match="loopback"):
        await guarded.resolve("api.test", 80)


async def test_only_the_public_addresses_of_a_mixed_answer_are_kept() -> None:
    dns = FakeDNS(api_test=[["10.0.0.7", "93.184.216.34", "::ffff:169.254.169.254"]])
    results = await GuardedResolver(dns).resolve("api.test", 443)
    assert [result["host"] for result in results] == ["93.184.216.34"]


# --- redirects -----------------------------------------------------------------------------


def redirect(location: str, status: int = 302) -> Answer:
    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(status=status, headers={"Location": location})

    return answer


async def test_a_same_host_redirect_is_followed() -> None:
    async with upstream_server(redirect("/v2/current"), json_reply({"t": 3})) as server:
        spec = spec_for(f"{server.url}/v1/current", answer="{response[t]}")
        assert await answer_of(spec, "now") == "3"
    assert [seen.path for seen in server.requests] == ["/v1/current", "/v2/current"]


async def test_post_redirects_keep_or_drop_the_body_as_http_says() -> None:
    async with upstream_server(
        redirect("/again", 307), redirect("/seen", 303), text_reply("ok")
    ) as server:
        spec = spec_for(server.url, method="POST", json_body={"q": "{text}"})
        assert await answer_of(spec, "hi") == "ok"
    methods = [(seen.method, seen.path, seen.body) for seen in server.requests]
    assert methods == [
        ("POST", "/", b'{"q": "hi"}'),
        ("POST", "/again", b'{"q": "hi"}'),
        ("GET", "/seen", b""),
    ]


@pytest.mark.parametrize(
    "location",
    ["http://localhost:{port}/", "http://evil.example/steal", "https://127.0.0.2:{port}/"],
)
async def test_a_redirect_to_another_host_is_refused(location: str) -> None:
    async with upstream_server(redirect("placeholder")) as server:
        server.script(redirect(location.format(port=server.port)))
        spec = spec_for(server.url, allow_hosts=["127.0.0.1", "localhost", "127.0.0.2"])
        with pytest.raises(ExpertUnavailable, match="followed only on the same host"):
            await answer_of(spec, "hello")
    assert len(server.requests) == 1


async def test_a_redirect_to_another_scheme_is_refused() -> None:
    async with upstream_server(redirect("placeholder")) as server:
        server.script(redirect("ftp://127.0.0.1/file"))
        with pytest.raises(ExpertUnavailable, match="only http and https"):
            await answer_of(spec_for(server.url), "hello")


async def test_redirects_are_counted() -> None:
    async with upstream_server(redirect("/loop")) as server:
        with pytest.raises(ExpertUnavailable, match="more than 2 times"):
            await answer_of(spec_for(server.url, max_redirects=2), "hello")
    assert len(server.requests) == 3


# --- bounded answers -------------------------------------------------------------------------


async def endless(request: web.BaseRequest) -> web.StreamResponse:
    """A body that never ends, sent in chunks (no Content-Length)."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    while True:
        await response.write(b"[" * 65536)


async def test_an_endless_answer_is_dropped_while_it_streams() -> None:
    async with upstream_server(endless) as server:
        with pytest.raises(ExpertUnavailable, match="larger than 1000 bytes"):
            await answer_of(spec_for(server.url, max_response_bytes=1000), "hello")


async def test_a_declared_oversized_answer_is_dropped_before_reading() -> None:
    async with upstream_server(text_reply("x" * 5000)) as server:
        with pytest.raises(ExpertUnavailable, match="larger than 1000 bytes"):
            await answer_of(spec_for(server.url, max_response_bytes=1000), "hello")


async def test_compressed_answers_are_refused() -> None:
    async def gzipped(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(body=b"\x1f\x8b...", headers={"Content-Encoding": "gzip"})

    async with upstream_server(gzipped) as server:
        with pytest.raises(ExpertUnavailable, match="gzip-encoded"):
            await answer_of(spec_for(server.url), "hello")


async def test_a_hanging_server_hits_the_timeout() -> None:
    async with upstream_server(delayed(3600, text_reply("late"))) as server:
        with pytest.raises(ExpertTimeout, match="did not answer"):
            await answer_of(spec_for(server.url, timeout_s=0.3), "hello")


async def test_a_server_that_is_not_listening_is_unreachable() -> None:
    async with upstream_server(text_reply("never"), started=False) as server:
        with pytest.raises(ExpertUnreachable, match=r"could not connect to 127\.0\.0\.1"):
            await answer_of(spec_for(server.url), "hello")


async def test_malformed_json_with_a_json_template() -> None:
    async with upstream_server(text_reply("{not json", status=200)) as server:
        spec = spec_for(server.url, answer="{response[temp]}")
        with pytest.raises(ExpertUnavailable, match="not JSON"):
            await answer_of(spec, "hello")


async def test_an_answer_the_template_does_not_fit() -> None:
    async with upstream_server(json_reply({"current": {}})) as server:
        spec = spec_for(server.url, answer="{response[current][temp_c]} °C")
        with pytest.raises(ExpertUnavailable, match=r"does not fit.*KeyError"):
            await answer_of(spec, "hello")


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (404, ExpertRejected),
        (422, ExpertRejected),
        (401, ExpertUnavailable),
        (429, ExpertUnavailable),
        (503, ExpertUnavailable),
    ],
)
async def test_error_statuses(status: int, error: type[Exception]) -> None:
    async with upstream_server(text_reply("no such city", status=status)) as server:
        with pytest.raises(error, match=f"answered {status}: no such city"):
            await answer_of(spec_for(server.url), "hello")


# --- health and building ---------------------------------------------------------------------


async def test_health_calls_nothing_without_a_health_url() -> None:
    async with (
        upstream_server(text_reply("x")) as server,
        http_expert(spec_for(server.url)) as expert,
    ):
        health = await expert.health()
    assert health.ok and "not probed" in health.detail
    assert server.requests == []


async def test_health_probes_the_health_url() -> None:
    async with upstream_server(text_reply("up"), text_reply("down", status=500)) as server:
        spec = spec_for(server.url, health_url=f"{server.url}/healthz")
        async with http_expert(spec) as expert:
            assert (await expert.health()).ok
            sick = await expert.health()
        assert not sick.ok and "500" in sick.detail
    assert [seen.path for seen in server.requests] == ["/healthz", "/healthz"]


async def test_health_of_a_hanging_server_is_bad() -> None:
    async with upstream_server(delayed(3600, text_reply("late"))) as server:
        spec = spec_for(server.url, health_url=server.url, timeout_s=0.3)
        async with http_expert(spec) as expert:
            health = await expert.health()
    assert not health.ok and "did not answer" in health.detail


async def test_the_registry_builds_an_http_expert(tmp_path: Path) -> None:
    spec = spec_for("http://127.0.0.1:9/")
    expert = build_expert(spec, BuildContext(cache_dir=tmp_path))
    assert isinstance(expert, ToolExpert) and expert.kind == "http"
    assert isinstance(expert.tool, HttpTool) and isinstance(expert.tool, ProbedTool)
    await expert.aclose()
