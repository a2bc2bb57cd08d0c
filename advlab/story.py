"""Old home of the demo's stages, kept for one release: use :mod:`advlab.experiments.story`."""

from __future__ import annotations

from advlab.experiments.story import (  # noqa: F401
    gallery_stage,
    minimal_norm_stage,
    spatial_stage,
    universal_stage,
)

__all__ = ["gallery_stage", "minimal_norm_stage", "spatial_stage", "universal_stage"]
