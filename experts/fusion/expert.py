"""The `fusion` expert kind: dynamic logit fusion served like every other expert.

One decoder thread per expert decodes every concurrent request together (continuous
batching); each request's text reaches the event loop through its own asyncio queue. A
closed stream, a timeout or `aclose` cancels the row, which leaves the batch at the next
step. The final delta carries the weight summary: in `usage.details["fusion"]` and in
`meta["fusion"]` (for the route object).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import torch

from experts.base import (
    Delta,
    ExpertRejected,
    ExpertRequest,
    ExpertResult,
    ExpertUnavailable,
    Health,
    JSONValue,
    Usage,
    drain,
)
from experts.fusion.decoder import BatchDecoder, FusionCombiner
from experts.fusion.loading import LoadedFusion, load_fusion
from experts.fusion.rows import (
    AlphaTally,
    Event,
    EventSink,
    Failed,
    Finished,
    Row,
    RowPlan,
    TextEvent,
)
from experts.fusion.solvers import build_solver
from experts.fusion.static import DynamicMembers, MemberSet, StaticMembers, first_steps
from experts.prompting import generation_failure, plan_prompt, within
from experts.specs import FusionSpec
from experts.weights import ModelUnavailable

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Engine:
    loaded: LoadedFusion
    decoder: BatchDecoder
    thread: threading.Thread
    stopping: threading.Event


@dataclass(frozen=True, slots=True)
class _Prepared:
    loaded: LoadedFusion
    combiner: FusionCombiner
    members: MemberSet


class FusionExpert:
    """Small task experts blended into a large model, token by token (kind `fusion`)."""

    def __init__(self, spec: FusionSpec, cache_dir: Path) -> None:
        self._spec = spec
        self._cache_dir = cache_dir
        self._engine: _Engine | None = None
        self._start_lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def kind(self) -> str:
        return "fusion"

    async def start(self) -> None:
        await self._started()

    async def complete(self, request: ExpertRequest) -> ExpertResult:
        return await drain(self.stream(request))

    async def stream(self, request: ExpertRequest) -> AsyncIterator[Delta]:
        engine = await self._started()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._spec.timeout_s
        plan = await anyio.to_thread.run_sync(self._plan, engine.loaded, request)
        events: asyncio.Queue[Event] = asyncio.Queue()
        row = Row(
            plan,
            _bridge(loop, events),
            detokenize=lambda ids: engine.loaded.tokenizer.decode(ids, skip_special_tokens=True),
            eos_ids=engine.loaded.eos_ids,
            experts=len(self._spec.experts),
            device=engine.loaded.device,
        )
        engine.decoder.submit(row)
        try:
            while True:
                event = await within(self.name, self._spec.timeout_s, deadline, events.get())
                if isinstance(event, TextEvent):
                    yield Delta(content=event.text)
                    continue
                yield self._final(event, plan, request.request_id)
                return
        finally:
            row.cancel.set()

    async def health(self) -> Health:
        engine = self._engine
        if engine is None:
            return Health(ok=False, detail="not started")
        if not engine.thread.is_alive():
            return Health(ok=False, detail="the decoder thread stopped")
        return Health(ok=True, detail=engine.loaded.describe())

    async def aclose(self) -> None:
        """Stop the decoder (running requests fail as closed) and release the models."""
        async with self._start_lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.stopping.set()
            engine.decoder.wake()
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(engine.thread.join)

    # -- internals -----------------------------------------------------------------------

    async def _started(self) -> _Engine:
        async with self._start_lock:
            if self._engine is None:
                prepared = await anyio.to_thread.run_sync(self._load)
                self._engine = self._launch(prepared)
                loaded = prepared.loaded
                extra = {"expert": self.name, "action": "load", "detail": loaded.describe()}
                logger.info("fusion expert ready", extra=extra)
            return self._engine

    def _load(self) -> _Prepared:
        """Models, combiner and member set, in a worker thread (loading and the start-up
        check take seconds)."""
        spec = self._spec
        try:
            loaded = load_fusion(spec, self._cache_dir)
        except (ModelUnavailable, ValueError) as exc:  # VocabMismatch is a ValueError
            raise ExpertUnavailable(self.name, str(exc)) from exc
        solver = build_solver(spec.solver, spec.alpha, spec.alpha_max)
        vocab = loaded.vocab.to(loaded.device)
        combiner = FusionCombiner(solver, vocab, experts=len(spec.experts))
        # A row holds at most context_tokens (prompt and answer); one more column of room.
        members = loaded.member_set(
            spec.engine, spec.max_batch, spec.context_tokens + 1, spec.compile
        )
        if isinstance(members, StaticMembers):
            members = self._checked(loaded, combiner, members)
        return _Prepared(loaded, combiner, members)

    def _checked(
        self, loaded: LoadedFusion, combiner: FusionCombiner, members: StaticMembers
    ) -> MemberSet:
        """The static engine after a few steps of a test row; if those fail, the dynamic
        engine when the engine was `auto` (logged), else the expert is unavailable."""
        try:
            with torch.inference_mode():
                first_steps(members, combiner, combiner.experts)
        except Exception as exc:  # whatever the models or the device raise
            if self._spec.engine == "static":
                raise ExpertUnavailable(self.name, f"static engine failed: {exc}") from exc
            logger.warning(
                "fusion: the static engine failed its first steps; using dynamic caches",
                extra={"expert": self.name, "action": "load", "error": str(exc)},
            )
            return DynamicMembers.of(loaded.modules)
        return members

    def _launch(self, prepared: _Prepared) -> _Engine:
        spec, loaded = self._spec, prepared.loaded
        combiner, members = prepared.combiner, prepared.members
        decoder = BatchDecoder(members, combiner, max_batch=spec.max_batch)
        stopping = threading.Event()
        thread = threading.Thread(
            target=decoder.serve, args=(stopping,), name=f"taskgate-fusion-{self.name}", daemon=True
        )
        thread.start()
        return _Engine(loaded, decoder, thread, stopping)

    def _final(self, event: Event, plan: RowPlan, request_id: str) -> Delta:
        if isinstance(event, Finished):
            summary = self.summary(event.tally)
            prompt, completion = len(plan.prompt_ids), event.completion_tokens
            usage = Usage(prompt, completion, prompt + completion, details={"fusion": summary})
            extra = {"request_id": request_id, "expert": self.name, "action": "generate"}
            logger.info("generated", extra={**extra, "finish_reason": event.reason, **summary})
            meta: dict[str, JSONValue] = {"fusion": summary}
            return Delta(content=event.text, finish_reason=event.reason, usage=usage, meta=meta)
        error = event.error if isinstance(event, Failed) else None
        raise generation_failure(self.name, error) from error

    def summary(self, tally: AlphaTally) -> dict[str, JSONValue]:
        """The weights of one answer: their mean per step, and who was active how often."""
        names = [member.name for member in self._spec.experts]
        active: dict[str, JSONValue] = dict(zip(names, tally.active, strict=True))
        return {
            "solver": self._spec.solver,
            "steps": tally.steps,
            "alpha_mean": round(tally.mean, 4),
            "active_steps": active,
            "inactive_steps": tally.inactive,
        }

    def _plan(self, loaded: LoadedFusion, request: ExpertRequest) -> RowPlan:
        """Template, truncate and tokenize the request (blocking: runs in a worker thread)."""
        plan = plan_prompt(self.name, loaded.tokenizer, request, self._spec)
        if not loaded.vocab.allows(plan.prompt_ids):
            raise ExpertRejected(self.name, "the prompt uses tokens not every model knows")
        return plan


def _bridge(loop: asyncio.AbstractEventLoop, events: asyncio.Queue[Event]) -> EventSink:
    def emit(event: Event) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody listens any more
            loop.call_soon_threadsafe(events.put_nowait, event)

    return emit
