"""Dynamic logit fusion (Fan et al., 2024): small task experts steer a large model.

`FusionExpert` is the `fusion` expert kind. Underneath: `objective` (the KL quantities in
closed form), `solvers` (grid, bracketed, static), `vocab` (one shared vocabulary),
`members` (models behind one step interface), `static` (member sets: dynamic caches, or
static caches replayed as CUDA graphs), `decoder` (continuous batching).

`FusionExpert` is imported on first use: the decoder and its parts need only torch and
transformers, so a GPU machine with nothing else installed can run them (the benchmark).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from experts.fusion.expert import FusionExpert

__all__ = ["FusionExpert"]


def __getattr__(name: str) -> object:
    if name == "FusionExpert":
        from experts.fusion.expert import FusionExpert

        return FusionExpert
    raise AttributeError(name)
