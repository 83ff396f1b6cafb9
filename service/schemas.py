"""Request and response bodies of the HTTP API (pydantic at the edge, dataclasses inside)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from annotations import AnnotationRecord
from annotations.lexicon import (
    MAX_ANNOTATOR_LENGTH,
    MAX_DESCRIPTION_LENGTH,
    MAX_LABEL_LENGTH,
    CancerAssociation,
    Category,
    Phenomena,
    Source,
)
from deepminer.dicom import DicomInfo
from deepminer.grid import GridMapping
from service.explainer import ExplanationResult, ModelInfo, UnitExplanation
from service.explanation import Explanation, NamedLabel, NamedUnit
from service.maps import quantise
from service.overlays import COLORMAP, MAX_ALPHA, Canvas
from service.quality import BundleQuality
from service.queries import RegionQueryResult
from service.units import UnitEmbedding, UnitInfo, UnitOverview

MapConvention = Literal[
    "centre of cell (i, j) = offset + scale * (i, j), in the uploaded image's pixel coordinates (row, column)"
]
MAP_CONVENTION: str = get_args(MapConvention)[0]
SIGNIFICANT_DIGITS = 6
MAX_BATCH_ANNOTATIONS = 2048
"""Most labels one batch may hold: every unit of a ResNet-152's layer4."""


def _round(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


# -- errors -----------------------------------------------------------------


class ErrorDetail(BaseModel):
    """What went wrong, for programs (``code``) and people (``message``)."""

    code: str = Field(description="Stable machine-readable error code, e.g. `corrupt_image`.")
    message: str = Field(description="What was received and what is accepted.")
    field: str | None = Field(description="The request field at fault (`file`, `top_k`, `label`…), or null.")


class ErrorResponse(BaseModel):
    """Body of every error response."""

    error: ErrorDetail


# -- explanations -----------------------------------------------------------


class GridToImage(BaseModel):
    """Where the cells of a grid map lie in the uploaded image."""

    scale: tuple[float, float] = Field(description="Pixels per grid cell along (row, column).")
    offset: tuple[float, float] = Field(description="Pixel (row, column) of the centre of cell (0, 0).")
    image_shape: tuple[int, int] = Field(description="The uploaded image's (height, width) in pixels.")
    convention: MapConvention = MAP_CONVENTION  # type: ignore[assignment]

    @classmethod
    def from_mapping(cls, mapping: GridMapping) -> GridToImage:
        return cls(scale=mapping.scale, offset=mapping.offset, image_shape=mapping.image_shape)


MapEncoding = Literal["uint16", "json"]


class Map(BaseModel):
    """A map on the layer4 grid; upsample it onto the image with ``grid_to_image``.

    ``encoding`` says how ``values`` is written. ``uint16`` (the default of
    /explain): a base64 string of ``shape[0] * shape[1]`` little-endian uint16
    codes q in row-major order; ``value = offset + scale * q``, exact to
    ``scale / 2``. ``json``: nested lists of numbers rounded to 6 significant
    digits; ``scale`` and ``offset`` are null.
    """

    shape: tuple[int, int] = Field(description="Grid (rows, columns).")
    grid_to_image: GridToImage
    range: tuple[float, float] = Field(description="Smallest and largest value.")
    encoding: MapEncoding = Field(
        description=(
            "`uint16`: `values` is base64 of little-endian uint16 codes q, row-major, and value = offset + scale * q "
            "(error at most scale / 2). `json`: `values` is row-major nested lists, 6 significant digits."
        )
    )
    values: list[list[float]] | str = Field(description="The values, written as `encoding` says.")
    scale: float | None = Field(
        default=None, description="`uint16`: (max - min) / 65535, 0 for a constant map; null for `json`."
    )
    offset: float | None = Field(default=None, description="`uint16`: the smallest value; null for `json`.")

    @classmethod
    def from_array(cls, values: np.ndarray, mapping: GridMapping, encoding: MapEncoding = "json") -> Map:
        shape = (int(values.shape[0]), int(values.shape[1]))
        value_range = (_round(float(values.min())), _round(float(values.max())))
        if encoding == "uint16":
            q = quantise(values)
            return cls(
                shape=shape,
                grid_to_image=GridToImage.from_mapping(mapping),
                range=value_range,
                encoding="uint16",
                values=q.data,
                scale=q.scale,
                offset=q.offset,
            )
        return cls(
            shape=shape,
            grid_to_image=GridToImage.from_mapping(mapping),
            range=value_range,
            encoding="json",
            values=[[_round(v) for v in row] for row in values.tolist()],
        )


class ModelOut(BaseModel):
    """The loaded model bundle and the engine running it."""

    id: str = Field(description="`name@<first 12 hex digits of the bundle hash>`.")
    hash: str = Field(description="sha256 of the bundle's meta.json, which lists every file's sha256.")
    architecture: str
    layer: str = Field(description="The layer whose units explain the prediction.")
    backend: Literal["onnx", "torch"]
    provider: str = Field(
        description=(
            "What executes the model, as the engine reports it: for ONNX Runtime the first provider the session "
            "actually runs on (`CUDAExecutionProvider` or `CPUExecutionProvider`), for torch the device (`cuda:0`, `cpu`)."
        )
    )
    device: Literal["cuda", "cpu"] = Field(description="Whether the model runs on a GPU, derived from `provider`.")
    precision: Literal["fp32", "fp16", "bf16"] = Field(
        description="Arithmetic of the forward pass (`DEEPMINER_PRECISION`); every map is returned as float32."
    )

    @classmethod
    def from_info(cls, info: ModelInfo) -> ModelOut:
        return cls(
            id=info.id,
            hash=info.hash,
            architecture=info.architecture,
            layer=info.layer,
            backend=info.backend,  # type: ignore[arg-type]
            provider=info.provider,
            device=info.device,  # type: ignore[arg-type]
            precision=info.precision,  # type: ignore[arg-type]
        )


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
        default=None, description="For a DICOM upload, its identifiers and tags (laterality and view as tagged); else null."
    )


class AnnotationOut(BaseModel):
    """One stored version of one annotator's label for a unit."""

    id: int = Field(description="Global write order.")
    unit_id: int = Field(description="0-based layer4 unit index.")
    annotator: str
    source: Source
    version: int = Field(description="1, 2, 3… per (unit, annotator).")
    label: str
    category: Category
    cancer_association: CancerAssociation
    recognizable: bool | None
    phenomena: Phenomena | None
    description: str
    bundle_hash: str = Field(description="The bundle the label was made under.")
    current_bundle: bool = Field(
        description=(
            "Whether the label was made under the loaded bundle. Unit ids index one network's layer4, so a label "
            "made under another bundle may describe a different unit: /units, /units/{unit_id} and /explain still "
            "show it, so an expert sees prior labels, but flagged false; label reports leave it out."
        )
    )
    created_at: datetime

    @classmethod
    def from_record(cls, record: AnnotationRecord) -> AnnotationOut:
        """From a catalogue record (:class:`service.units.UnitAnnotation`), which carries ``current_bundle``."""
        return cls.model_validate(record, from_attributes=True)


class ExplainedUnit(BaseModel):
    """One of the top-k units for the explained class, most influential first."""

    unit_id: int = Field(description="0-based layer4 unit index.")
    rank: int = Field(description="1-based position among all units by influence on the explained class.")
    influence: float = Field(description="max_xy A_k(x, y) * w_ck for the explained class c.")
    max_activation: float = Field(description="max_xy A_k(x, y).")
    weight: float = Field(description="w_ck, the unit's weight for the explained class.")
    activation_map: Map = Field(description="A_k on the layer4 grid.")
    annotations: list[AnnotationOut] = Field(
        description=(
            "Latest label per annotator that names a phenomenon (not answered \"not recognisable\"), under any "
            "bundle, each flagged `current_bundle`; empty when there is none. `explanation` says which of them count."
        )
    )

    @classmethod
    def from_unit(cls, unit: UnitExplanation, mapping: GridMapping, encoding: MapEncoding = "json") -> ExplainedUnit:
        return cls(
            unit_id=unit.unit_id,
            rank=unit.rank,
            influence=unit.influence,
            max_activation=unit.max_activation,
            weight=unit.weight,
            activation_map=Map.from_array(unit.activation_map, mapping, encoding),
            annotations=[AnnotationOut.from_record(r) for r in unit.annotations],
        )


class UnitOverlay(BaseModel):
    """One returned unit's activation map drawn over the image."""

    unit_id: int = Field(description="0-based layer4 unit index.")
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
    def from_result(cls, result: ExplanationResult, *, max_side: int) -> Overlays:
        canvas = Canvas.for_image(result.pixels, result.mapping, max_side=max_side)
        return cls(
            shape=canvas.shape,
            cam=canvas.overlay_png(result.cam),
            units=[UnitOverlay(unit_id=u.unit_id, png=canvas.overlay_png(u.activation_map)) for u in result.units],
        )


class AuxiliaryOut(BaseModel):
    """The auxiliary features used (bundles trained with them) and their per-class term on the logits."""

    values: dict[str, float] = Field(description="The raw values given in the `aux` form field, by name.")
    normalised: dict[str, float] = Field(
        description="z_j = (a_j - mean_j) / std_j, with the training cases' statistics."
    )
    contribution: dict[str, float] = Field(
        description=(
            "Per class, Σ_j v_cj z_j: added to every location of the class's logit map, so logit map = CAM + bias + "
            "contribution. It shifts the probabilities but not the CAM or the units' influence."
        )
    )


class NamedLabelOut(BaseModel):
    """One label of a unit in the explanation; the annotators who gave the same label are counted together."""

    label: str = Field(description="The short label, as its first annotator spelled it.")
    category: Category = Field(description="BI-RADS lexicon category.")
    cancer_association: CancerAssociation = Field(description="Are the unit's images associated with breast cancer?")
    annotators: int = Field(description="How many annotators' latest label of the unit this is.")
    automatic: bool = Field(
        description="True for a label made by an automatic procedure (admitted only with explain_automatic_labels)."
    )

    @classmethod
    def from_label(cls, label: NamedLabel) -> NamedLabelOut:
        return cls(
            label=label.label,
            category=label.category,  # type: ignore[arg-type]
            cancer_association=label.cancer_association,  # type: ignore[arg-type]
            annotators=label.annotators,
            automatic=label.automatic,
        )


class NamedUnitOut(BaseModel):
    """A labelled unit among the top eight, with the sentence that explains it."""

    unit_id: int = Field(description="0-based layer4 unit index.")
    rank: int = Field(description="1-based position among all units by influence on the explained class.")
    influence: float = Field(description="max_xy A_k(x, y) * w_ck for the explained class c.")
    experts: int = Field(description="Experts whose label of the unit counts (the denominator of 'n of m experts').")
    labels: list[NamedLabelOut] = Field(
        description="The unit's labels that count: expert ones first, most annotators first."
    )
    text: str = Field(
        description="One readable sentence built from the labels.",
        examples=[
            "Unit 1813 (influence 4.2, rank 1): 'Spiculated mass margin' — Mass; associated with cancer (2 of 2 experts)"
        ],
    )

    @classmethod
    def from_unit(cls, unit: NamedUnit) -> NamedUnitOut:
        return cls(
            unit_id=unit.unit_id,
            rank=unit.rank,
            influence=unit.influence,
            experts=unit.experts,
            labels=[NamedLabelOut.from_label(label) for label in unit.labels],
            text=unit.text,
        )


class ExplanationOut(BaseModel):
    """The paper's explanation: up to five labelled units among the eight most influential, most influential first.

    A unit counts when it carries a label made under this model bundle that names
    a phenomenon (not answered "not recognisable"), from an expert, or from an
    automatic procedure when the explain_automatic_labels setting allows it.
    """

    considered: int = Field(
        description="How many of the most influential units were looked at: 8, or fewer in a smaller layer."
    )
    max_units: int = Field(description="The most units the explanation names: 5.")
    sources: list[Source] = Field(
        description="Label sources admitted: `expert`, and `automatic` when explain_automatic_labels is true."
    )
    units: list[NamedUnitOut] = Field(
        description="The named units; empty when none of the considered units is labelled."
    )

    @classmethod
    def from_explanation(cls, explanation: Explanation) -> ExplanationOut:
        return cls(
            considered=explanation.considered,
            max_units=explanation.max_units,
            sources=list(explanation.sources),  # type: ignore[arg-type]
            units=[NamedUnitOut.from_unit(u) for u in explanation.units],
        )


class ExplainResponse(BaseModel):
    """A classified mammogram and why: probability maps, CAM and the most influential units."""

    method: str
    model: ModelOut
    image: ImageOut
    classes: list[str]
    scores: dict[str, float] = Field(
        description=(
            "Image-level score of each class, under `score_rule`; they rank mammograms and need not sum to 1. "
            "`breast_peak`: a lesion class scores the peak of its probability map over the breast cells (layer4 "
            "cells whose centre pixel (32i, 32j) of the network input lies on the Otsu tissue mask; all cells when "
            "none does), `normal` the lowest value of its map over those cells. `classifier`: equal to "
            "`classifier_probabilities`."
        )
    )
    score_rule: str = Field(
        description="The model bundle's rule for `scores` (`breast_peak` or `classifier`, deepminer/scoring.py).",
        examples=["breast_peak"],
    )
    classifier_probabilities: dict[str, float] = Field(
        description=(
            "Softmax of the spatial mean of the FCN's logit map: the exact patch-classifier equivalent (pooling "
            "and the classifier are linear, so this is the patch classifier applied to the whole image with global "
            "average pooling). A lesion covers a few percent of the cells, so it leans to `normal`; rank images by "
            "`scores`."
        )
    )
    peak_probabilities: dict[str, float] = Field(
        description="Each class's largest value in its probability map, over the whole grid (breast or not)."
    )
    predicted_class: str = Field(description="The argmax of `scores`.")
    explained_class: str = Field(description="The class explained: `class_name` if given, else the predicted class.")
    probability_maps: dict[str, Map] = Field(description="Per-location softmax of the FCN's logits, per class.")
    cam: Map = Field(
        description=(
            "CAM_c(x, y) = Σ_k w_ck A_k(x, y) of the explained class (logit map minus bias, and minus "
            "`aux.contribution` when the model takes auxiliary features)."
        )
    )
    explanation: ExplanationOut = Field(
        description=(
            "The paper's explanation, read first: up to five units among the top eight by influence that carry a "
            "label of this bundle naming a phenomenon, each with a sentence. Independent of `top_k`."
        )
    )
    units: list[ExplainedUnit] = Field(
        description="The top-k units by influence on the explained class, with their maps."
    )
    aux: AuxiliaryOut | None = Field(
        default=None, description="The auxiliary features used and their contribution; null for models without them."
    )
    overlays: Overlays | None = Field(default=None, description="PNG overlays with `?overlays=png`; else null.")
    timings_ms: dict[str, float] = Field(
        description=(
            "Milliseconds per stage: upload (reading the multipart body), queue (waiting for a worker), decode, "
            "preprocess, inference (the FCN forward pass), explain (formulas), annotations (label look-up and "
            "`explanation`), encode (maps and overlays), and their total."
        )
    )

    @classmethod
    def from_result(
        cls, result: ExplanationResult, *, maps: MapEncoding = "json", overlay_max_side: int | None = None
    ) -> ExplainResponse:
        """The response for ``result``: maps written as ``maps``; PNG overlays when ``overlay_max_side`` is given."""
        mapping = result.mapping
        return cls(
            method=result.method,
            model=ModelOut.from_info(result.model),
            image=ImageOut(
                shape=result.image_shape,
                format=result.image_format,
                bits=result.image_bits,
                network_input_shape=result.input_shape,
                dicom=DicomOut.from_info(result.dicom) if result.dicom is not None else None,
            ),
            classes=list(result.classes),
            scores={c: float(v) for c, v in zip(result.classes, result.scores)},
            score_rule=result.score_rule,
            classifier_probabilities={c: float(p) for c, p in zip(result.classes, result.classifier_probabilities)},
            peak_probabilities={c: float(p) for c, p in zip(result.classes, result.peak_probabilities)},
            predicted_class=result.predicted_class,
            explained_class=result.explained_class,
            probability_maps={
                c: Map.from_array(m, mapping, maps) for c, m in zip(result.classes, result.probability_maps)
            },
            cam=Map.from_array(result.cam, mapping, maps),
            explanation=ExplanationOut.from_explanation(result.explanation),
            units=[ExplainedUnit.from_unit(u, mapping, maps) for u in result.units],
            overlays=None if overlay_max_side is None else Overlays.from_result(result, max_side=overlay_max_side),
            timings_ms=dict(result.timings_ms),
            aux=None
            if result.aux is None
            else AuxiliaryOut(
                values=dict(result.aux.values),
                normalised=dict(result.aux.normalised),
                contribution={c: float(v) for c, v in zip(result.classes, result.aux.contribution)},
            ),
        )


# -- units ------------------------------------------------------------------


class UnitOut(BaseModel):
    """A layer4 unit: its place in the bundle's ranking and its current labels."""

    unit_id: int = Field(description="0-based layer4 unit index.")
    threshold: float = Field(description="Activation threshold of the unit's binarised map (the ranking's quantile).")
    ranks: dict[str, int] = Field(description="1-based rank per class that ranks the unit; empty when unranked.")
    counts: dict[str, int] = Field(description="Per class, in how many hold-out images' top lists the unit appeared.")
    mean_influence: dict[str, float] = Field(description="Per ranking class, the unit's mean influence.")
    annotations: list[AnnotationOut] = Field(
        description="Latest label per annotator, under any bundle; `current_bundle` flags those of the loaded one."
    )

    @classmethod
    def from_info(cls, info: UnitInfo) -> UnitOut:
        r = info.ranking
        return cls(
            unit_id=r.unit_id,
            threshold=r.threshold,
            ranks=dict(r.ranks),
            counts=dict(r.counts),
            mean_influence=dict(r.mean_influence),
            annotations=[AnnotationOut.from_record(a) for a in info.annotations],
        )


class ClassCoverageOut(BaseModel):
    """How much of a class's per-image top lists its ranked units account for."""

    coverage: float = Field(description="Share of all per-image top-n slots filled by the ranked units.")
    slots_total: int = Field(description="top_per_image × number of hold-out images.")
    ranked_units: int


class UnitsResponse(BaseModel):
    """The units the bundle ranked for its classes (the union, best rank first)."""

    model_id: str = Field(description="The loaded bundle's id.")
    bundle_hash: str = Field(description="The loaded bundle's hash; new annotations are recorded under it.")
    classes: list[str]
    num_units: int = Field(description="Units in the layer; valid ids are 0 to num_units - 1.")
    num_images: int = Field(description="Hold-out images the ranking used.")
    top_per_image: int
    top_per_class: int
    threshold_quantile: float
    coverage: dict[str, ClassCoverageOut]
    units: list[UnitOut]

    @classmethod
    def from_overview(cls, overview: UnitOverview) -> UnitsResponse:
        return cls(
            model_id=overview.model_id,
            bundle_hash=overview.bundle_hash,
            classes=list(overview.classes),
            num_units=overview.num_units,
            num_images=overview.num_images,
            top_per_image=overview.top_per_image,
            top_per_class=overview.top_per_class,
            threshold_quantile=overview.threshold_quantile,
            coverage={
                name: ClassCoverageOut(coverage=c.coverage, slots_total=c.slots_total, ranked_units=c.ranked_units)
                for name, c in overview.coverage.items()
            },
            units=[UnitOut.from_info(u) for u in overview.units],
        )


class AnnotationIn(BaseModel):
    """An expert's label for a unit (the survey of DESIGN.md §2); stored as a new version."""

    model_config = ConfigDict(extra="forbid")

    annotator: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_ANNOTATOR_LENGTH,
        description=(
            "Who labels the unit. Required when DEEPMINER_AUTH is off. With a bearer token it defaults to the "
            "token's name, and another name is refused (422) unless the token is an admin's, who may record a "
            "label on an expert's behalf."
        ),
    )
    label: str = Field(
        default="",
        max_length=MAX_LABEL_LENGTH,
        description=(
            "Short name of the phenomenon. Required (not blank) unless `recognizable` is false: an expert who finds "
            "no recognisable phenomenon names none, and such an answer never names a unit on an image."
        ),
    )
    category: Category = Field(description="BI-RADS lexicon category.")
    cancer_association: CancerAssociation = Field(description="Are they associated with breast cancer?")
    recognizable: StrictBool | None = Field(default=None, description="Do these images show recognizable phenomena?")
    phenomena: Phenomena | None = Field(default=None, description="Is there a single phenomenon or several?")
    description: str = Field(
        default="", max_length=MAX_DESCRIPTION_LENGTH, description="Each phenomenon and its association with cancer."
    )


class UnitHistory(BaseModel):
    """Every stored version of every annotator's label for one unit, oldest first, under any bundle."""

    unit_id: int
    versions: list[AnnotationOut]


class BatchAnnotationIn(AnnotationIn):
    """One unit's label within a batch."""

    unit_id: StrictInt = Field(description="0-based layer4 unit index, a JSON integer (not a string).")


class AnnotationBatchIn(BaseModel):
    """Labels for a group of units, stored in one transaction: all of them or, if any item is bad, none."""

    model_config = ConfigDict(extra="forbid")

    annotations: list[BatchAnnotationIn] = Field(min_length=1, max_length=MAX_BATCH_ANNOTATIONS)


class AnnotationBatchOut(BaseModel):
    """The stored labels of a batch, in the order given."""

    annotations: list[AnnotationOut]


class EmbeddedUnit(BaseModel):
    """A unit's place in the 2-D embedding, with its labels."""

    unit_id: int = Field(description="0-based layer4 unit index.")
    x: float = Field(description="First principal component.")
    y: float = Field(description="Second principal component.")
    ranked: bool = Field(description="Whether the bundle's ranking lists the unit for some class.")
    annotations: list[AnnotationOut] = Field(
        description="Latest label per annotator, under any bundle; `current_bundle` flags those of the loaded one."
    )


class EmbeddingResponse(BaseModel):
    """Every unit of the layer placed in 2-D: PCA of its max activations over a reference image set (Lu & Perer)."""

    model_id: str
    bundle_hash: str
    method: str = Field(description="How the embedding was made, as the bundle records it.")
    num_images: int = Field(description="Reference images: the entries of each unit's vector of max activations.")
    explained_variance_ratio: list[float] = Field(description="Share of the variance each of the two components holds.")
    units: list[EmbeddedUnit] = Field(description="Every unit, by unit id.")

    @classmethod
    def from_embedding(cls, embedding: UnitEmbedding) -> EmbeddingResponse:
        return cls(
            model_id=embedding.model_id,
            bundle_hash=embedding.bundle_hash,
            method=embedding.method,
            num_images=embedding.num_images,
            explained_variance_ratio=list(embedding.explained_variance_ratio),
            units=[
                EmbeddedUnit(
                    unit_id=u.unit_id,
                    x=u.x,
                    y=u.y,
                    ranked=u.ranked,
                    annotations=[AnnotationOut.from_record(a) for a in u.annotations],
                )
                for u in embedding.units
            ],
        )


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


# -- interactive queries ------------------------------------------------------


class RegionOut(BaseModel):
    """The queried region at the query resolution."""

    pixels: int = Field(description="Query pixels inside the region.")
    fraction: float = Field(description="Share of the image inside the region.")


class RegionUnit(BaseModel):
    """A unit whose binarised map overlaps the region by at least `min_iou`."""

    unit_id: int = Field(description="0-based layer4 unit index.")
    iou: float = Field(description="|unit mask ∧ region| / |unit mask ∨ region| at the query resolution.")
    max_activation: float = Field(description="max_xy A_k(x, y) on this image.")
    threshold: float = Field(description="The unit's threshold (the ranking's whole-mammogram quantile).")
    mask_fraction: float = Field(description="Share of the image inside the unit's binarised map.")
    annotations: list[AnnotationOut] = Field(
        description="Latest label per annotator, under any bundle; `current_bundle` flags those of the loaded one."
    )


class LabelReportOut(BaseModel):
    """One label on this image (Lu & Perer's label report)."""

    label: str
    unit_ids: list[int] = Field(description="Units whose latest label (per annotator, loaded bundle) is this one.")
    mean_max_activation: float = Field(description="Mean over those units of max_xy A_k(x, y) on this image.")
    mean_iou: float = Field(description="Mean over those units of the IoU of their binarised map with the region.")


class RegionQueryResponse(BaseModel):
    """Units ranked by how well their binarised maps match a region of one image, and per-label reports."""

    method: str
    model: ModelOut
    image: ImageOut
    query_shape: tuple[int, int] = Field(
        description="(rows, columns) at which unit masks and region were compared: the network input, downscaled "
        "so its longer side is at most 384."
    )
    region: RegionOut
    min_iou: float
    units: list[RegionUnit] = Field(description="Units with IoU ≥ min_iou, highest IoU first (ties: lower id).")
    labels: list[LabelReportOut] = Field(
        description="Every label of the loaded bundle's units, highest mean IoU first; units whose map misses the "
        "region count with IoU 0."
    )
    timings_ms: dict[str, float] = Field(
        description="Milliseconds per stage: decode, preprocess, inference, region, query, annotations, total."
    )

    @classmethod
    def from_result(cls, result: RegionQueryResult) -> RegionQueryResponse:
        return cls(
            method=result.method,
            model=ModelOut.from_info(result.model),
            image=ImageOut(
                shape=result.image_shape,
                format=result.image_format,
                bits=result.image_bits,
                network_input_shape=result.input_shape,
            ),
            query_shape=result.query_shape,
            region=RegionOut(pixels=result.region_pixels, fraction=result.region_fraction),
            min_iou=result.min_iou,
            units=[
                RegionUnit(
                    unit_id=u.unit_id,
                    iou=u.iou,
                    max_activation=u.max_activation,
                    threshold=u.threshold,
                    mask_fraction=u.mask_fraction,
                    annotations=[AnnotationOut.from_record(a) for a in u.annotations],
                )
                for u in result.units
            ],
            labels=[
                LabelReportOut(
                    label=r.label,
                    unit_ids=list(r.unit_ids),
                    mean_max_activation=r.mean_max_activation,
                    mean_iou=r.mean_iou,
                )
                for r in result.labels
            ],
            timings_ms=dict(result.timings_ms),
        )


# -- health -----------------------------------------------------------------


class Liveness(BaseModel):
    """The process answers."""

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """The bundle is loaded, the backend warmed up and the store reachable."""

    status: Literal["ready"] = "ready"
    model: ModelOut


# -- explanation quality ----------------------------------------------------

# The report's sections take extra keys as they come: a later build may add figures, and they are passed on.
_OPEN = ConfigDict(extra="allow")


class QualityAuc(BaseModel):
    """Image-level ROC AUC per class, one-vs-rest; null for a class with no image (or only images) of it."""

    model_config = _OPEN

    score: dict[str, float | None] = Field(
        description="From the image-level score /explain returns (`image_score_rule`), per class."
    )
    classifier_probability: dict[str, float | None] = Field(
        description="From the classifier's probability (softmax of the mean of the logit map), per class."
    )


class QualityPredicted(BaseModel):
    """How often the predicted class (argmax of the image-level score) is right."""

    model_config = _OPEN

    lesion_images_correct: float | None = Field(description="Share of lesion images predicted as their pathology.")
    normal_images_correct: float | None = Field(description="Share of normal images predicted normal.")
    confusion: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="Images per true class (outer key) and predicted class (inner key)."
    )


class QualityPointingGame(BaseModel):
    """The pointing game (Zhang et al. 2016) on lesion images, explaining their true class."""

    model_config = _OPEN

    definition: str = Field(description="What counts as a hit, as the report states it.")
    images: int = Field(description="Lesion images played.")
    hit_rate: float | None = Field(description="Share of them where the CAM's peak cell hits the lesion.")
    chance_rate: float | None = Field(description="Mean share of an image's cells whose centre would hit.")
    tolerance_input_px: float | None = Field(default=None, description="Tolerance in network-input pixels.")
    tolerance_image_px: float | None = Field(default=None, description="The same, in image pixels (mean).")


class QualityConceptNaming(BaseModel):
    """Whether the units that explain a lesion image carry a name of its finding."""

    model_config = _OPEN

    definition: str = Field(description="What counts as named, as the report states it.")
    images: int = Field(description="Lesion images judged.")
    named_rate: float | None = Field(description="Share of them named by a correct concept or BI-RADS category.")
    ranked_units: int | None = Field(default=None, description="Ranked units of every class.")
    ranked_units_named: float | None = Field(default=None, description="Share of the ranked units with any name.")
    lesion_ranked_units: int | None = Field(default=None, description="Ranked units of the lesion classes.")
    lesion_ranked_units_named_by_lesion_concept: float | None = Field(
        default=None, description="Share of the lesion classes' ranked units named by a lesion concept."
    )


class QualityBackground(BaseModel):
    """Lesion-class probability outside the breast, on normal images: it should be near 0."""

    model_config = _OPEN

    definition: str = Field(description="What is measured, as the report states it.")
    images: int = Field(description="Normal images measured.")
    max_probability: dict[str, float | None] = Field(description="Largest probability outside the breast, per class.")


class QualityBreakdown(BaseModel):
    """The pointing game and concept naming on the lesion images of one concept or BI-RADS category."""

    model_config = _OPEN

    images: int
    pointing_game: float | None = Field(description="Hit rate of the pointing game on these images.")
    concept_named: float | None = Field(description="Share of these images named by a correct concept.")


class QualityBar(BaseModel):
    """One bar a figure must pass (the demo's bars)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    value: float | None = Field(description="The figure; null when the data set cannot measure it (a failure).")
    bar: str = Field(description="The bar, e.g. `>= 0.9`.")
    passed: bool = Field(alias="pass", description="Whether the figure passes the bar.")


class QualityResponse(BaseModel):
    """The loaded bundle's explanation-quality report: every figure of its ``quality.json`` but ``per_image``.

    The figures are shares in [0, 1] (null where the data set cannot measure
    them), measured on whole mammograms with lesion masks as /explain explains
    them; ``training/quality.py`` computes them.
    """

    model_config = _OPEN

    model_id: str
    bundle_hash: str
    report: str = Field(description="The report's path inside the bundle, e.g. `quality/quality.json`.")
    figure_url: str | None = Field(
        description="The worst-case figure (missed images: CAM of the true class, lesion outlined, peak marked), "
        "a PNG served by /bundle-files; null when the bundle has none (no misses)."
    )
    dataset: dict[str, Any] = Field(
        description="What the report was measured on: `manifest`, `part` (`test` split or `all`), `labels` used."
    )
    images: int = Field(description="Mammograms measured.")
    lesion_images: int = Field(description="Of which with a lesion mask.")
    normal_images: int = Field(description="Of which normal.")
    image_score_rule: str | None = Field(default=None, description="The image-level score rule measured.")
    auc: QualityAuc
    predicted: QualityPredicted
    pointing_game: QualityPointingGame
    concept_naming: QualityConceptNaming
    background: QualityBackground
    per_concept: dict[str, QualityBreakdown] = Field(default_factory=dict, description="By finding concept.")
    per_category: dict[str, QualityBreakdown] = Field(default_factory=dict, description="By BI-RADS category.")
    bars: dict[str, QualityBar] | None = Field(
        default=None, description="The bars each headline figure must pass, when the report was checked against any."
    )
    per_image: list[dict[str, Any]] | None = Field(
        default=None,
        description="One row per mammogram (scores, prediction, hit, named units); only with per_image=true.",
    )

    @classmethod
    def from_report(
        cls, quality: BundleQuality, *, per_image: bool, url: Callable[[str], str]
    ) -> QualityResponse:
        report = quality.require()
        return cls.model_validate(
            {
                **report.figures,
                "model_id": quality.model_id,
                "bundle_hash": quality.bundle_hash,
                "report": report.path,
                "figure_url": None if report.figure is None else url(report.figure),
                "per_image": list(report.per_image) if per_image else None,
            }
        )
