"""A unit's top hold-out patches from the bundle, with the URLs that serve their PNGs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, Field


class PatchBox(BaseModel):
    """Where a patch lies in its source mammogram (pixels)."""

    top: int
    left: int
    side: int


class ContextBox(BaseModel):
    """Where to outline the patch on the downscaled context image (its pixels)."""

    top: float
    left: float
    height: float
    width: float


class VisualisedPatch(BaseModel):
    """One hold-out patch that activates the unit strongly, with the files that show it."""

    rank: int = Field(description="1 = the unit's strongest patch.")
    activation: float = Field(description="The unit's largest activation on the patch.")
    mask_fraction: float = Field(description="Share of the patch inside the unit's binarised map.")
    image_id: str = Field(description="The hold-out mammogram the patch was cut from, as the bundle's data named it.")
    box: PatchBox
    context_box: ContextBox
    patch: str = Field(description="URL of the patch PNG.")
    masked: str = Field(description="URL of the patch PNG with everything outside the unit's mask dimmed.")
    context: str = Field(description="URL of the downscaled source mammogram PNG; outline `context_box` on it.")


class UnitVisualisation(BaseModel):
    """A unit's top hold-out patches (Lu & Perer), masked by its binarised map, from the bundle."""

    unit_id: int
    threshold: float = Field(description="The threshold the masks were binarised at.")
    threshold_source: str = Field(description="`patches` (99th percentile over hold-out patches) or `ranking`.")
    thresholds: dict[str, float] = Field(description="Both candidate thresholds, by source.")
    classes: dict[str, dict[str, int]] = Field(description="Per class that ranks the unit, its `rank` and `count`.")
    patches: list[VisualisedPatch]

    @classmethod
    def from_entry(cls, unit_id: int, entry: Mapping[str, Any], *, url: Callable[[str], str]) -> UnitVisualisation:
        """From the unit's ``units/index.json`` entry; ``url`` turns a bundle path into the URL that serves it."""
        return cls(
            unit_id=unit_id,
            threshold=entry["threshold"],
            threshold_source=entry["threshold_source"],
            thresholds=entry["thresholds"],
            classes=entry["classes"],
            patches=[
                VisualisedPatch(
                    **{k: v for k, v in patch.items() if k not in ("patch", "masked", "context")},
                    patch=url(patch["patch"]),
                    masked=url(patch["masked"]),
                    context=url(patch["context"]),
                )
                for patch in entry["patches"]
            ],
        )
