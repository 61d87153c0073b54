"""The configuration schema of each expert kind (pure data, pydantic v2).

`gateway.config` composes these into the `experts:` list of the YAML file; the registry
builds an expert from its spec. Keeping the specs here lets experts stay independent of
the gateway.
"""

from __future__ import annotations

import ipaddress
import re
import string
from collections.abc import Iterator
from typing import Annotated, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    SecretStr,
    field_validator,
    model_validator,
)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
RESERVED_NAMES = frozenset({"auto"})

# What a request may need of an expert beyond text: function calling (`tools`, tool
# turns), image, audio and file content parts, several choices (`n` > 1), `logprobs`.
Capability = Literal["tools", "images", "audio", "files", "n", "logprobs"]
CAPABILITIES: tuple[Capability, ...] = ("tools", "images", "audio", "files", "n", "logprobs")
# The endpoints besides chat an expert may serve (passed through by model name).
Endpoint = Literal["completions", "embeddings", "responses"]


class ExpertSpecBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field(min_length=1)
    examples: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    # A short verb phrase for clarification questions: "convert units", "do arithmetic".
    ask: str | None = None
    fallbacks: list[str] = Field(default_factory=list)
    timeout_s: float = Field(default=60.0, gt=0)
    # Few-shot: how many similar good exemplars (with their answers) precede the request.
    fewshot: int = Field(default=0, ge=0, le=16)
    # Response cache for this expert: None uses `cache.ttl_s`; 0 turns caching off.
    cache_ttl_s: float | None = Field(default=None, ge=0)
    # Semantic (similar-text) cache hits; None uses `cache.semantic`.
    semantic_cache: bool | None = None
    # At most this many requests at once (None: no limit); others wait up to
    # `queue_timeout_s` for a slot, then get a 429.
    max_concurrency: int | None = Field(default=None, ge=1)
    queue_timeout_s: float = Field(default=10.0, ge=0)
    # The longest one whole answer may take, streamed or not (`timeout_s` bounds the wait
    # for its start).
    total_timeout_s: float = Field(default=600.0, gt=0)
    # What the expert can take beyond text; None: its kind's default (`default_capabilities`).
    capabilities: list[Capability] | None = None

    # Each kind's capabilities when the config names none.
    default_capabilities: ClassVar[frozenset[Capability]] = frozenset()
    # Whether a `seed` makes this expert's sampled answers repeatable (then cacheable).
    seed_deterministic: bool = False

    @property
    def capability_set(self) -> frozenset[Capability]:
        if self.capabilities is None:
            return self.default_capabilities
        return frozenset(self.capabilities)

    @property
    def endpoint_set(self) -> frozenset[Endpoint]:
        """The endpoints besides chat that the expert serves (none but for `openai`)."""
        return frozenset()

    def first_delta_timeout_s(self, stream: bool) -> float:
        """How long the gateway waits for the expert's first delta (of any kind)."""
        return self.timeout_s

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_NAMES:
            raise ValueError(f"'{value}' is reserved for routing")
        return value


class OpenAISpec(ExpertSpecBase):
    """A vLLM server, or any OpenAI-compatible chat completions server."""

    kind: Literal["openai"]
    base_url: str = Field(pattern=r"^https?://")
    model: str = Field(min_length=1)
    api_key: SecretStr | None = None
    connect_timeout_s: float = Field(default=5.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    headers: dict[str, str] = Field(default_factory=dict)
    max_connections: int = Field(default=100, ge=1)
    # Send `developer` turns as `developer` (false: as `system`, for servers that only
    # know the older roles).
    developer_role: bool = True
    # The other OpenAI endpoints this upstream serves; requests naming this expert as the
    # model are passed through to them. None: all three (vLLM serves them).
    endpoints: list[Endpoint] | None = None

    default_capabilities: ClassVar[frozenset[Capability]] = frozenset(CAPABILITIES)

    def first_delta_timeout_s(self, stream: bool) -> float:
        # A non-streamed request is sent upstream non-streamed: its answer comes whole.
        return self.timeout_s if stream else self.total_timeout_s

    @property
    def endpoint_set(self) -> frozenset[Endpoint]:
        if self.endpoints is None:
            return frozenset(("completions", "embeddings", "responses"))
        return frozenset(self.endpoints)


class ToolSpec(ExpertSpecBase):
    """A built-in API tool, evaluated in process."""

    kind: Literal["tool"]
    tool: Literal["calculator", "units"]
    # Significant digits in answers.
    precision: int = Field(default=6, ge=1, le=17)


class LocalSpec(ExpertSpecBase):
    """An in-process transformers causal LM."""

    kind: Literal["local"]
    # `builtin:SmolLM2-135M-Instruct`, or a directory holding a transformers model.
    model: str = Field(min_length=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_tokens: int = Field(default=256, ge=1)
    context_tokens: int = Field(default=2048, ge=16)
    system_prompt: str | None = None
    threads: int | None = Field(default=None, ge=1)
    # Sampling with a seed draws from a generator seeded with it: repeatable.
    seed_deterministic: bool = True


class FusionMemberSpec(BaseModel):
    """One small task expert of a fusion expert."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    # `builtin:<name>`, a transformers model directory, or a `.gguf` file.
    model: str = Field(min_length=1)


class FusionSpec(ExpertSpecBase):
    """Dynamic logit fusion: small task experts steer a large model, token by token.

    Every model must share one tokenizer (checked when the expert starts).
    """

    kind: Literal["fusion"]
    # `builtin:<name>`, a transformers model directory, or a `.gguf` file.
    large: str = Field(min_length=1)
    small_base: str = Field(min_length=1)
    experts: list[FusionMemberSpec] = Field(min_length=1, max_length=16)
    # bracketed (default): closed-form derivatives, safeguarded Newton; grid: the paper's
    # search over [0, alpha_max] in steps of 0.1; static: proxy-tuning with a fixed `alpha`.
    solver: Literal["bracketed", "grid", "static"] = "bracketed"
    alpha: float | None = Field(default=None, ge=0, le=10)  # static only; default 1.0
    alpha_max: float = Field(default=2.0, gt=0, le=10)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_tokens: int = Field(default=256, ge=1)
    context_tokens: int = Field(default=2048, ge=16)
    # Rows decoded together (continuous batching); further requests wait for a free row.
    max_batch: int = Field(default=16, ge=1, le=256)
    # dynamic: each model with its own growing cache, eager; static: caches allocated
    # once (max_batch x context_tokens) and, on CUDA, steps replayed as CUDA graphs;
    # auto: static on CUDA, dynamic on CPU.
    engine: Literal["auto", "dynamic", "static"] = "auto"
    # static engine on CUDA: torch.compile the solver's step (fewer, fused kernels); the
    # first step at each batch size waits for its compilation.
    compile: bool = False
    system_prompt: str | None = None
    threads: int | None = Field(default=None, ge=1)
    seed_deterministic: bool = True

    @field_validator("experts")
    @classmethod
    def _unique_expert_names(cls, value: list[FusionMemberSpec]) -> list[FusionMemberSpec]:
        names = [member.name for member in value]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"expert names must be unique; repeated: {', '.join(duplicates)}")
        return value

    @model_validator(mode="after")
    def _solver_settings(self) -> FusionSpec:
        if self.alpha is not None and self.solver != "static":
            raise ValueError("alpha is used only by solver 'static'")
        steps = self.alpha_max / 0.1
        if self.solver == "grid" and abs(steps - round(steps)) > 1e-9:
            raise ValueError("solver 'grid' steps by 0.1: alpha_max must be a multiple of 0.1")
        return self


# `allow_hosts` entries: a host name, `*.` and a domain (its subdomains), or an IP address.
_LABEL = r"[a-z0-9][a-z0-9-]{0,62}"
_HOST_PATTERN = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")
# A template field: a name, then only `[key]` lookups (no attributes, no positions).
_FIELD = re.compile(r"(?P<root>[A-Za-z_]\w*)(?:\[[^\[\]]+\])*")
# The fields every request template may use besides `extract`'s named groups.
TEXT_FIELD = "text"
# The fields only `answer` may use: the parsed JSON answer and its raw text.
RESPONSE_FIELD, BODY_FIELD = "response", "body"


class HttpToolSpec(ExpertSpecBase):
    """A configured REST endpoint, called with arguments read from the last user message.

    `extract` (a regular expression) is searched for in the message; its named groups and
    `text` (the whole message) fill the `query` and `json_body` templates (`str.format`
    syntax, `{city}`), and `answer` is formatted from the endpoint's answer: `{response}` is
    its parsed JSON (`{response[current][temp_c]}`), `{body}` its text. Only hosts on
    `allow_hosts` are reached, redirects only on the same host, and never a private,
    loopback, link-local or otherwise non-public address unless `allow_private` is true.
    A live API's answers are not cached unless `cache_ttl_s` says so.
    """

    kind: Literal["http"]
    url: str = Field(min_length=1)
    method: Literal["GET", "POST"] = "GET"
    extract: str | None = None
    query: dict[str, str] = Field(default_factory=dict)
    json_body: dict[str, JsonValue] | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    answer: str = "{body}"
    # Shown when the message does not match `extract`: "name a city, as in 'weather in Oslo'".
    hint: str | None = None
    allow_hosts: list[str] = Field(min_length=1)
    allow_private: bool = False
    max_response_bytes: int = Field(default=2**20, ge=1, le=64 * 2**20)
    max_redirects: int = Field(default=3, ge=0, le=10)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    # GET this (same rules as `url`) for health checks; without it health calls nothing.
    health_url: str | None = None
    cache_ttl_s: float | None = Field(default=0, ge=0)
    semantic_cache: bool | None = False

    @field_validator("allow_hosts")
    @classmethod
    def _host_patterns(cls, value: list[str]) -> list[str]:
        hosts = [host.strip().lower().rstrip(".") for host in value]
        for host in hosts:
            if not (_is_ip(host) or _HOST_PATTERN.fullmatch(host)):
                raise ValueError(
                    f"{host!r} is not a host name, '*.' and a domain, or an IP address"
                )
        return hosts

    @field_validator("url", "health_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"{value!r}: only http and https URLs can be called")
        if not parts.hostname:
            raise ValueError(f"{value!r} names no host")
        if parts.username is not None or parts.password is not None:
            raise ValueError(f"{value!r}: put credentials in headers, not in the URL")
        return value

    @field_validator("extract")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
        reserved = {TEXT_FIELD, RESPONSE_FIELD, BODY_FIELD} & set(pattern.groupindex)
        if reserved:
            raise ValueError(f"group names {sorted(reserved)} are reserved")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> HttpToolSpec:
        for url in (self.url, self.health_url):
            host = urlsplit(url).hostname if url is not None else None
            if host is not None and not self.allows(host):
                raise ValueError(f"{url!r}: host {host!r} is not on allow_hosts")
        if self.json_body is not None and self.method != "POST":
            raise ValueError("json_body needs method: POST")
        arguments = {TEXT_FIELD, *self.argument_names()}
        for template in (*self.query.values(), *_strings(self.json_body)):
            _check_template(template, arguments, "query and json_body")
        _check_template(self.answer, arguments | {RESPONSE_FIELD, BODY_FIELD}, "answer")
        return self

    def argument_names(self) -> list[str]:
        """The named groups of `extract`, in order."""
        return [] if self.extract is None else list(re.compile(self.extract).groupindex)

    def allows(self, host: str) -> bool:
        """Whether `host` is on `allow_hosts` (exactly, or under a `*.` domain)."""
        host = host.lower().rstrip(".")
        for pattern in self.allow_hosts:
            if pattern.startswith("*."):
                if host.endswith(pattern[1:]) and not _is_ip(host):
                    return True
            elif host == pattern:
                return True
        return False

    def answer_fields(self) -> set[str]:
        """The names `answer` uses (parsing JSON is needed only for `response`)."""
        return set(_template_roots(self.answer))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _strings(value: JsonValue) -> Iterator[str]:
    """Every string inside a JSON value (the templates of a JSON body)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def _template_roots(template: str) -> Iterator[str]:
    """The names a `str.format` template uses; ValueError when it uses more than names."""
    for _, field, spec, _ in string.Formatter().parse(template):
        if field is None:
            continue
        match = _FIELD.fullmatch(field)
        if match is None:
            raise ValueError(
                f"{{{field}}}: a field is a name, optionally followed by [key] lookups"
            )
        if spec and "{" in spec:
            raise ValueError(f"{{{field}:{spec}}}: a format spec cannot hold fields")
        yield match.group("root")


def _check_template(template: str, known: set[str], where: str) -> None:
    try:
        unknown = sorted(set(_template_roots(template)) - known)
    except ValueError as exc:
        raise ValueError(f"{where} template {template!r}: {exc}") from exc
    if unknown:
        raise ValueError(f"{where} template {template!r} uses {unknown}; known: {sorted(known)}")


ExpertSpec = Annotated[
    OpenAISpec | ToolSpec | HttpToolSpec | LocalSpec | FusionSpec, Field(discriminator="kind")
]
