"""The in-process transformers expert, on a tiny random Llama with a byte-level tokenizer.

The tiny model decodes in milliseconds, and its byte tokens produce broken multi-byte
sequences, which exercises the incremental detokenisation.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, decoders, models
from tokenizers.pre_tokenizers import ByteLevel
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from experts.base import (
    Delta,
    Expert,
    ExpertRejected,
    ExpertRequest,
    ExpertTimeout,
    ExpertUnavailable,
    Message,
    Sampling,
)
from experts.decoding import OpenAIPenalties, StopScanner
from experts.local import LocalExpert
from experts.specs import LocalSpec

pytestmark = pytest.mark.anyio

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOS = 2
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
HELLO = ExpertRequest(messages=(Message("user", "hello there"),))


def byte_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: index for index, token in enumerate(SPECIALS)}
    for char in sorted(ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(SPECIALS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
    )
    tokenizer.chat_template = CHATML
    return tokenizer


def tiny_llama(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        initializer_range=0.5,  # decisive logits: greedy never hinges on rounding
        bos_token_id=1,
        eos_token_id=EOS,
        pad_token_id=EOS,
        tie_word_embeddings=False,
    )
    torch.manual_seed(1234)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random model that (greedily) never picks EOS."""
    directory = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = byte_tokenizer()
    model = tiny_llama(tokenizer)
    with torch.no_grad():
        model.lm_head.weight[EOS].zero_()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def eos_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model whose first choice is always EOS: the residual stream keeps a positive
    feature 0 (attention and MLP outputs are zero) and only EOS reads it."""
    directory = tmp_path_factory.mktemp("eos-llama")
    tokenizer = byte_tokenizer()
    model = tiny_llama(tokenizer)
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 1.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        model.lm_head.weight[EOS, 0] = 10.0
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def make_expert(model_dir: Path, tmp_path: Path, **overrides: Any) -> LocalExpert:
    fields: dict[str, Any] = {
        "name": "tiny",
        "kind": "local",
        "description": "a tiny test model",
        "model": str(model_dir),
        "device": "cpu",
        "max_tokens": 16,
    }
    fields.update(overrides)
    return LocalExpert(LocalSpec(**fields), cache_dir=tmp_path)


def ask(text: str = "hello there", **sampling: Any) -> ExpertRequest:
    return ExpertRequest(messages=(Message("user", text),), sampling=Sampling(**sampling))


def prompt_length(model_dir: Path, turns: list[dict[str, str]]) -> int:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    return len(tokenizer.encode(text, add_special_tokens=False))


def decoder_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("taskgate-local-")]


# -- lifecycle ----------------------------------------------------------------------------


async def test_health_reports_loading(tiny_dir: Path, tmp_path: Path) -> None:
    expert = make_expert(tiny_dir, tmp_path)
    assert isinstance(expert, Expert)
    assert expert.kind == "local"
    assert not (await expert.health()).ok

    await expert.start()
    await expert.start()  # idempotent

    health = await expert.health()
    assert health.ok
    assert health.detail == "loaded on cpu/float32"
    await expert.aclose()
    assert not (await expert.health()).ok


async def test_complete_before_start_starts(tiny_dir: Path, tmp_path: Path) -> None:
    expert = make_expert(tiny_dir, tmp_path)
    result = await expert.complete(HELLO)
    assert result.content
    assert (await expert.health()).ok


async def test_a_missing_model_is_unavailable(tmp_path: Path) -> None:
    expert = make_expert(tmp_path / "absent", tmp_path)
    with pytest.raises(ExpertUnavailable, match="does not exist"):
        await expert.start()


# -- decoding -----------------------------------------------------------------------------


async def test_greedy_equals_transformers_generate(tiny_dir: Path, tmp_path: Path) -> None:
    expert = make_expert(tiny_dir, tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hello there"}], tokenize=False, add_generation_prompt=True
    )
    prompt = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
    reference = model.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20, do_sample=False
    )[0, prompt.shape[1] :].tolist()
    assert EOS not in reference

    first = await expert.complete(ask(max_tokens=20))
    second = await expert.complete(ask(max_tokens=20))

    assert first == second
    assert first.content == tokenizer.decode(reference, skip_special_tokens=True)
    assert first.finish_reason == "length"
    assert first.usage is not None
    assert first.usage.prompt_tokens == prompt.shape[1]
    assert first.usage.completion_tokens == 20
    assert first.usage.total_tokens == prompt.shape[1] + 20


async def test_seeded_sampling_is_reproducible(tiny_dir: Path, tmp_path: Path) -> None:
    expert = make_expert(tiny_dir, tmp_path)
    one = await expert.complete(ask(temperature=1.0, top_p=0.95, seed=7))
    two = await expert.complete(ask(temperature=1.0, top_p=0.95, seed=7))
    other = await expert.complete(ask(temperature=1.0, top_p=0.95, seed=8))
    greedy = await expert.complete(ask())
    assert one == two
    assert one.content != other.content
    assert one.content != greedy.content


async def test_top_k_one_sampling_is_greedy(tiny_dir: Path, tmp_path: Path) -> None:
    expert = make_expert(tiny_dir, tmp_path)
    sampled = await expert.complete(ask(temperature=0.8, top_k=1, seed=3))
    assert sampled == await expert.complete(ask(temperature=0.0))


async def test_a_stop_string_cuts_the_answer(tiny_dir: Path, tmp_path: Path) -> None:
    expert = make_expert(tiny_dir, tmp_path)
    full = (await expert.complete(ask())).content
    start = next(i for i in range(3, len(full) - 2) if "\ufffd" not in full[i : i + 2])
    stop = full[start : start + 2]

    result = await expert.complete(ask(stop=("never-produced", stop)))

    assert result.content == full[: full.index(stop)]
    assert result.finish_reason == "stop"


async def test_max_tokens_ends_with_length(tiny_dir: Path, tmp_path: Path) -> None:
    expert = make_expert(tiny_dir, tmp_path, max_tokens=5)
    result = await expert.complete(HELLO)
    assert result.finish_reason == "length"
    assert result.usage is not None
    assert result.usage.completion_tokens == 5
    assert (await expert.complete(ask(max_tokens=3))).usage.completion_tokens == 3  # type: ignore[union-attr]


async def test_eos_ends_with_stop_and_is_not_counted(eos_dir: Path, tmp_path: Path) -> None:
    expert = make_expert(eos_dir, tmp_path)
    result = await expert.complete(HELLO)
    assert result.content == ""
    assert result.finish_reason == "stop"
    assert result.usage is not None
    assert result.usage.completion_tokens == 0


async def test_penalties_change_greedy_output(tiny_dir: Path, tmp_path: Path) -> None:
    expert = make_expert(tiny_dir, tmp_path, max_tokens=40)
    plain = await expert.complete(HELLO)
    penalised = await expert.complete(ask(repetition_penalty=5.0, frequency_penalty=2.0))
    assert penalised.finish_reason == "length"
    assert penalised.content != plain.content


@pytest.mark.parametrize(
    "sampling",
    [{"temperature": -1.0}, {"temperature": 1.0, "top_p": 1.5}, {"presence_penalty": 3.0}],
)
async def test_invalid_sampling_is_rejected(
    tiny_dir: Path, tmp_path: Path, sampling: dict[str, float]
) -> None:
    expert = make_expert(tiny_dir, tmp_path)
    with pytest.raises(ExpertRejected):
        await expert.complete(ask(**sampling))


# -- streaming ----------------------------------------------------------------------------


async def test_stream_concatenates_to_complete(tiny_dir: Path, tmp_path: Path) -> None:
    expert = make_expert(tiny_dir, tmp_path, max_tokens=60)
    deltas: list[Delta] = [delta async for delta in expert.stream(HELLO)]
    result = await expert.complete(HELLO)

    text = "".join(delta.content for delta in deltas)
    assert text == result.content
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["length"]
    assert deltas[-1].usage == result.usage
    # Never a broken character: every streamed prefix is a prefix of the final text.
    sent = ""
    for delta in deltas:
        sent += delta.content
        assert result.content.startswith(sent)


async def test_closing_the_stream_stops_the_thread(
    tiny_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    expert = make_expert(tiny_dir, tmp_path, max_tokens=3000, context_tokens=4096)
    caplog.set_level(logging.DEBUG, logger="experts.local")
    stream = expert.stream(HELLO)

    first = await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]

    assert first.finish_reason is None
    assert decoder_threads() == []
    assert any(record.getMessage() == "generation cancelled" for record in caplog.records)
    assert (await expert.complete(ask(max_tokens=2))).finish_reason == "length"


async def test_requests_queue_one_at_a_time(tiny_dir: Path, tmp_path: Path) -> None:
    expert = make_expert(tiny_dir, tmp_path)
    results = await asyncio.gather(*(expert.complete(HELLO) for _ in range(3)))
    assert results[0] == results[1] == results[2]


async def test_a_timeout_stops_generation(tiny_dir: Path, tmp_path: Path) -> None:
    expert = make_expert(tiny_dir, tmp_path, max_tokens=3000, context_tokens=4096, timeout_s=1e-6)
    await expert.start()  # loading is not part of a request's time
    with pytest.raises(ExpertTimeout):
        await expert.complete(HELLO)
    assert decoder_threads() == []


# -- prompts ------------------------------------------------------------------------------


async def test_the_system_prompt_is_added_when_missing(tiny_dir: Path, tmp_path: Path) -> None:
    expert = make_expert(tiny_dir, tmp_path, system_prompt="Be brief.")
    user = {"role": "user", "content": "hello there"}
    system = {"role": "system", "content": "Be brief."}
    own = {"role": "system", "content": "Be long."}

    added = await expert.complete(HELLO)
    kept = await expert.complete(
        ExpertRequest(messages=(Message("system", "Be long."), Message("user", "hello there")))
    )

    assert added.usage is not None
    assert kept.usage is not None
    assert added.usage.prompt_tokens == prompt_length(tiny_dir, [system, user])
    assert kept.usage.prompt_tokens == prompt_length(tiny_dir, [own, user])


async def test_the_oldest_turns_are_dropped_to_fit(tiny_dir: Path, tmp_path: Path) -> None:
    expert = make_expert(tiny_dir, tmp_path, context_tokens=80, max_tokens=16)
    request = ExpertRequest(
        messages=(
            Message("system", "sys"),
            Message("user", "an old question " * 4),
            Message("assistant", "an old answer " * 4),
            Message("user", "the new question"),
        )
    )
    result = await expert.complete(request)

    expected = prompt_length(
        tiny_dir,
        [{"role": "system", "content": "sys"}, {"role": "user", "content": "the new question"}],
    )
    assert result.usage is not None
    assert result.usage.prompt_tokens == expected
    assert result.usage.prompt_tokens + 16 <= 80


async def test_a_prompt_longer_than_the_context_is_rejected(tiny_dir: Path, tmp_path: Path) -> None:
    expert = make_expert(tiny_dir, tmp_path, context_tokens=32)
    with pytest.raises(ExpertRejected, match="context"):
        await expert.complete(ask("x" * 100))


async def test_a_short_context_shortens_the_answer(tiny_dir: Path, tmp_path: Path) -> None:
    expert = make_expert(tiny_dir, tmp_path, context_tokens=40, max_tokens=16)
    result = await expert.complete(HELLO)
    assert result.usage is not None
    assert result.usage.prompt_tokens + 16 > 40
    assert result.usage.total_tokens == 40
    assert result.finish_reason == "length"


# -- pure pieces --------------------------------------------------------------------------


def test_stop_scanner_holds_back_possible_stop_prefixes() -> None:
    scanner = StopScanner(("END",))
    assert scanner.feed("abc") == ("abc", False)
    assert scanner.feed("abcE") == ("", False)
    assert scanner.feed("abcEN") == ("", False)
    assert scanner.feed("abcENx") == ("ENx", False)
    assert scanner.feed("abcENxyEND and more") == ("y", True)


def test_stop_scanner_holds_back_incomplete_characters() -> None:
    scanner = StopScanner(())
    assert scanner.feed("a\ufffd") == ("a", False)
    assert scanner.feed("a\u20ac") == ("\u20ac", False)
    assert scanner.rest("a\u20ac\ufffd") == "\ufffd"


def test_openai_penalties_count_generated_tokens_only() -> None:
    penalties = OpenAIPenalties(presence=0.5, frequency=1.0, prompt_length=2)
    ids = torch.tensor([[1, 1, 3, 3, 0]])
    scores = penalties(ids, torch.zeros(1, 4))
    assert scores.tolist() == [[-1.5, 0.0, 0.0, -2.5]]


def test_penalties_outside_openai_range_are_refused() -> None:
    with pytest.raises(ValueError, match="frequency_penalty"):
        OpenAIPenalties(presence=0.0, frequency=2.5, prompt_length=0)


# -- the real model -----------------------------------------------------------------------


@pytest.mark.slow
async def test_smollm2_tells_a_joke(tmp_path: Path) -> None:
    home = os.environ.get("TASKGATE_HOME")
    cache = Path(home) if home else Path.home() / ".cache" / "taskgate"
    spec = LocalSpec(
        name="smol",
        kind="local",
        description="SmolLM2",
        model="builtin:SmolLM2-135M-Instruct",
        max_tokens=48,
    )
    expert = LocalExpert(spec, cache_dir=cache)
    try:
        result = await expert.complete(ask("Tell me a short joke."))
    finally:
        await expert.aclose()
    assert result.content.strip()
    assert result.finish_reason in {"stop", "length"}
    assert result.usage is not None
    assert result.usage.completion_tokens > 0
