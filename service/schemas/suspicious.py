"""The hold-out set's most suspicious patches, from the bundle, with the URLs of their mammograms."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from service.suspicious import SuspiciousList


class PixelBox(BaseModel):
    """A box in an image's pixels, pixel edges at whole numbers (the image's top-left corner at 0, 0)."""

    top: float
    left: float
    height: float
    width: float


class SuspiciousImage(BaseModel):
    """The mammogram a patch lies in, stored as the network saw it (short side scaled to its input size)."""

    url: str = Field(description="URL of the stored 8-bit PNG; upload it to POST /query/region to query a patch.")
    shape: tuple[int, int] = Field(description="The stored image's [rows, columns].")
    original_shape: tuple[int, int] = Field(description="The original hold-out image's [rows, columns].")


class SuspiciousPatch(BaseModel):
    """One cell of a hold-out mammogram that the FCN finds likely to hold a lesion class."""

    model_config = ConfigDict(populate_by_name=True)

    id: str = Field(description="`<class>-<rank>`, unique in the bundle.")
    class_name: str = Field(alias="class", description="The lesion class the cell is suspicious of.")
    rank: int = Field(description="1 = the class's most probable cell.")
    probability: float = Field(description="The FCN's softmax probability of the class at the cell.")
    image_id: str = Field(description="The hold-out mammogram, as the bundle's data named it.")
    cell: tuple[int, int] = Field(description="The layer4 cell [row, column].")
    box: PixelBox = Field(description="The classifier's patch centred on the cell, in the original image's pixels.")
    cell_box: PixelBox = Field(description="The cell's own stride-sized square, in the original image's pixels.")
    context_box: PixelBox = Field(description="`box` in the stored image's pixels: the region to query and outline.")
    context_cell_box: PixelBox = Field(description="`cell_box` in the stored image's pixels.")
    image: SuspiciousImage


class SuspiciousPatchesResponse(BaseModel):
    """The bundle's most suspicious hold-out cells per lesion class, most probable first."""

    source: str = Field(description="The split they come from (`holdout`).")
    classes: list[str] = Field(description="The lesion classes the bundle lists patches for.")
    per_class: int = Field(description="Cells the build kept per class.")
    probability: str = Field(description="How the probability was computed.")
    suppression: str = Field(description="How near duplicates of one image were left out.")
    patches: list[SuspiciousPatch]

    @classmethod
    def from_list(cls, found: SuspiciousList, *, url: Callable[[str], str]) -> SuspiciousPatchesResponse:
        """From :func:`service.suspicious.suspicious_patches`; ``url`` turns a bundle path into the URL serving it."""
        index = found.index
        images = {
            image_id: SuspiciousImage(
                url=url(entry["file"]), shape=tuple(entry["shape"]), original_shape=tuple(entry["original_shape"])
            )
            for image_id, entry in index["images"].items()
        }
        return cls(
            source=index["source"],
            classes=index["classes"],
            per_class=index["per_class"],
            probability=index["probability"],
            suppression=index["suppression"],
            patches=[SuspiciousPatch.model_validate({**p, "image": images[p["image_id"]]}) for p in found.patches],
        )
