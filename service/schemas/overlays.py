"""PNG overlays of an explanation's maps (``?overlays=png``); :mod:`service.explanation_overlays` draws them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from service.explanation_overlays import ExplanationOverlays
from service.overlays import COLORMAP, MAX_ALPHA
from service.schemas.annotations import UnitIndex


class UnitOverlay(BaseModel):
    """One returned unit's activation map drawn over the image."""

    unit_id: UnitIndex
    png: str = Field(description="Base64 PNG (RGB), `Overlays.shape` pixels.")


class Overlays(BaseModel):
    """The CAM and each returned unit's map upsampled onto a downscaled copy of the image (`?overlays=png`).

    Each map is upsampled bilinearly with its `grid_to_image` mapping,
    normalised over its own [min, max] to n in [0, 1], coloured with the jet
    colour map and blended over the grayscale image with opacity `max_alpha * n`.
    """

    media_type: Literal["image/png"] = "image/png"
    shape: tuple[int, int] = Field(
        description="(height, width) of every overlay: the image scaled to a longer side of at most overlay_max_side."
    )
    colormap: Literal["jet"] = COLORMAP
    max_alpha: float = Field(default=MAX_ALPHA, description="Opacity of the colour where a map peaks.")
    cam: str = Field(description="Base64 PNG of the CAM over the image.")
    units: list[UnitOverlay] = Field(description="One per returned unit, in the order of `units`.")

    @classmethod
    def from_drawn(cls, drawn: ExplanationOverlays) -> Overlays:
        return cls(
            shape=drawn.shape,
            cam=drawn.cam,
            units=[UnitOverlay(unit_id=unit_id, png=png) for unit_id, png in drawn.units],
        )
