"""Request and response bodies of the HTTP API (pydantic at the edge, dataclasses inside)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool

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
from deepminer.grid import GridMapping
from service.explainer import ExplanationResult, ModelInfo, UnitExplanation
from service.units import UnitInfo, UnitOverview

MapConvention = Literal[
    "centre of cell (i, j) = offset + scale * (i, j), in the uploaded image's pixel coordinates (row, column)"
]
MAP_CONVENTION: str = get_args(MapConvention)[0]
SIGNIFICANT_DIGITS = 6


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


class Map(BaseModel):
    """A map on the layer4 grid; upsample it onto the image with ``grid_to_image``."""

    shape: tuple[int, int] = Field(description="Grid (rows, columns).")
    grid_to_image: GridToImage
    range: tuple[float, float] = Field(description="Smallest and largest value.")
    values: list[list[float]] = Field(description="Row-major values, rounded to 6 significant digits.")

    @classmethod
    def from_array(cls, values: np.ndarray, mapping: GridMapping) -> Map:
        rows = values.tolist()
        return cls(
            shape=(int(values.shape[0]), int(values.shape[1])),
            grid_to_image=GridToImage.from_mapping(mapping),
            range=(_round(float(values.min())), _round(float(values.max()))),
            values=[[_round(v) for v in row] for row in rows],
        )


class ModelOut(BaseModel):
    """The loaded model bundle and the engine running it."""

    id: str = Field(description="`name@<first 12 hex digits of the bundle hash>`.")
    hash: str = Field(description="sha256 of the bundle's meta.json, which lists every file's sha256.")
    architecture: str
    layer: str = Field(description="The layer whose units explain the prediction.")
    backend: Literal["onnx", "torch"]
    provider: str = Field(description="What executes the model, as the engine reports it (e.g. CPUExecutionProvider).")

    @classmethod
    def from_info(cls, info: ModelInfo) -> ModelOut:
        return cls(
            id=info.id,
            hash=info.hash,
            architecture=info.architecture,
            layer=info.layer,
            backend=info.backend,  # type: ignore[arg-type]
            provider=info.provider,
        )


class ImageOut(BaseModel):
    """The decoded upload and the network input made from it."""

    shape: tuple[int, int] = Field(description="(height, width) in pixels.")
    format: str = Field(description="PNG, TIFF, JPEG or DICOM.")
    bits: int = Field(description="Bits per sample of the decoded data (8 or 16; BitsStored for DICOM).")
    network_input_shape: tuple[int, int] = Field(description="(height, width) after scaling the short side.")


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
    created_at: datetime

    @classmethod
    def from_record(cls, record: AnnotationRecord) -> AnnotationOut:
        return cls.model_validate(record, from_attributes=True)


class ExplainedUnit(BaseModel):
    """One of the top-k units for the explained class, most influential first."""

    unit_id: int = Field(description="0-based layer4 unit index.")
    rank: int = Field(description="1-based position among this image's top-k units.")
    influence: float = Field(description="max_xy A_k(x, y) * w_ck for the explained class c.")
    max_activation: float = Field(description="max_xy A_k(x, y).")
    weight: float = Field(description="w_ck, the unit's weight for the explained class.")
    activation_map: Map = Field(description="A_k on the layer4 grid.")
    annotations: list[AnnotationOut] = Field(
        description="Latest label per annotator made under this bundle; empty when the unit is unlabelled."
    )

    @classmethod
    def from_unit(cls, unit: UnitExplanation, mapping: GridMapping) -> ExplainedUnit:
        return cls(
            unit_id=unit.unit_id,
            rank=unit.rank,
            influence=unit.influence,
            max_activation=unit.max_activation,
            weight=unit.weight,
            activation_map=Map.from_array(unit.activation_map, mapping),
            annotations=[AnnotationOut.from_record(r) for r in unit.annotations],
        )


class ExplainResponse(BaseModel):
    """A classified mammogram and why: probability maps, CAM and the most influential units."""

    method: str
    model: ModelOut
    image: ImageOut
    classes: list[str]
    probabilities: dict[str, float] = Field(
        description=(
            "Image-level class probabilities: softmax of the spatial mean of the FCN's logit map. Pooling and the "
            "classifier are linear, so this equals the patch classifier applied to the whole image with global "
            "average pooling."
        )
    )
    peak_probabilities: dict[str, float] = Field(description="Each class's largest value in its probability map.")
    predicted_class: str = Field(description="The class with the highest image-level probability.")
    explained_class: str = Field(description="The class explained: `class_name` if given, else the predicted class.")
    probability_maps: dict[str, Map] = Field(description="Per-location softmax of the FCN's logits, per class.")
    cam: Map = Field(description="CAM_c(x, y) = Σ_k w_ck A_k(x, y) of the explained class (logit map minus bias).")
    units: list[ExplainedUnit]
    timings_ms: dict[str, float] = Field(
        description=(
            "Milliseconds per stage: queue (waiting for a worker), decode, preprocess, forward, explain, "
            "annotations, and their total."
        )
    )

    @classmethod
    def from_result(cls, result: ExplanationResult) -> ExplainResponse:
        mapping = result.mapping
        return cls(
            method=result.method,
            model=ModelOut.from_info(result.model),
            image=ImageOut(
                shape=result.image_shape,
                format=result.image_format,
                bits=result.image_bits,
                network_input_shape=result.input_shape,
            ),
            classes=list(result.classes),
            probabilities={c: float(p) for c, p in zip(result.classes, result.probabilities)},
            peak_probabilities={c: float(p) for c, p in zip(result.classes, result.peak_probabilities)},
            predicted_class=result.predicted_class,
            explained_class=result.explained_class,
            probability_maps={c: Map.from_array(m, mapping) for c, m in zip(result.classes, result.probability_maps)},
            cam=Map.from_array(result.cam, mapping),
            units=[ExplainedUnit.from_unit(u, mapping) for u in result.units],
            timings_ms=dict(result.timings_ms),
        )


# -- units ------------------------------------------------------------------


class UnitOut(BaseModel):
    """A layer4 unit: its place in the bundle's ranking and its current labels."""

    unit_id: int = Field(description="0-based layer4 unit index.")
    threshold: float = Field(description="Activation threshold of the unit's binarised map (the ranking's quantile).")
    ranks: dict[str, int] = Field(description="1-based rank per class that ranks the unit; empty when unranked.")
    counts: dict[str, int] = Field(description="Per class, in how many hold-out images' top lists the unit appeared.")
    mean_influence: dict[str, float] = Field(description="Per ranking class, the unit's mean influence.")
    annotations: list[AnnotationOut] = Field(description="Latest label per annotator made under the loaded bundle.")

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

    annotator: str = Field(min_length=1, max_length=MAX_ANNOTATOR_LENGTH, description="Who labels the unit.")
    label: str = Field(min_length=1, max_length=MAX_LABEL_LENGTH, description="Short name of the phenomenon.")
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


# -- health -----------------------------------------------------------------


class Liveness(BaseModel):
    """The process answers."""

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """The bundle is loaded, the backend warmed up and the store reachable."""

    status: Literal["ready"] = "ready"
    model: ModelOut
