"""Building a router from its settings: embed the exemplars, fit the head, assemble.

`RouterBuilder.build` is what start-up and every rebuild (reload) call. It never blocks
the event loop: exemplars are embedded in small chunks through the shared embedder (so
requests interleave with them), and the head is fitted in a worker thread. The caller
keeps serving with its current router and swaps in the returned one when it is ready.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import anyio.to_thread
import numpy as np

from gateway.config import RouterConfig
from gateway.routing.calibrate import Target
from gateway.routing.clarify import ExpertProfile
from gateway.routing.embedder import Embedder, IdentifiedEmbedder, Vectors
from gateway.routing.fitcache import ArrayCache, EmbeddingCache
from gateway.routing.fitting import (
    Exemplars,
    FitReport,
    FittedHead,
    HeadOptions,
    fit_head,
    head_wanted,
)
from gateway.routing.router import ExemplarIndex, Router, RouterPolicy

logger = logging.getLogger(__name__)

# Texts per embedder call while embedding exemplars: requests get their turn in between.
EMBED_CHUNK = 64


class ExpertSource(Protocol):
    """What routing needs of an expert's configuration."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def ask(self) -> str | None: ...

    @property
    def examples(self) -> Sequence[str]: ...


@dataclass(frozen=True, slots=True)
class RoutingSpec:
    policy: RouterPolicy
    profiles: Mapping[str, ExpertProfile]
    examples: Mapping[str, Sequence[str]]
    # Out-of-scope requests: the head's "none" class and calibration's negatives.
    negatives: Sequence[str] = ()
    use_descriptions: bool = True
    head: HeadOptions = field(default_factory=HeadOptions)
    # Labelled held-out requests, (text, expert or None for out of scope), used for
    # calibration instead of folds of the exemplars (`taskgate eval --val`).
    validation: Sequence[tuple[str, str | None]] = ()


def routing_spec(config: RouterConfig, experts: Sequence[ExpertSource]) -> RoutingSpec:
    """The routing settings of a config (its `router` section and its experts)."""
    policy = RouterPolicy(
        threshold=config.threshold,
        margin=config.margin,
        on_no_match=config.on_no_match,
        fallback=config.fallback,
        aggregate=config.aggregate,
        top_k=config.top_k,
        max_candidates=config.max_candidates,
    )
    target = None
    if config.target is not None:
        kind, value = config.target.chosen()
        target = Target(kind, value)
    head = HeadOptions(
        mode=config.head.mode,
        min_examples=config.head.min_examples,
        c=config.head.c,
        folds=config.head.folds,
        target=target,
        threshold=config.head.threshold,
        margin=config.head.margin,
        aggregate=config.aggregate,
        top_k=config.top_k,
    )
    return RoutingSpec(
        policy=policy,
        profiles={e.name: ExpertProfile(e.name, e.description, e.ask) for e in experts},
        examples={e.name: list(e.examples) for e in experts},
        negatives=list(config.negative_examples),
        use_descriptions=config.use_descriptions,
        head=head,
    )


class RouterBuilder:
    """Builds routers with one embedder; caches fits (and embeddings) under `cache_dir`."""

    def __init__(self, embedder: Embedder, cache_dir: Path | None = None) -> None:
        self._embedder = embedder
        self._heads = ArrayCache(cache_dir / "heads") if cache_dir is not None else None
        self._vectors = EmbeddingCache(cache_dir / "embeddings") if cache_dir is not None else None
        # The report of the last head fitted (or loaded from the cache); None: no head.
        self.last_fit: FitReport | None = None

    async def build(self, spec: RoutingSpec) -> Router:
        names = list(spec.profiles)
        texts = {name: exemplar_texts(spec, name) for name in names}
        flat = [text for name in names for text in texts[name]]
        profile_texts = [spec.profiles[name].text for name in names]
        vectors = await self.embed(flat + profile_texts)
        grouped: dict[str, Vectors] = {}
        start = 0
        for name in names:
            grouped[name] = vectors[start : start + len(texts[name])]
            start += len(texts[name])
        profile_vectors = {name: vectors[start + i] for i, name in enumerate(names)}
        index = ExemplarIndex(grouped, self._embedder.dim, texts)
        counts = {name: len(spec.examples.get(name, ())) for name in names}
        self.last_fit = None
        if not head_wanted(spec.head, counts):
            return Router(index, spec.policy, spec.profiles, profile_vectors)
        fitted = await self._fit(spec, names, grouped)
        self.last_fit = fitted.report
        policy = RouterPolicy(
            threshold=fitted.threshold,
            margin=fitted.margin,
            on_no_match=spec.policy.on_no_match,
            fallback=spec.policy.fallback,
            aggregate=spec.policy.aggregate,
            top_k=spec.policy.top_k,
            max_candidates=spec.policy.max_candidates,
            prefer_margin=max(fitted.margin, 0.25),
        )
        logger.info(
            "routing head ready",
            extra={
                "action": "fit",
                "score": round(fitted.threshold, 4),
                "margin": round(fitted.margin, 4),
                "cached": fitted.report.cached,
                "fit_ms": round(fitted.report.seconds * 1000),
            },
        )
        return Router(index, policy, spec.profiles, profile_vectors, head=fitted.head)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embeddings of `texts`, from the disk cache when the embedder has an identity."""
        embedder = self._embedder
        identity = embedder.identity if isinstance(embedder, IdentifiedEmbedder) else None
        if identity is not None and self._vectors is not None:
            cached = await anyio.to_thread.run_sync(self._vectors.load, identity, texts)
            if cached is not None:
                return cached
        parts = [
            await self._embedder.embed(texts[i : i + EMBED_CHUNK])
            for i in range(0, len(texts), EMBED_CHUNK)
        ]
        vectors = np.concatenate(parts) if parts else np.zeros((0, self._embedder.dim), np.float32)
        if identity is not None and self._vectors is not None:
            await anyio.to_thread.run_sync(self._vectors.store, identity, texts, vectors)
        return vectors

    async def _fit(
        self, spec: RoutingSpec, names: list[str], grouped: Mapping[str, Vectors]
    ) -> FittedHead:
        negatives = await self.embed(list(spec.negatives))
        parts = [grouped[name] for name in names] + [negatives]
        targets = np.concatenate(
            [np.full(len(grouped[name]), i, np.int64) for i, name in enumerate(names)]
            + [np.full(len(negatives), -1, np.int64)]
        )
        exemplars = Exemplars(np.concatenate(parts), targets, tuple(names))
        validation = None
        if spec.validation:
            vectors = await self.embed([text for text, _ in spec.validation])
            labels = np.array(
                [names.index(e) if e in names else -1 for _, e in spec.validation], np.int64
            )
            validation = Exemplars(vectors, labels, tuple(names))
        return await anyio.to_thread.run_sync(
            fit_head, exemplars, spec.head, validation, self._heads
        )


def exemplar_texts(spec: RoutingSpec, name: str) -> list[str]:
    """An expert's examples, and its description when `use_descriptions` (or no examples)."""
    own = list(spec.examples.get(name, ()))
    if spec.use_descriptions or not own:
        own.append(spec.profiles[name].description)
    return own
