"""Dynamic logit fusion (Fan et al., 2024): small task experts steer a large model.

`FusionExpert` is the `fusion` expert kind. Underneath: `objective` (the KL quantities in
closed form), `solvers` (grid, bracketed, static), `vocab` (one shared vocabulary),
`members` (models behind one step interface), `decoder` (continuous batching).
"""

from __future__ import annotations

from experts.fusion.expert import FusionExpert

__all__ = ["FusionExpert"]
