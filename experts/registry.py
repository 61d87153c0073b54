"""Builds experts from their specs by `kind`, and owns their lifetime as one set."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from experts.base import Expert, Health
from experts.specs import ExpertSpec, FusionSpec, HttpToolSpec, LocalSpec, OpenAISpec, ToolSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What building an expert may need besides its spec."""

    # Where converted model weights are cached (e.g. the SmolLM2 safetensors directory).
    cache_dir: Path


def build_expert(spec: ExpertSpec, context: BuildContext) -> Expert:
    """Construct (but do not start) the expert a spec describes. Cheap: no I/O."""
    if isinstance(spec, OpenAISpec):
        from experts.openai_compat import OpenAIExpert

        return OpenAIExpert(spec)
    if isinstance(spec, ToolSpec | HttpToolSpec):
        from experts.tools import ToolExpert

        return ToolExpert(spec)
    if isinstance(spec, LocalSpec):
        from experts.local import LocalExpert

        return LocalExpert(spec, cache_dir=context.cache_dir)
    if isinstance(spec, FusionSpec):
        from experts.fusion import FusionExpert

        return FusionExpert(spec, cache_dir=context.cache_dir)
    raise TypeError(f"unknown expert spec {type(spec).__name__}")  # pragma: no cover


class ExpertSet(Mapping[str, Expert]):
    """The experts of one config, by name, started and closed together."""

    def __init__(self, experts: Sequence[Expert]) -> None:
        self._experts = {expert.name: expert for expert in experts}
        if len(self._experts) != len(experts):
            raise ValueError("expert names must be unique")

    @classmethod
    def from_specs(cls, specs: Sequence[ExpertSpec], context: BuildContext) -> ExpertSet:
        return cls([build_expert(spec, context) for spec in specs])

    def __getitem__(self, name: str) -> Expert:
        return self._experts[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._experts)

    def __len__(self) -> int:
        return len(self._experts)

    async def start(self) -> None:
        """Start every expert, one after another; the first failure propagates.

        Not concurrently: transformers' `from_pretrained` patches process-wide functions
        while it loads, and two loads at once can leave a tied-embedding model (SmolLM2)
        with a missing `lm_head`.
        """
        for expert in self._experts.values():
            await expert.start()

    async def health(self) -> dict[str, Health]:
        results = await asyncio.gather(
            *(expert.health() for expert in self._experts.values()), return_exceptions=True
        )
        report: dict[str, Health] = {}
        for name, result in zip(self._experts, results, strict=True):
            if isinstance(result, BaseException):
                report[name] = Health(ok=False, detail=f"{type(result).__name__}: {result}")
            else:
                report[name] = result
        return report

    async def aclose(self) -> None:
        for expert in self._experts.values():
            try:
                await expert.aclose()
            except Exception:  # closing must reach every expert
                logger.exception("closing expert failed", extra={"expert": expert.name})
