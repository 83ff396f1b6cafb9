"""The decoded upload: its shape and format, and a DICOM upload's identifiers."""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, Field

from deepminer.dicom import DicomInfo


class DecodedImage(Protocol):
    """What a result says about the image it was made from (explanations and region queries alike)."""

    @property
    def image_shape(self) -> tuple[int, int]: ...

    @property
    def image_format(self) -> str: ...

    @property
    def image_bits(self) -> int: ...

    @property
    def input_shape(self) -> tuple[int, int]: ...


class DicomOut(BaseModel):
    """Identifiers and acquisition tags of a DICOM upload; never patient data."""

    study_instance_uid: str | None = Field(description="Study Instance UID (0020,000D).")
    series_instance_uid: str | None = Field(description="Series Instance UID (0020,000E).")
    sop_instance_uid: str | None = Field(description="SOP Instance UID (0008,0018).")
    sop_class: str | None = Field(
        description="The SOP class's name, e.g. `Digital Mammography X-Ray Image Storage - For Presentation`."
    )
    sop_class_uid: str | None = Field(description="SOP Class UID (0008,0016).")
    modality: str | None = Field(description="Modality (0008,0060): `MG` for mammography, `OT` for many captures.")
    laterality: str | None = Field(
        description="Image Laterality (0020,0062), else Laterality (0020,0060): `L`, `R`, or as written."
    )
    view: str | None = Field(description="View Position (0018,5101), e.g. `CC`, `MLO`.")
    presentation_intent: str | None = Field(
        description=(
            "Presentation Intent Type (0008,0068). `FOR PROCESSING` images are raw detector data, usually without "
            "a display window: they are mapped linearly over the range BitsStored can hold (after the modality "
            "LUT), so they may look unlike the `FOR PRESENTATION` images a model is trained on."
        )
    )
    transfer_syntax: str | None = Field(description="The transfer syntax's name, e.g. `JPEG 2000 Image Compression`.")
    transfer_syntax_uid: str | None = Field(description="Transfer Syntax UID (0002,0010).")

    @classmethod
    def from_info(cls, info: DicomInfo) -> DicomOut:
        return cls(
            study_instance_uid=info.study_instance_uid,
            series_instance_uid=info.series_instance_uid,
            sop_instance_uid=info.sop_instance_uid,
            sop_class=info.sop_class_name,
            sop_class_uid=info.sop_class_uid,
            modality=info.modality,
            laterality=info.laterality,
            view=info.view,
            presentation_intent=info.presentation_intent,
            transfer_syntax=info.transfer_syntax_name,
            transfer_syntax_uid=info.transfer_syntax_uid,
        )


class ImageOut(BaseModel):
    """The decoded upload and the network input made from it.

    Orientation: the image is explained as stored, never flipped or rotated by
    laterality or view, exactly as training reads its images; the maps are in
    the stored image's pixel coordinates.
    """

    shape: tuple[int, int] = Field(description="(height, width) in pixels, as stored.")
    format: str = Field(description="PNG, TIFF, JPEG or DICOM.")
    bits: int = Field(description="Bits per sample of the decoded data (8 or 16; BitsStored for DICOM).")
    network_input_shape: tuple[int, int] = Field(description="(height, width) after scaling the short side.")
    dicom: DicomOut | None = Field(
        default=None,
        description="For a DICOM upload, its identifiers and tags (laterality and view as tagged); else null.",
    )

    @classmethod
    def from_result(cls, result: DecodedImage, *, dicom: DicomInfo | None = None) -> ImageOut:
        return cls(
            shape=result.image_shape,
            format=result.image_format,
            bits=result.image_bits,
            network_input_shape=result.input_shape,
            dicom=None if dicom is None else DicomOut.from_info(dicom),
        )
