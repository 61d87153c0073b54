"""Fakes that implement our own protocols (never mocks of third-party libraries)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence

import numpy as np

from experts.base import (
    Delta,
    ExpertError,
    ExpertRequest,
    ExpertResult,
    Health,
    Usage,
    drain,
)
from gateway.routing.embedder import EmbedderUnavailable, Vectors, normalise


class KeywordEmbedder:
    """Embeds text as counts of known keywords, so tests can set cosine scores exactly.

    Each keyword is one axis; a text with none of them lands on its own "other" axis.
    """

    def __init__(self, keywords: Sequence[str]) -> None:
        self._axes = {word: i for i, word in enumerate(keywords)}
        self.calls: list[list[str]] = []
        self.started = False
        # While set, every call fails as an unavailable embedder would.
        self.failing = False

    @property
    def dim(self) -> int:
        return len(self._axes) + 1

    async def start(self) -> None:
        self.started = True

    async def aclose(self) -> None:
        self.started = False

    async def embed(self, texts: Sequence[str]) -> Vectors:
        self.calls.append(list(texts))
        if self.failing:
            raise EmbedderUnavailable("embedding failed: scripted")
        rows = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z]+", text.lower()):
                if word in self._axes:
                    rows[row, self._axes[word]] += 1.0
            if not rows[row].any():
                rows[row, -1] = 1.0
        return normalise(rows)


class ScriptedExpert:
    """An expert that answers with a fixed script, or fails as told; records its requests."""

    def __init__(
        self,
        name: str,
        pieces: Sequence[str] = ("ok",),
        *,
        kind: str = "scripted",
        error: ExpertError | None = None,
        fail_after: int | None = None,
        delay_s: float = 0.0,
        healthy: bool = True,
    ) -> None:
        self._name = name
        # What its health probe says (a server can answer probes yet fail requests).
        self.healthy = healthy
        self._kind = kind
        self.pieces = list(pieces)
        self.error = error
        self.fail_after = fail_after
        self.delay_s = delay_s
        self.requests: list[ExpertRequest] = []
        self.closed_streams = 0
        self.started = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def kind(self) -> str:
        return self._kind

    async def start(self) -> None:
        self.started = True

    async def complete(self, request: ExpertRequest) -> ExpertResult:
        return await drain(self.stream(request))

    async def stream(self, request: ExpertRequest) -> AsyncIterator[Delta]:
        self.requests.append(request)
        try:
            if self.error is not None and self.fail_after is None:
                raise self.error
            for i, piece in enumerate(self.pieces):
                if self.fail_after is not None and i == self.fail_after and self.error:
                    raise self.error
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                yield Delta(content=piece)
            n = len(self.pieces)
            yield Delta(finish_reason="stop", usage=Usage(3, n, 3 + n))
        finally:
            self.closed_streams += 1

    async def health(self) -> Health:
        return Health(ok=self.healthy, detail="scripted")

    async def aclose(self) -> None:
        pass
