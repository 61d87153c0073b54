"""From a chat request to prompt token ids, for the experts that run models in process
(`local` and `fusion`): the chat template, the system prompt, truncation to the context,
and the sampling plan. Blocking (tokenizers): call it from a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from experts.base import ExpertRejected, ExpertRequest
from experts.decoding import LogitsTransform, sampling_transforms

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
    *,
    context_tokens: int,
    default_max_tokens: int,
    system_prompt: str | None,
) -> PromptPlan:
    """The plan of `request`, or ExpertRejected naming `expert` and what is wrong.

    The system prompt is added unless the request brings its own; the oldest non-system
    turns are dropped while the prompt and `max_tokens` do not fit `context_tokens`.
    """
    sampling = request.sampling
    max_new = default_max_tokens if sampling.max_tokens is None else sampling.max_tokens
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
