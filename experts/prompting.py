"""What the experts that run models in process (`local` and `fusion`) share: from a chat
request to prompt token ids (the chat template, the system prompt, truncation to the
context, the sampling plan; blocking, so called from a worker thread), the request's
deadline, and how a failed generation is reported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch

from experts.base import ExpertRejected, ExpertRequest, ExpertTimeout, ExpertUnavailable
from experts.decoding import LogitsTransform, sampling_transforms

T = TypeVar("T")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ChatTokenizer(Protocol):
    """The part of a transformers tokenizer we use."""

    chat_template: str | None
    eos_token_id: int | None

    def apply_chat_template(
        self, conversation: list[dict[str, str]], *, tokenize: bool, add_generation_prompt: bool
    ) -> str: ...

    def encode(self, text: str, *, add_special_tokens: bool) -> list[int]: ...

    def decode(self, token_ids: list[int], *, skip_special_tokens: bool) -> str: ...


class PromptLimits(Protocol):
    """The expert spec's fields that shape a prompt."""

    @property
    def context_tokens(self) -> int: ...

    @property
    def max_tokens(self) -> int: ...

    @property
    def system_prompt(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class PromptPlan:
    """One request, templated, truncated, tokenized and ready to decode."""

    prompt_ids: tuple[int, ...]
    max_new_tokens: int
    stop: tuple[str, ...] = ()
    greedy: bool = True
    seed: int | None = None
    transforms: tuple[LogitsTransform, ...] = ()


def plan_prompt(
    expert: str,
    tokenizer: ChatTokenizer,
    request: ExpertRequest,
    limits: PromptLimits,
) -> PromptPlan:
    """The plan of `request`, or ExpertRejected naming `expert` and what is wrong.

    The spec's system prompt is added unless the request brings its own; the oldest
    non-system turns are dropped while the prompt and `max_tokens` (default: the spec's) do
    not fit the spec's `context_tokens`.
    """
    sampling = request.sampling
    context_tokens, system_prompt = limits.context_tokens, limits.system_prompt
    max_new = limits.max_tokens if sampling.max_tokens is None else sampling.max_tokens
    if not request.messages:
        raise ExpertRejected(expert, "the request has no messages")
    if max_new < 1:
        raise ExpertRejected(expert, f"max_tokens must be at least 1, got {max_new}")
    turns = [{"role": m.role, "content": m.content} for m in request.messages]
    if system_prompt and not any(turn["role"] == "system" for turn in turns):
        turns.insert(0, {"role": "system", "content": system_prompt})
    try:
        prompt = prompt_ids(tokenizer, turns, budget=context_tokens - max_new)
        transforms = sampling_transforms(sampling, len(prompt))
    except (ValueError, TypeError) as exc:
        raise ExpertRejected(expert, f"invalid request: {exc}") from exc
    if len(prompt) >= context_tokens:
        message = f"the prompt needs {len(prompt)} tokens; the context holds {context_tokens}"
        raise ExpertRejected(expert, message)
    max_new = min(max_new, context_tokens - len(prompt))
    return PromptPlan(
        tuple(prompt), max_new, sampling.stop, sampling.is_greedy(), sampling.seed, transforms
    )


def prompt_ids(tokenizer: ChatTokenizer, turns: list[dict[str, str]], budget: int) -> list[int]:
    """Template and tokenize, dropping the oldest non-system turns while over `budget`."""
    while True:
        text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        ids = tokenizer.encode(text, add_special_tokens=False)
        droppable = [i for i, turn in enumerate(turns[:-1]) if turn["role"] != "system"]
        if len(ids) <= budget or not droppable:
            return list(ids)
        del turns[droppable[0]]


def eos_ids(tokenizer: ChatTokenizer, model: torch.nn.Module) -> frozenset[int]:
    """The tokenizer's end-of-sequence token and the model's generation config's."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    candidates = [tokenizer.eos_token_id]
    candidates += configured if isinstance(configured, list) else [configured]
    return frozenset(token for token in candidates if isinstance(token, int))


async def within(expert: str, timeout_s: float, deadline: float, awaitable: Awaitable[T]) -> T:
    """`awaitable`'s result, or ExpertTimeout once the loop's clock passes `deadline` (the
    request's start plus the expert's `timeout_s`)."""
    try:
        async with asyncio.timeout_at(deadline):
            return await awaitable
    except TimeoutError as exc:
        raise ExpertTimeout(expert, f"no answer within {timeout_s:g}s") from exc


def generation_failure(expert: str, error: BaseException | None) -> ExpertUnavailable:
    """A generation that ended without finishing: it raised `error`, or (None) the expert
    was closed under it."""
    if error is None:
        return ExpertUnavailable(expert, "the expert was closed during generation")
    return ExpertUnavailable(expert, f"generation failed: {type(error).__name__}: {error}")
