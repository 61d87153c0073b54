"""The `fusion` expert kind end to end in process, on tiny random models saved to disk."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

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
from experts.fusion import FusionExpert
from experts.fusion.loading import LoadedFusion
from experts.fusion.static import MemberSet
from experts.local import LocalExpert
from experts.registry import BuildContext, build_expert
from experts.specs import ExpertSpec, FusionSpec, LocalSpec
from tests.experts.fusion.tiny import byte_tokenizer, save, tiny_llama

pytestmark = pytest.mark.anyio

HELLO = ExpertRequest(messages=(Message("user", "hello there"),))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A (small base), B (the expert), C (large), and X, whose tokenizer differs."""
    root = tmp_path_factory.mktemp("fusion-models")
    tokenizer = byte_tokenizer()
    dirs = {
        name: save(tiny_llama(len(tokenizer), seed=seed), tokenizer, root / name)
        for name, seed in [("a", 1), ("b", 2), ("c", 3)]
    }
    appended = byte_tokenizer(extra=["<odd>"])  # an id appended at the end: allowed
    dirs["appended"] = save(tiny_llama(len(appended), seed=4), appended, root / "appended")
    swapped = byte_tokenizer(swap=True)
    dirs["x"] = save(tiny_llama(len(swapped), seed=5), swapped, root / "x")
    return dirs


def spec(models: dict[str, Path], **overrides: Any) -> FusionSpec:
    fields: dict[str, Any] = {
        "name": "fused",
        "kind": "fusion",
        "description": "tiny fusion",
        "large": str(models["c"]),
        "small_base": str(models["a"]),
        "experts": [{"name": "tiny", "model": str(models["b"])}],
        "max_tokens": 8,
    }
    fields.update(overrides)
    return FusionSpec(**fields)


@pytest.fixture
async def opened(tmp_path: Path) -> AsyncIterator[list[Expert]]:
    """Experts appended here are closed after the test."""
    experts: list[Expert] = []
    yield experts
    for expert in experts:
        await expert.aclose()


def fusion(models: dict[str, Path], opened: list[Expert], **overrides: Any) -> FusionExpert:
    expert = FusionExpert(spec(models, **overrides), cache_dir=models["a"].parent)
    opened.append(expert)
    return expert


def ask(text: str = "hello there", **sampling: Any) -> ExpertRequest:
    return ExpertRequest(messages=(Message("user", text),), sampling=Sampling(**sampling))


# -- lifecycle and the contract ------------------------------------------------------------


async def test_health_start_and_close(models: dict[str, Path], opened: list[Expert]) -> None:
    expert = fusion(models, opened)
    assert isinstance(expert, Expert) and expert.kind == "fusion"
    assert not (await expert.health()).ok
    await expert.start()
    await expert.start()  # idempotent
    health = await expert.health()
    assert health.ok and health.detail == f"3 models on cpu/float32, vocab {len(byte_tokenizer())}"
    await expert.aclose()
    assert not (await expert.health()).ok
    assert not [t for t in threading.enumerate() if t.name == "taskgate-fusion-fused"]


async def test_the_stream_concatenates_to_complete_and_ends_with_the_summary(
    models: dict[str, Path], opened: list[Expert]
) -> None:
    expert = fusion(models, opened)
    deltas: list[Delta] = [delta async for delta in expert.stream(HELLO)]
    result = await expert.complete(HELLO)
    assert "".join(d.content for d in deltas) == result.content
    final = deltas[-1]
    assert final.finish_reason == result.finish_reason == "length"
    assert all(d.finish_reason is None and not d.meta for d in deltas[:-1])
    assert final.usage is not None and final.usage.completion_tokens == 8
    summary = final.meta["fusion"]
    assert final.usage.details == {"fusion": summary}
    assert isinstance(summary, dict)
    assert summary["solver"] == "bracketed" and summary["steps"] == 8
    assert isinstance(summary["alpha_mean"], float) and 0 < summary["alpha_mean"] <= 2
    assert summary["active_steps"] == {"tiny": 8} and summary["inactive_steps"] == 0


async def test_identity_reproduces_the_expert_served_alone(
    models: dict[str, Path], opened: list[Expert], tmp_path: Path
) -> None:
    """Large = small base: the answer is the expert model's own greedy answer."""
    expert = fusion(models, opened, large=str(models["a"]), max_tokens=12)
    local = LocalExpert(
        LocalSpec(name="b", kind="local", description="b", model=str(models["b"]), max_tokens=12),
        cache_dir=tmp_path,
    )
    opened.append(local)
    for request in (HELLO, ask("what is fusion?")):
        ours, theirs = await expert.complete(request), await local.complete(request)
        assert ours.content == theirs.content and ours.content
        assert ours.finish_reason == theirs.finish_reason
        assert ours.usage is not None and theirs.usage is not None
        assert ours.usage.completion_tokens == theirs.usage.completion_tokens
    async for delta in expert.stream(HELLO):
        if delta.finish_reason is not None:
            summary = delta.meta["fusion"]
            assert isinstance(summary, dict) and summary["alpha_mean"] == pytest.approx(1.0)


@pytest.mark.parametrize(("solver", "extra"), [("grid", {}), ("static", {"alpha": 0.5})])
async def test_every_solver_serves(
    models: dict[str, Path], opened: list[Expert], solver: str, extra: dict[str, Any]
) -> None:
    expert = fusion(models, opened, solver=solver, **extra)
    result = await expert.complete(HELLO)
    assert result.finish_reason == "length" and result.usage is not None
    summary = result.usage.details["fusion"]
    assert isinstance(summary, dict) and summary["solver"] == solver
    if solver == "static":
        assert summary["alpha_mean"] == 0.5


async def test_concurrent_requests_decode_together_and_alone_alike(
    models: dict[str, Path], opened: list[Expert]
) -> None:
    expert = fusion(models, opened, max_batch=2)
    requests = [ask("hello there"), ask("x", max_tokens=3), ask("a longer question here")]
    alone = [await expert.complete(request) for request in requests]
    together = await asyncio.gather(*(expert.complete(request) for request in requests))
    assert together == alone


async def test_the_static_engine_answers_like_the_dynamic_one(
    models: dict[str, Path], opened: list[Expert]
) -> None:
    dynamic = fusion(models, opened, max_batch=2)
    static = fusion(models, opened, max_batch=2, engine="static", context_tokens=256)
    requests = [ask("hello there"), ask("x", max_tokens=3), ask("a longer question here")]
    together = await asyncio.gather(*(static.complete(request) for request in requests))
    assert together == [await dynamic.complete(request) for request in requests]


async def test_a_static_engine_that_fails_its_first_steps(
    models: dict[str, Path],
    opened: list[Expert],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Asked for, the static engine must work; chosen by `auto` (on a GPU), a failure at
    start falls back to dynamic caches."""

    def broken(*args: object) -> None:
        raise RuntimeError("this transformers version calls the cache differently")

    monkeypatch.setattr("experts.fusion.expert.first_steps", broken)
    strict = fusion(models, opened, engine="static", context_tokens=256)
    with pytest.raises(ExpertUnavailable, match="static engine failed: this transformers"):
        await strict.start()
    chosen = LoadedFusion.member_set

    def static_for_auto(self: LoadedFusion, engine: str, *rest: Any) -> MemberSet:
        return chosen(self, "static" if engine == "auto" else engine, *rest)

    monkeypatch.setattr(LoadedFusion, "member_set", static_for_auto)
    relaxed = fusion(models, opened, context_tokens=256)
    dynamic = fusion(models, opened, engine="dynamic")
    with caplog.at_level(logging.WARNING, logger="experts.fusion.expert"):
        assert await relaxed.complete(HELLO) == await dynamic.complete(HELLO)
    assert "failed its first steps; using dynamic caches" in caplog.text


async def test_extra_appended_ids_are_allowed(
    models: dict[str, Path], opened: list[Expert]
) -> None:
    expert = fusion(models, opened, experts=[{"name": "tiny", "model": str(models["appended"])}])
    assert (await expert.complete(HELLO)).usage is not None


# -- refusals --------------------------------------------------------------------------------


async def test_tokenizers_that_differ_are_refused_at_start(
    models: dict[str, Path], opened: list[Expert]
) -> None:
    expert = fusion(models, opened, experts=[{"name": "odd", "model": str(models["x"])}])
    with pytest.raises(ExpertUnavailable, match=r"tokenizers differ: .*expert 'odd'") as caught:
        await expert.start()
    assert caught.value.expert == "fused"
    assert "fused" not in caught.value.message, "the gateway names the expert"


async def test_a_missing_model_is_unavailable(
    models: dict[str, Path], opened: list[Expert]
) -> None:
    expert = fusion(models, opened, small_base=str(models["a"].parent / "absent"))
    with pytest.raises(ExpertUnavailable, match="does not exist"):
        await expert.start()
    gguf = fusion(models, opened, large=str(models["a"].parent / "absent.gguf"))
    with pytest.raises(ExpertUnavailable, match="GGUF file"):
        await gguf.start()


async def test_requests_it_cannot_take_are_rejected(
    models: dict[str, Path], opened: list[Expert]
) -> None:
    expert = fusion(models, opened, context_tokens=40)
    with pytest.raises(ExpertRejected, match="max_tokens must be at least 1"):
        await expert.complete(ask(max_tokens=0))
    with pytest.raises(ExpertRejected, match="the context holds 40"):
        await expert.complete(ask("word " * 40))
    with pytest.raises(ExpertRejected, match="top_p"):
        await expert.complete(ask(temperature=1.0, top_p=1.5))
    with pytest.raises(ExpertRejected, match="no messages"):
        await expert.complete(ExpertRequest(messages=()))


async def test_a_timeout_is_reported_and_the_row_released(
    models: dict[str, Path], opened: list[Expert]
) -> None:
    expert = fusion(models, opened, max_tokens=3000, context_tokens=4096, timeout_s=1e-6)
    await expert.start()  # loading is not part of a request's time
    with pytest.raises(ExpertTimeout, match="no answer within"):
        await expert.complete(HELLO)
    assert (await expert.health()).ok


async def test_closing_the_expert_mid_answer_fails_the_stream(
    models: dict[str, Path], opened: list[Expert]
) -> None:
    expert = fusion(models, opened, max_tokens=3000, context_tokens=4096)
    stream = expert.stream(HELLO)
    await anext(stream)
    await expert.aclose()
    with pytest.raises(ExpertUnavailable, match="closed during generation"):
        async for _ in stream:
            pass


async def test_closing_a_stream_early_frees_its_row(
    models: dict[str, Path], opened: list[Expert]
) -> None:
    expert = fusion(models, opened, max_tokens=3000, context_tokens=4096, max_batch=1)
    stream = expert.stream(HELLO)
    await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    result = await asyncio.wait_for(expert.complete(ask(max_tokens=2)), timeout=60)
    assert result.finish_reason == "length"


# -- config and registry ------------------------------------------------------------------


def test_the_registry_builds_a_fusion_expert(models: dict[str, Path], tmp_path: Path) -> None:
    parsed = TypeAdapter(ExpertSpec).validate_python(spec(models).model_dump())
    assert isinstance(parsed, FusionSpec)
    assert isinstance(build_expert(parsed, BuildContext(cache_dir=tmp_path)), FusionExpert)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"alpha": 0.5}, "alpha is used only by solver 'static'"),
        ({"solver": "grid", "alpha_max": 1.25}, "alpha_max must be a multiple of 0.1"),
        ({"solver": "newton"}, "Input should be 'bracketed', 'grid' or 'static'"),
        ({"experts": []}, "at least 1 item"),
        (
            {"experts": [{"name": "t", "model": "m"}, {"name": "t", "model": "n"}]},
            "repeated: t",
        ),
        ({"experts": [{"name": "t", "model": "m", "weight": 2}]}, "Extra inputs"),
    ],
)
def test_the_spec_refuses_what_cannot_work(
    models: dict[str, Path], overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        spec(models, **overrides)
