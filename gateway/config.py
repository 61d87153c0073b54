"""The YAML configuration: schema, `${ENV}` interpolation, and errors that name the line.

One file configures everything; the embedded default ships inside the package as
`gateway/default_config.yaml`. `load_config` never reads the environment itself: the
caller hands in the variables to interpolate (only `gateway.settings` reads the env).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from experts.specs import ExpertSpec
from gateway.config_errors import ConfigError as ConfigError
from gateway.config_errors import ConfigIssue as ConfigIssue
from gateway.config_errors import Loc, issue_at, issues_from

DEFAULT_CONFIG_NAME = "default_config.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # Caps on what one chat request may ask for; each is a 400 that names it.
    max_messages: int = Field(default=256, ge=1)
    max_message_chars: int = Field(default=100_000, ge=1)
    max_tokens: int = Field(default=32_768, ge=1)
    # Choices one request may ask for (`n`).
    max_n: int = Field(default=8, ge=1, le=128)
    # torch intra-op threads for embedding and in-process models (default: the CPUs this
    # process may run on); BLAS is pinned to 1.
    torch_threads: int | None = Field(default=None, ge=1)


class KeyEntry(_Section):
    """One API key, as its salted hash (`taskgate keys add` prints the key once)."""

    id: str = Field(pattern=r"^[0-9a-f]{12}$")
    tenant: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
    hash: str = Field(pattern=r"^sha256:[0-9a-f]{32}:[0-9a-f]{64}$")
    # May call the /admin endpoints and write exemplars.
    admin: bool = False
    # Requests and tokens per minute for this key (None: `auth.limits`).
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    created: float = Field(default=0.0, ge=0)


class RateLimits(_Section):
    """Per-key budgets over a sliding minute (held in Redis with the Redis memory, so
    they hold across replicas). None: unlimited."""

    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)


class AuthConfig(_Section):
    """API keys; each names its tenant. `auth: none` (a plain string) turns this off."""

    mode: Literal["keys"] = "keys"
    keys: list[KeyEntry] = Field(default_factory=list)
    # A keys file managed by `taskgate keys add --file`; re-read when it changes.
    keys_file: str | None = None
    # Also look keys up in the memory's Redis (`taskgate keys add --redis`).
    redis: bool = False
    # How long a key read from the keys file or Redis is trusted before it is read again:
    # a revoked key stops working within this time.
    recheck_s: float = Field(default=5.0, ge=0, le=3600)
    limits: RateLimits = Field(default_factory=RateLimits)

    @model_validator(mode="after")
    def _has_keys(self) -> AuthConfig:
        if not (self.keys or self.keys_file or self.redis):
            raise ValueError(
                "no API keys: list them in auth.keys, name an auth.keys_file, or set "
                "auth.redis: true (see `taskgate keys add`); or say `auth: none` to serve "
                "without authentication"
            )
        ids = [key.id for key in self.keys]
        if len(ids) != len(set(ids)):
            raise ValueError("auth.keys: key ids must be unique")
        return self


class NoAuth(_Section):
    """`auth: none`: every request is tenant "default" and may do everything."""

    mode: Literal["none"]
    limits: RateLimits = Field(default_factory=RateLimits)


class EmbedderConfig(_Section):
    model: str = "builtin:all-MiniLM-L6-v2"
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    # int8: the linear layers' inputs and weights quantized (CPU only). On ONNX Runtime each
    # token is scaled on its own, so a text embeds the same in any batch: 1.9x float32's
    # batched throughput, routing accuracy within 0.3 points (README, Performance). On torch
    # (one scale per tensor) it encodes one text at a time. auto: int8 on ONNX, else float32.
    precision: Literal["auto", "float32", "int8"] = "auto"
    # What runs the model on the CPU: ONNX Runtime (float32: torch's embeddings, 2.4x faster
    # for one text; exported once into the cache) or torch. auto: ONNX when the model has
    # the usual sentence-transformers shape, else torch.
    runtime: Literal["auto", "onnx", "torch"] = "auto"
    batch_size: int = Field(default=64, ge=1)
    batch_wait_ms: float = Field(default=2.0, ge=0)
    cache_size: int = Field(default=4096, ge=0)


class MemoryConfig(_Section):
    """Where exemplars, cached answers and pending clarifications live.

    `local`: in this process (optionally snapshotted to a file). `redis`: shared by every
    replica and kept across restarts; `url` may also come from TASKGATE_REDIS_URL.
    """

    backend: Literal["local", "redis"] = "local"
    url: str | None = Field(default=None, pattern=r"^(redis|rediss|unix)://")
    prefix: str = Field(default="taskgate", pattern=r"^[A-Za-z0-9_.-]+$")
    snapshot: str | None = None
    timeout_s: float = Field(default=1.0, gt=0)
    queue_limit: int = Field(default=10_000, ge=1)
    vector_search: Literal["auto", "local", "redis"] = "auto"
    clarification_ttl_s: float = Field(default=900.0, gt=0)
    turn_ttl_s: float = Field(default=3600.0, gt=0)
    # How long an answer can still receive feedback.
    feedback_ttl_s: float = Field(default=86_400.0, gt=0)
    max_entries: int = Field(default=100_000, ge=1)

    @model_validator(mode="after")
    def _redis_needs_url(self) -> MemoryConfig:
        if self.backend == "redis" and not self.url:
            raise ValueError("backend: redis needs memory.url (or TASKGATE_REDIS_URL)")
        return self


class CacheConfig(_Section):
    """The response cache: exact hits, and semantic hits at `threshold` similarity or more."""

    enabled: bool = True
    threshold: float = Field(default=0.95, gt=0, le=1)
    semantic: bool = True
    # Default time to live of a cached answer; an expert's `cache_ttl_s` overrides it.
    ttl_s: float = Field(default=3600.0, ge=0)


class HeadConfig(_Section):
    """The routing head fitted on the exemplars' embeddings (see README, Router accuracy).

    `mode`: `auto` fits one when every expert has at least `min_examples` examples, `on`
    whenever there are two examples per expert, `off` never. `threshold` (on the probability
    that some expert fits) and `margin` (on the best expert's lead in shares of it) are fixed
    numbers that override the calibrated ones.
    """

    mode: Literal["auto", "on", "off"] = "auto"
    min_examples: int = Field(default=20, ge=2)
    # Inverse L2 regularisation of the logistic regression; folds for calibration.
    c: float = Field(default=10.0, gt=0)
    folds: int = Field(default=5, ge=2, le=20)
    threshold: float | None = Field(default=None, ge=0, le=1)
    margin: float | None = Field(default=None, ge=0, le=1)

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: object) -> object:
        # YAML reads a bare on/off as a boolean.
        if isinstance(value, bool):
            return "on" if value else "off"
        return value


class TargetConfig(_Section):
    """The operating point calibration aims for: exactly one of the two."""

    oos_recall: float | None = Field(default=None, gt=0, lt=1)
    precision: float | None = Field(default=None, gt=0, lt=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> TargetConfig:
        if (self.oos_recall is None) == (self.precision is None):
            raise ValueError("give exactly one of oos_recall or precision")
        return self

    def chosen(self) -> tuple[Literal["oos_recall", "precision"], float]:
        if self.oos_recall is not None:
            return "oos_recall", self.oos_recall
        assert self.precision is not None
        return "precision", self.precision


class HealthConfig(_Section):
    """Expert health probes: cheap (`GET /models` for OpenAI-compatible servers)."""

    interval_s: float = Field(default=10.0, gt=0)
    jitter: float = Field(default=0.2, ge=0, lt=1)
    timeout_s: float = Field(default=5.0, gt=0)
    # Failed probes in a row before an expert is taken out of routing.
    unhealthy_after: int = Field(default=1, ge=1)


class TracingConfig(_Section):
    """OpenTelemetry traces over OTLP/HTTP; off by default."""

    enabled: bool = False
    # e.g. http://otel-collector:4318/v1/traces; None: the OTEL_EXPORTER_OTLP_* variables.
    endpoint: str | None = None
    service_name: str = "taskgate"


class RouterConfig(_Section):
    # Cosine similarity thresholds: used when no head is fitted.
    threshold: float = Field(default=0.45, ge=-1, le=1)
    margin: float = Field(default=0.04, ge=0, le=2)
    on_no_match: Literal["clarify", "fallback"] = "clarify"
    fallback: str | None = None
    aggregate: Literal["max", "mean_topk"] = "max"
    top_k: int = Field(default=3, ge=1)
    use_descriptions: bool = True
    max_candidates: int = Field(default=3, ge=2)
    followup_max_words: int = Field(default=12, ge=0)
    # A clarification reply resolves by similarity when it is at least this close.
    resolve_threshold: float = Field(default=0.25, ge=-1, le=1)
    head: HeadConfig = Field(default_factory=HeadConfig)
    # Calibrates the head's threshold and margin (default: precision 0.9).
    target: TargetConfig | None = None
    # Requests no expert should take: the head's "none" class and calibration negatives.
    negative_examples: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _fallback_named(self) -> RouterConfig:
        if self.on_no_match == "fallback" and not self.fallback:
            raise ValueError("on_no_match: fallback needs router.fallback to name an expert")
        return self


class Config(_Section):
    server: ServerConfig = Field(default_factory=ServerConfig)
    # Required: API keys, or an explicit `auth: none`.
    auth: Annotated[AuthConfig | NoAuth, Field(discriminator="mode")]
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    experts: list[ExpertSpec] = Field(min_length=1)
    # Experts by name (looked up on every request).
    _by_name: dict[str, ExpertSpec] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _auth_stated(cls, data: object) -> object:
        if isinstance(data, dict) and "auth" not in data:
            raise ValueError(
                "auth is required: give API keys (auth.keys, auth.keys_file or auth.redis; "
                "see `taskgate keys add`), or say `auth: none` to serve without them"
            )
        return data

    @field_validator("auth", mode="before")
    @classmethod
    def _auth_mode(cls, value: object) -> object:
        if value == "none":
            return {"mode": "none"}
        if value is None:
            raise ValueError("say `auth: none` to serve without authentication, or give keys")
        if isinstance(value, dict) and "mode" not in value:
            return {"mode": "keys", **value}
        return value

    @model_validator(mode="after")
    def _references_resolve(self) -> Config:
        names = [expert.name for expert in self.experts]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"expert names must be unique; repeated: {', '.join(duplicates)}")
        known = set(names)
        if self.router.fallback is not None and self.router.fallback not in known:
            raise ValueError(f"router.fallback '{self.router.fallback}' is not an expert")
        for expert in self.experts:
            missing = [name for name in expert.fallbacks if name not in known]
            if missing:
                raise ValueError(
                    f"expert '{expert.name}' has unknown fallbacks: {', '.join(missing)}"
                )
        if isinstance(self.auth, AuthConfig) and self.auth.redis and self.memory.backend != "redis":
            raise ValueError("auth.redis: true needs memory.backend: redis (keys live there)")
        self._by_name = {expert.name: expert for expert in self.experts}
        return self

    def expert(self, name: str) -> ExpertSpec | None:
        return self._by_name.get(name)


# ---------------------------------------------------------------------------------------
# Loading.

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_Loc = Loc


def with_redis_url(config: Config, url: str | None) -> Config:
    """`TASKGATE_REDIS_URL` turns the memory into Redis at that URL."""
    if not url:
        return config
    memory = config.memory.model_copy(update={"backend": "redis", "url": url})
    return config.model_copy(update={"memory": memory})


def default_config_text() -> str:
    return resources.files("gateway").joinpath(DEFAULT_CONFIG_NAME).read_text(encoding="utf-8")


def load_config(path: Path | None, env: Mapping[str, str]) -> Config:
    """Load `path`, or the embedded default when `path` is None."""
    if path is None:
        return parse_config(default_config_text(), f"<embedded {DEFAULT_CONFIG_NAME}>", env)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [ConfigIssue("", f"cannot read: {exc.strerror}")]) from exc
    return parse_config(text, str(path), env)


# A config is small; anything bigger once its aliases are expanded (`&a [*b, *b, ...]`
# nests exponentially) or deeper than this is refused before it is walked.
MAX_NODES = 1_000_000
MAX_DEPTH = 64


class _TooBig(Exception):
    pass


def parse_config(text: str, source: str, env: Mapping[str, str]) -> Config:
    try:
        return _parse(text, source, env)
    except (RecursionError, _TooBig) as exc:
        problem = f"the document is nested deeper than {MAX_DEPTH} levels or holds more than "
        problem += f"{MAX_NODES} values once its aliases are expanded"
        raise ConfigError(source, [ConfigIssue("", problem, None)]) from exc


def _parse(text: str, source: str, env: Mapping[str, str]) -> Config:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [ConfigIssue("", f"invalid YAML: {problem}", line)]) from exc
    if not isinstance(data, dict) or root is None:
        raise ConfigError(source, [ConfigIssue("", "the document must be a mapping", 1)])
    issues: list[ConfigIssue] = []
    data = _interpolate(data, (), env, issues, root, [MAX_NODES])
    if issues:
        raise ConfigError(source, issues)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, issues_from(exc, root)) from exc


def _interpolate(
    value: object,
    loc: _Loc,
    env: Mapping[str, str],
    issues: list[ConfigIssue],
    root: yaml.Node,
    budget: list[int],
) -> object:
    """`${NAME}` and `${NAME:-default}` replaced in every string; `budget` holds how many
    more values may be visited."""
    budget[0] -= 1
    if budget[0] < 0 or len(loc) > MAX_DEPTH:
        raise _TooBig
    if isinstance(value, dict):
        return {
            k: _interpolate(v, (*loc, str(k)), env, issues, root, budget) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_interpolate(v, (*loc, i), env, issues, root, budget) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        issues.append(issue_at(root, loc, f"environment variable {name} is not set"))
        return ""

    return _ENV_PATTERN.sub(substitute, value)
