"""A `fusion` expert served by the gateway process, through the real `openai` client.

The real SmolLM2-135M-Instruct is both the large model and the small base; the task expert
is a tiny random model with SmolLM2's vocabulary. The large model must then move exactly as
far as the expert moved from its base (a = 1 at every step), so the fused answer is the tiny
model's own greedy answer, computed here without any of the fusion code.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import torch
from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

from experts.weights import BUILTIN_PREFIX, resolve_model
from tests.support.gateway import gateway_process

pytestmark = pytest.mark.slow

SMOL = BUILTIN_PREFIX + "SmolLM2-135M-Instruct"
MAX_TOKENS = 16
PROMPTS = ["Name three colours of the rainbow.", "Write one word about the sea."]
CONFIG = """
auth: none
experts:
  - name: fused
    kind: fusion
    large: {smol}
    small_base: {smol}
    experts: [{{name: tiny, model: {tiny}}}]
    max_tokens: {max_tokens}
    cache_ttl_s: 0
    description: a large model steered by a small task model
"""


@dataclass(frozen=True)
class Greedy:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


def cache_dir() -> Path:
    home = os.environ.get("TASKGATE_HOME")
    return Path(home) if home else Path.home() / ".cache" / "taskgate"


def tiny_with_smollm2_vocabulary(directory: Path) -> Path:
    """A randomly initialised two-layer Llama (a few MB) that speaks SmolLM2's tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(SMOL, cache_dir()))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        initializer_range=0.5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(5)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def greedy(tiny: Path, prompt: str) -> Greedy:
    """The tiny model's greedy answer: SmolLM2's chat template, a plain uncached argmax loop,
    ending at SmolLM2's end-of-sequence ids or after MAX_TOKENS."""
    smol = resolve_model(SMOL, cache_dir())
    tokenizer = AutoTokenizer.from_pretrained(smol)
    configured = GenerationConfig.from_pretrained(smol).eos_token_id
    eos = {tokenizer.eos_token_id, *(configured if isinstance(configured, list) else [configured])}
    model = LlamaForCausalLM.from_pretrained(tiny).eval()
    messages = [{"role": "user", "content": prompt}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer.encode(text, add_special_tokens=False)
    generated: list[int] = []
    with torch.inference_mode():
        while len(generated) < MAX_TOKENS:
            token = int(model(input_ids=torch.tensor([ids + generated])).logits[0, -1].argmax())
            if token in eos:
                break
            generated.append(token)
    reason = "length" if len(generated) == MAX_TOKENS else "stop"
    answer = tokenizer.decode(generated, skip_special_tokens=True)
    return Greedy(answer, len(ids), len(generated), reason)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_with_smollm2_vocabulary(tmp_path_factory.mktemp("fusion-e2e") / "tiny")


@pytest.fixture(scope="module")
def client(tiny: Path) -> Iterator[openai.OpenAI]:
    config = tiny.parent / "taskgate.yaml"
    config.write_text(CONFIG.format(smol=SMOL, tiny=tiny, max_tokens=MAX_TOKENS))
    with gateway_process(config, env={"TASKGATE_HOME": str(cache_dir())}, name="fusion") as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)


def ask(client: openai.OpenAI, prompt: str, **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model="fused",
        messages=[{"role": "user", "content": prompt}],
        temperature=0,
        max_tokens=MAX_TOKENS,
        **kwargs,
    )


def fusion_summary(usage: Any) -> dict[str, Any]:
    assert usage is not None and usage.model_extra is not None
    summary: dict[str, Any] = usage.model_extra["fusion"]
    return summary


@pytest.mark.parametrize("prompt", PROMPTS)
def test_the_fused_answer_is_the_experts_greedy_answer(
    client: openai.OpenAI, tiny: Path, prompt: str
) -> None:
    expected = greedy(tiny, prompt)
    answer = ask(client, prompt)
    assert answer.model == "fused"
    assert answer.choices[0].message.content == expected.text != ""
    assert answer.choices[0].finish_reason == expected.finish_reason
    assert answer.usage.prompt_tokens == expected.prompt_tokens
    assert answer.usage.completion_tokens == expected.completion_tokens
    summary = fusion_summary(answer.usage)
    assert summary["solver"] == "bracketed"
    assert summary["alpha_mean"] == pytest.approx(1.0, abs=1e-3)
    assert summary["active_steps"] == {"tiny": summary["steps"]}
    assert summary["inactive_steps"] == 0
    # The route object carries the same summary of the a's.
    assert answer.model_extra is not None
    assert answer.model_extra["route"]["fusion"] == summary


def test_the_streamed_fused_answer_is_the_experts_greedy_answer(
    client: openai.OpenAI, tiny: Path
) -> None:
    expected = greedy(tiny, PROMPTS[0])
    options = {"stream": True, "stream_options": {"include_usage": True}}
    chunks = list(ask(client, PROMPTS[0], **options))
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([p for p in pieces if p]) > 1, "the answer arrives in several chunks"
    assert "".join(pieces) == expected.text
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason is not None]
    assert [c.choices[0].finish_reason for c in finals] == [expected.finish_reason]
    assert finals[0].model_extra is not None and finals[0].model_extra["route"]["expert"] == "fused"
    (usage,) = [c.usage for c in chunks if c.usage is not None]
    assert usage.completion_tokens == expected.completion_tokens
    assert fusion_summary(usage)["alpha_mean"] == pytest.approx(1.0, abs=1e-3)
    assert finals[0].model_extra["route"]["fusion"] == fusion_summary(usage)
