"""OpenAI-compatible wire models, and their translation to the gateway's `ChatCall`.

Requests accept fields we do not know: they travel to the expert in `extra`, so an
OpenAI-compatible upstream sees what the client sent. Each message keeps its whole shape
(`Message.raw`) beside the text view the gateway reads.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.errors import InvalidRequest
from gateway.service import AUTO, ChatCall, JSONValue, Message, Sampling

MAX_STOP_SEQUENCES = 4


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self, index: int) -> str:
        """The text view: a string content, or its text (and refusal) parts joined."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        texts = []
        for part in self.content:
            if part.type in ("text", "refusal"):
                value = part.text if part.type == "text" else (part.model_extra or {}).get(
                    "refusal"
                )
                if not isinstance(value, str):
                    raise InvalidRequest(
                        f"messages[{index}].content: a '{part.type}' part needs its text",
                        param=f"messages.{index}.content",
                    )
                texts.append(value)
        return "\n".join(texts)

    def to_message(self, index: int) -> Message:
        role = {"developer": "system", "function": "tool"}.get(self.role, self.role)
        raw: dict[str, JSONValue] = self.model_dump(mode="json", exclude_unset=True)
        return Message(role=role, content=self.text(index), raw=raw)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(default=AUTO, min_length=1)
    messages: list[ChatMessageIn] = Field(min_length=1)
    stream: bool | None = False  # OpenAI's schema allows null: not streamed
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)  # 0 is for the expert to refuse
    top_k: int | None = Field(default=None, ge=-1)
    stop: str | list[str] | None = None
    seed: int | None = None
    # Passed on as given; the server's `max_n` caps it.
    n: int | None = Field(default=None, ge=1, le=128)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    repetition_penalty: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _stop_limit(self) -> ChatCompletionRequest:
        if isinstance(self.stop, list) and len(self.stop) > MAX_STOP_SEQUENCES:
            raise ValueError(f"stop: at most {MAX_STOP_SEQUENCES} sequences")
        return self

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def to_call(
        self, tenant: str, request_id: str, cache_control: frozenset[str] = frozenset()
    ) -> ChatCall:
        messages = tuple(m.to_message(i) for i, m in enumerate(self.messages))
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        completion_key = self.max_completion_tokens is not None
        sampling = Sampling(
            max_tokens=self.max_completion_tokens or self.max_tokens,
            max_tokens_key="max_completion_tokens" if completion_key else "max_tokens",
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k if self.top_k not in (None, -1) else None,
            stop=stop,
            seed=self.seed,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            repetition_penalty=self.repetition_penalty,
        )
        extra: dict[str, JSONValue] = dict(self.model_extra or {})
        if self.n is not None:
            extra["n"] = self.n
        if self.stream_options is not None:
            extra["stream_options"] = self.stream_options.model_dump(exclude_unset=True)
        return ChatCall(
            self.model,
            messages,
            sampling,
            extra,
            tenant,
            request_id,
            cache_control,
            bool(self.stream),
        )


class RouteRequest(BaseModel):
    """`/v1/route`: a chat request's messages, or a bare `input` text."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(default=AUTO, min_length=1)
    messages: list[ChatMessageIn] | None = Field(default=None, min_length=1)
    input: str | None = Field(default=None, min_length=1)
    # Also the policy applied and the exemplars behind the decision (admin keys only).
    explain: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> RouteRequest:
        if (self.messages is None) == (self.input is None):
            raise ValueError("give exactly one of 'messages' or 'input'")
        return self

    def to_call(self, tenant: str, request_id: str) -> ChatCall:
        messages = self.messages or [ChatMessageIn(role="user", content=self.input)]
        chat = ChatCompletionRequest(model=self.model, messages=messages)
        return chat.to_call(tenant, request_id)


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=200)
    rating: Literal[1, -1]


class ExemplarIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expert: str = Field(min_length=1)
    text: str = Field(min_length=1, max_length=8000)
    response: str | None = Field(default=None, max_length=32000)
    good: bool = True
