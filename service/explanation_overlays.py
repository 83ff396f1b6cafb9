"""The PNG overlays of one explanation: the CAM and each returned unit's map, drawn on one canvas.

Drawing lives here rather than in the wire models so the schemas only convert
values; :class:`service.schemas.Overlays` carries the result.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.explainer import ExplanationResult
from service.overlays import Canvas


@dataclass(frozen=True)
class ExplanationOverlays:
    """Base64 PNGs of the CAM and of each unit's map (by unit id, in the result's order), all ``shape`` pixels."""

    shape: tuple[int, int]
    cam: str
    units: tuple[tuple[int, str], ...]


def draw_overlays(result: ExplanationResult, *, max_side: int) -> ExplanationOverlays:
    """Every map of ``result`` over the upload scaled to a longer side of at most ``max_side`` pixels."""
    canvas = Canvas.for_image(result.pixels, result.mapping, max_side=max_side)
    return ExplanationOverlays(
        shape=canvas.shape,
        cam=canvas.overlay_png(result.cam),
        units=tuple((u.unit_id, canvas.overlay_png(u.activation_map)) for u in result.units),
    )
