"""A unit's top hold-out patches, from the bundle (ranked units) or rendered on demand (the others), with the URLs
that serve their PNGs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field

from service.units.patch_rendering import RenderedUnit


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
    """One hold-out patch that activates the unit strongly, with the files that show it (null without its image)."""

    rank: int = Field(description="1 = the unit's strongest patch.")
    activation: float = Field(description="The unit's largest activation on the patch, as the build measured it.")
    mask_fraction: float | None = Field(
        description="Share of the patch inside the unit's binarised map; null when its image is unavailable."
    )
    image_id: str = Field(description="The hold-out mammogram the patch was cut from, as the bundle's data named it.")
    box: PatchBox
    context_box: ContextBox | None
    patch: str | None = Field(description="URL of the patch PNG; null when its image is unavailable.")
    masked: str | None = Field(
        description="URL of the patch PNG with everything outside the unit's mask dimmed; null when unavailable."
    )
    context: str | None = Field(
        description="URL of the downscaled source mammogram PNG; outline `context_box` on it. Null when unavailable."
    )


class UnitVisualisation(BaseModel):
    """A unit's top hold-out patches (Lu & Perer), masked by its binarised map, from the bundle or drawn on demand."""

    unit_id: int
    threshold: float = Field(description="The threshold the masks were binarised at.")
    threshold_source: str = Field(description="`patches` (99th percentile over hold-out patches) or `ranking`.")
    thresholds: dict[str, float] = Field(description="Both candidate thresholds, by source.")
    classes: dict[str, dict[str, int]] = Field(description="Per class that ranks the unit, its `rank` and `count`.")
    patches: list[VisualisedPatch]
    source: Literal["bundle", "rendered"] = Field(
        description="`bundle`: a ranked unit's PNGs, stored in the bundle. `rendered`: a unit outside the ranked "
        "set, its patches listed by the bundle and drawn now from the hold-out images."
    )
    images_available: bool = Field(
        description="False when some patches' hold-out images cannot be read by the service: those patches come "
        "with image, box and activation only."
    )
    images_note: str | None = Field(description="Why images are unavailable, per image; null when all are there.")

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
            source="bundle",
            images_available=True,
            images_note=None,
        )

    @classmethod
    def from_rendered(cls, rendered: RenderedUnit, *, url: Callable[[int, str], str]) -> UnitVisualisation:
        """From an on-demand render; ``url(rank, kind)`` is the URL that serves one of its PNGs."""
        note = None
        if rendered.unavailable:
            reasons = "; ".join(f"{image}: {why}" for image, why in rendered.unavailable.items())
            note = (
                f"{len(rendered.unavailable)} hold-out image(s) unavailable to the service ({reasons}). Set "
                "DEEPMINER_HOLDOUT_IMAGES_DIR to the folder the bundle's manifest was in to see their patches."
            )
        return cls(
            unit_id=rendered.unit_id,
            threshold=rendered.threshold,
            threshold_source=rendered.threshold_source,
            thresholds=dict(rendered.thresholds),
            classes={},
            patches=[
                VisualisedPatch(
                    rank=view.rank,
                    activation=view.activation,
                    mask_fraction=view.mask_fraction,
                    image_id=view.image_id,
                    box=PatchBox(**view.box),
                    context_box=None if view.context_box is None else ContextBox(**view.context_box),
                    patch=url(view.rank, "patch") if view.has_images else None,
                    masked=url(view.rank, "masked") if view.has_images else None,
                    context=url(view.rank, "context") if view.has_images else None,
                )
                for view in rendered.patches
            ],
            source="rendered",
            images_available=rendered.images_available,
            images_note=note,
        )
