"""An in-process transformers causal LM: the embedded default LLM.

Each request is decoded by its own thread with a small KV-cached loop (one forward per
token, nanoGPT style); text reaches the event loop through an asyncio queue. The loop
checks a cancellation event every step, so a closed stream, a timeout or `aclose` stops it
promptly. One generation runs at a time per model; further requests queue.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias, cast

import anyio
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from experts.base import (
    Delta,
    ExpertRequest,
    ExpertResult,
    ExpertUnavailable,
    Health,
    Usage,
    drain,
)
from experts.decoding import IncrementalText, StopScanner
from experts.prompting import (
    DTYPES,
    ChatTokenizer,
    PromptPlan,
    eos_ids,
    generation_failure,
    plan_prompt,
    within,
)
from experts.specs import LocalSpec
from experts.weights import ModelUnavailable, resolve_model

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Loaded:
    tokenizer: ChatTokenizer
    model: torch.nn.Module
    device: torch.device
    dtype: torch.dtype
    eos_ids: frozenset[int]
    # The forward keyword of the KV cache: `cache` in transformers 5, else `past_key_values`.
    cache_keyword: str
    keeps_last_logits: bool  # forward accepts `logits_to_keep` (skip a [prompt, vocab] matrix)

    def describe(self) -> str:
        return f"loaded on {self.device.type}/{str(self.dtype).removeprefix('torch.')}"


@dataclass(frozen=True, slots=True)
class _Text:
    text: str


@dataclass(frozen=True, slots=True)
class _Finished:
    reason: str
    text: str
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class _Failed:
    error: Exception | None  # None: cancelled


_Event: TypeAlias = _Text | _Finished | _Failed


class LocalExpert:
    """A transformers causal LM decoded in process (kind `local`)."""

    def __init__(self, spec: LocalSpec, cache_dir: Path) -> None:
        self._spec = spec
        self._cache_dir = cache_dir
        self._loaded: _Loaded | None = None
        self._start_lock = asyncio.Lock()
        self._turn = asyncio.Lock()  # one generation at a time
        self._running: set[_Decoder] = set()

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def kind(self) -> str:
        return "local"

    async def start(self) -> None:
        await self._started()

    async def complete(self, request: ExpertRequest) -> ExpertResult:
        return await drain(self.stream(request))

    async def stream(self, request: ExpertRequest) -> AsyncIterator[Delta]:
        loaded = await self._started()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._spec.timeout_s
        plan = await anyio.to_thread.run_sync(self._plan, loaded, request)
        await within(self.name, self._spec.timeout_s, deadline, self._turn.acquire())
        try:
            decoder = _Decoder(loaded, plan, loop, thread_name=f"taskgate-local-{self.name}")
            self._running.add(decoder)
            decoder.start()
            try:
                while True:
                    event = await within(
                        self.name, self._spec.timeout_s, deadline, decoder.events.get()
                    )
                    if isinstance(event, _Text):
                        yield Delta(content=event.text)
                        continue
                    yield self._final(event, plan, request.request_id)
                    return
            finally:
                self._running.discard(decoder)
                await decoder.stop()
        finally:
            self._turn.release()

    async def health(self) -> Health:
        loaded = self._loaded
        if loaded is None:
            return Health(ok=False, detail="not started")
        return Health(ok=True, detail=loaded.describe())

    async def aclose(self) -> None:
        """Stop running generations and release the model (a later use loads it again)."""
        for decoder in self._running:
            decoder.cancel.set()
        async with self._start_lock:
            self._loaded = None

    # -- internals -----------------------------------------------------------------------

    async def _started(self) -> _Loaded:
        async with self._start_lock:
            if self._loaded is None:
                self._loaded = await anyio.to_thread.run_sync(self._load)
                detail = self._loaded.describe()
                extra = {"expert": self.name, "action": "load", "detail": detail}
                logger.info("local expert ready", extra=extra)
            return self._loaded

    def _final(self, event: _Event, plan: PromptPlan, request_id: str) -> Delta:
        if isinstance(event, _Finished):
            prompt = len(plan.prompt_ids)
            usage = Usage(prompt, event.completion_tokens, prompt + event.completion_tokens)
            extra = {"request_id": request_id, "expert": self.name, "action": "generate"}
            logger.info("generated", extra={**extra, "finish_reason": event.reason})
            return Delta(content=event.text, finish_reason=event.reason, usage=usage)
        error = event.error if isinstance(event, _Failed) else None
        raise generation_failure(self.name, error) from error

    def _load(self) -> _Loaded:
        """Resolve and load tokenizer and model (blocking: runs in a worker thread)."""
        spec = self._spec
        try:
            path = resolve_model(spec.model, self._cache_dir)
        except ModelUnavailable as exc:
            raise ExpertUnavailable(self.name, str(exc)) from exc
        cuda = torch.cuda.is_available()
        if spec.device == "cuda" and not cuda:
            raise ExpertUnavailable(self.name, "device 'cuda' requested but CUDA is unavailable")
        device = torch.device("cuda" if cuda and spec.device != "cpu" else "cpu")
        dtype = DTYPES.get(spec.dtype, torch.bfloat16 if device.type == "cuda" else torch.float32)
        if spec.threads is not None:
            torch.set_num_threads(spec.threads)
        try:
            pretrained = AutoTokenizer.from_pretrained(path, local_files_only=True)
            tokenizer = cast(ChatTokenizer, pretrained)
            loaded = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
            model = cast(torch.nn.Module, loaded).to(device).eval()
        except Exception as exc:  # transformers/torch raise many kinds; all mean "cannot load"
            raise ExpertUnavailable(self.name, f"cannot load {spec.model}: {exc}") from exc
        if not tokenizer.chat_template:
            raise ExpertUnavailable(self.name, f"{spec.model} has no chat template")
        parameters = inspect.signature(model.forward).parameters
        cache_keyword = "cache" if "cache" in parameters else "past_key_values"
        eos, keeps_last = eos_ids(tokenizer, model), "logits_to_keep" in parameters
        return _Loaded(tokenizer, model, device, dtype, eos, cache_keyword, keeps_last)

    def _plan(self, loaded: _Loaded, request: ExpertRequest) -> PromptPlan:
        """Template, truncate and tokenize the request (blocking: runs in a worker thread)."""
        return plan_prompt(self.name, loaded.tokenizer, request, self._spec)


class _Decoder:
    """One generation in its own thread; its events reach the event loop through a queue."""

    def __init__(
        self, loaded: _Loaded, plan: PromptPlan, loop: asyncio.AbstractEventLoop, thread_name: str
    ) -> None:
        self.events: asyncio.Queue[_Event] = asyncio.Queue()
        self.cancel = threading.Event()
        self._loaded, self._plan, self._loop = loaded, plan, loop
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    async def stop(self) -> None:
        """Cancel the generation and wait for its thread, even while being cancelled."""
        self.cancel.set()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._thread.join)

    def _emit(self, event: _Event) -> None:
        try:
            self._loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody listens any more
            self.cancel.set()

    def _run(self) -> None:
        try:
            event = self._decode()
        except Exception as exc:  # reported to the consumer, which translates it
            event = _Failed(exc)
        if isinstance(event, _Failed) and event.error is None:
            logger.debug("generation cancelled", extra={"action": "cancel"})
        self._emit(event)

    def _decode(self) -> _Event:
        plan, loaded = self._plan, self._loaded
        ids, generated = list(plan.prompt_ids), list[int]()
        text = IncrementalText(
            lambda tokens: loaded.tokenizer.decode(tokens, skip_special_tokens=True)
        )
        scanner, generator = StopScanner(plan.stop), self._generator()
        step_input = torch.tensor([ids], device=loaded.device)
        options: dict[str, object] = {"use_cache": True}
        options[loaded.cache_keyword] = DynamicCache(config=getattr(loaded.model, "config", None))
        if loaded.keeps_last_logits:
            options["logits_to_keep"] = 1
        with torch.inference_mode():
            while len(generated) < plan.max_new_tokens:
                if self.cancel.is_set():
                    return _Failed(None)
                output = loaded.model(input_ids=step_input, **options)
                token = self._choose(output.logits[:, -1, :], ids, generator)
                if token in loaded.eos_ids:
                    return _Finished("stop", scanner.rest(text.text), len(generated))
                ids.append(token)
                generated.append(token)
                piece, stopped = scanner.feed(text.add(token))
                if stopped:
                    return _Finished("stop", piece, len(generated))
                if piece:
                    self._emit(_Text(piece))
                step_input = torch.tensor([[token]], device=loaded.device)
        return _Finished("length", scanner.rest(text.text), len(generated))

    def _generator(self) -> torch.Generator:
        generator = torch.Generator(device=self._loaded.device)
        if self._plan.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self._plan.seed)
        return generator

    def _choose(self, logits: torch.Tensor, ids: list[int], generator: torch.Generator) -> int:
        scores = logits.float()
        if self._plan.transforms:
            history = torch.tensor([ids], device=scores.device)
            for transform in self._plan.transforms:
                scores = transform(history, scores)
        if self._plan.greedy:
            return int(scores.argmax(dim=-1).item())
        probs = torch.softmax(scores, dim=-1)
        return int(torch.multinomial(probs, 1, generator=generator).item())
