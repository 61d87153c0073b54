"""The `http` tool: a configured REST endpoint, called with arguments read from the message.

`extract`'s named groups (and `text`, the whole last user message) fill the spec's `query`
and `json_body` templates; the endpoint's answer fills `answer`. See `HttpToolSpec`.

Every call is bounded. `timeout_s` covers the whole exchange, redirects included, and
`connect_timeout_s` each connection; the body is counted while it streams in and dropped
past `max_response_bytes`; at most `max_redirects` redirects are followed, by hand, and
only on the same host (never from https to http), each hop checked again. The tool reaches
only hosts on `allow_hosts`, and only at public addresses unless `allow_private` is true:
`experts.tools.http_guard` checks the addresses aiohttp actually connects to.

One pooled `aiohttp.ClientSession` per tool, with no cookie jar (one user's cookies must
not ride along with the next user's request), no proxies from the environment, and no
decompression: the tool asks for `identity` and refuses compressed answers, so a small
gzip bomb cannot expand in memory. aiohttp's exceptions become `ToolError`s here.
"""

from __future__ import annotations

import json
import logging
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import aiohttp
import anyio
from aiohttp.abc import AbstractResolver
from pydantic import JsonValue
from yarl import URL

from experts.base import Health, Message, describe_exception
from experts.specs import BODY_FIELD, RESPONSE_FIELD, TEXT_FIELD, HttpToolSpec
from experts.tools.base import (
    ToolError,
    ToolInputError,
    ToolTimeout,
    ToolUnavailable,
    ToolUnreachable,
    check_length,
)
from experts.tools.http_guard import ForbiddenAddress, GuardedResolver, check_literal

logger = logging.getLogger(__name__)

READ_CHUNK_BYTES: Final = 64 * 2**10
ERROR_SNIPPET_CHARS: Final = 200
HEALTH_TIMEOUT_S: Final = 5.0
MAX_CONNECTIONS: Final = 32
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
# Answers about the arguments the user gave (an unknown city): the client's fault. Other
# 4xx (a bad key, a rate limit) are the operator's or the service's.
_ARGUMENT_STATUSES: Final = frozenset({400, 404, 409, 410, 422})


class _JSONFormatter(string.Formatter):
    """`str.format` that writes JSON objects, lists, booleans and null as JSON."""

    def format_field(self, value: object, format_spec: str) -> str:
        if not format_spec and (value is None or isinstance(value, dict | list | bool)):
            return json.dumps(value, ensure_ascii=False)
        return str(super().format_field(value, format_spec))


_FORMATTER: Final = _JSONFormatter()


@dataclass(frozen=True, slots=True)
class _Reply:
    """An endpoint's answer, read whole (within `max_response_bytes`)."""

    url: URL
    status: int
    text: str


class HttpTool:
    """The `http` tool. `resolver` replaces the system's DNS (the tests' fake DNS)."""

    def __init__(self, spec: HttpToolSpec, *, resolver: AbstractResolver | None = None) -> None:
        self._spec = spec
        self._inner_resolver = resolver
        self._session: aiohttp.ClientSession | None = None
        self._resolver: AbstractResolver | None = None
        self._pattern = re.compile(spec.extract) if spec.extract is not None else None
        self._parses_json = RESPONSE_FIELD in spec.answer_fields()

    @property
    def name(self) -> str:
        return "http"

    async def start(self) -> None:
        self._ensure_session()

    async def aclose(self) -> None:
        session, self._session = self._session, None
        resolver, self._resolver = self._resolver, None
        if session is not None:
            await session.close()
        if resolver is not None:
            await resolver.close()

    async def run(self, text: str, history: Sequence[Message] = ()) -> str:
        check_length(text, "http tool")
        arguments = self._arguments(text)
        spec = self._spec
        url = URL(spec.url)
        query = {key: _FORMATTER.vformat(value, (), arguments) for key, value in spec.query.items()}
        if query:
            url = url.extend_query(query)
        body = None
        if spec.json_body is not None:
            body = json.dumps(_fill(spec.json_body, arguments)).encode()
        reply = await self._exchange(spec.method, url, body, spec.timeout_s)
        return self._answer(reply, arguments)

    async def health(self) -> Health:
        spec = self._spec
        if spec.health_url is None:
            return Health(ok=True, detail=f"{spec.method} {URL(spec.url).host} (not probed)")
        try:
            reply = await self._exchange(
                "GET", URL(spec.health_url), None, min(spec.timeout_s, HEALTH_TIMEOUT_S)
            )
        except ToolError as exc:
            return Health(ok=False, detail=exc.message)
        ok = 200 <= reply.status < 300
        return Health(ok=ok, detail=f"GET {reply.url.path} returned {reply.status}")

    # -- the request ------------------------------------------------------------------------

    def _arguments(self, text: str) -> dict[str, str]:
        if not text.strip():
            raise ToolInputError("there is no message to take the arguments from")
        arguments = {TEXT_FIELD: text}
        if self._pattern is None:
            return arguments
        match = self._pattern.search(text)
        if match is None:
            raise ToolInputError(
                self._spec.hint
                or f"the message does not say what the endpoint needs "
                f"(it must match {self._spec.extract!r})"
            )
        arguments.update({name: value or "" for name, value in match.groupdict().items()})
        return arguments

    async def _exchange(
        self, method: str, url: URL, body: bytes | None, timeout_s: float
    ) -> _Reply:
        """Send the request and follow redirects, all within `timeout_s`."""
        try:
            with anyio.fail_after(timeout_s):
                return await self._follow(method, url, body)
        except TimeoutError as exc:
            raise ToolTimeout(f"{url.host} did not answer within {timeout_s:g} s") from exc

    async def _follow(self, method: str, url: URL, body: bytes | None) -> _Reply:
        for _ in range(self._spec.max_redirects + 1):
            response = await self._send(method, url, body)
            location = response.headers.get("Location") if response.status in _REDIRECTS else None
            if location is None:
                return await self._read(response, url)
            response.close()
            url = self._redirect(url, location)
            if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                method, body = "GET", None
        raise ToolUnavailable(f"{url.host} redirected more than {self._spec.max_redirects} times")

    async def _send(self, method: str, url: URL, body: bytes | None) -> aiohttp.ClientResponse:
        self._check_target(url)
        headers = {"Accept-Encoding": "identity"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        session = self._ensure_session()
        try:
            return await session.request(
                method, url, data=body, headers=headers, allow_redirects=False
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._failure(exc, url) from exc

    def _check_target(self, url: URL) -> None:
        host = url.raw_host or ""
        if url.scheme not in ("http", "https"):
            raise ToolUnavailable(f"refused to call {url.scheme}: URLs; only http and https")
        if not self._spec.allows(host):
            raise ToolUnavailable(f"refused to call {host}: it is not on allow_hosts")
        if not self._spec.allow_private:
            try:
                check_literal(host)
            except ForbiddenAddress as exc:
                raise ToolUnavailable(f"refused to connect to {host}: {exc}") from exc

    def _redirect(self, url: URL, location: str) -> URL:
        """Where a redirect leads, when it may be followed (same host, no downgrade)."""
        try:
            target = url.join(URL(location)).with_fragment(None)
        except ValueError as exc:
            raise ToolUnavailable(f"{url.host} redirected to an unusable URL") from exc
        if (target.raw_host or "").lower() != (url.raw_host or "").lower():
            raise ToolUnavailable(
                f"refused a redirect from {url.host} to {target.host}: redirects are "
                "followed only on the same host"
            )
        if url.scheme == "https" and target.scheme != "https":
            raise ToolUnavailable(f"refused a redirect from https to {target.scheme}")
        return target

    # -- the answer -------------------------------------------------------------------------

    async def _read(self, response: aiohttp.ClientResponse, url: URL) -> _Reply:
        """The whole body, counted as it streams in; the connection is pooled again after."""
        limit = self._spec.max_response_bytes
        done = False
        try:
            encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise ToolUnavailable(f"{url.host} answered {encoding}-encoded; asked identity")
            if response.content_length is not None and response.content_length > limit:
                raise _too_large(url, limit)
            body = bytearray()
            async for chunk in response.content.iter_chunked(READ_CHUNK_BYTES):
                body += chunk
                if len(body) > limit:
                    raise _too_large(url, limit)
            done = True
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._failure(exc, url) from exc
        finally:
            if done:
                response.release()
            else:
                response.close()  # drop the connection rather than read the rest
        return _Reply(url, response.status, _decode(bytes(body), response.charset))

    def _answer(self, reply: _Reply, arguments: Mapping[str, str]) -> str:
        host = reply.url.host
        if reply.status >= 400:
            message = f"{host} answered {reply.status}: {reply.text[:ERROR_SNIPPET_CHARS]}"
            if reply.status in _ARGUMENT_STATUSES:
                raise ToolInputError(message)
            raise ToolUnavailable(message)
        if not 200 <= reply.status < 300:
            raise ToolUnavailable(f"{host} answered {reply.status}")
        fields: dict[str, object] = {**arguments, BODY_FIELD: reply.text}
        if self._parses_json:
            try:
                fields[RESPONSE_FIELD] = json.loads(reply.text)
            except (ValueError, RecursionError) as exc:
                snippet = reply.text[:ERROR_SNIPPET_CHARS]
                raise ToolUnavailable(f"{host}'s answer is not JSON: {snippet!r}") from exc
        try:
            answer = _FORMATTER.vformat(self._spec.answer, (), fields)
        except (LookupError, TypeError, ValueError) as exc:
            raise ToolUnavailable(
                f"the answer template does not fit {host}'s answer ({type(exc).__name__}: {exc})"
            ) from exc
        logger.debug("http tool answered", extra={"status": reply.status, "host": host})
        return answer

    # -- plumbing ---------------------------------------------------------------------------

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            spec = self._spec
            resolver = self._inner_resolver or aiohttp.ThreadedResolver()
            if not spec.allow_private:
                resolver = GuardedResolver(resolver)
            self._resolver = resolver
            connector = aiohttp.TCPConnector(
                resolver=resolver, limit=MAX_CONNECTIONS, limit_per_host=MAX_CONNECTIONS
            )
            headers = {key: value.get_secret_value() for key, value in spec.headers.items()}
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=spec.timeout_s, connect=spec.connect_timeout_s),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                trust_env=False,
            )
        return self._session

    def _failure(self, exc: BaseException, url: URL) -> ToolError:
        host = url.host
        cause = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
        if isinstance(cause, ForbiddenAddress):
            return ToolUnavailable(f"refused to connect to {host}: {cause}")
        if isinstance(exc, TimeoutError):
            return ToolTimeout(f"{host} did not answer in time ({describe_exception(exc)})")
        if isinstance(exc, aiohttp.ClientConnectorError):
            return ToolUnreachable(f"could not connect to {host} ({describe_exception(exc)})")
        return ToolUnavailable(f"calling {host} failed ({describe_exception(exc)})")


def _fill(template: JsonValue, arguments: Mapping[str, str]) -> JsonValue:
    """A JSON body template with every string formatted from `arguments`."""
    if isinstance(template, str):
        return _FORMATTER.vformat(template, (), arguments)
    if isinstance(template, list):
        return [_fill(item, arguments) for item in template]
    if isinstance(template, dict):
        return {key: _fill(value, arguments) for key, value in template.items()}
    return template


def _decode(body: bytes, charset: str | None) -> str:
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return body.decode("utf-8", errors="replace")


def _too_large(url: URL, limit: int) -> ToolUnavailable:
    return ToolUnavailable(f"{url.host}'s answer is larger than {limit} bytes; dropped")
