"""The configuration schema of each expert kind (pure data, pydantic v2).

`gateway.config` composes these into the `experts:` list of the YAML file; the registry
builds an expert from its spec. Keeping the specs here lets experts stay independent of
the gateway.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
RESERVED_NAMES = frozenset({"auto"})


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
    system_prompt: str | None = None
    threads: int | None = Field(default=None, ge=1)

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


ExpertSpec = Annotated[OpenAISpec | ToolSpec | LocalSpec | FusionSpec, Field(discriminator="kind")]
