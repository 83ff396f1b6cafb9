"""The response of /explain: probability maps, CAM, the top units and the paper's explanation."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic import BaseModel, Field

from deepminer.grid import GridMapping
from service.explainer import ExplanationResult, UnitExplanation
from service.explanation_overlays import draw_overlays
from service.schemas.annotations import AnnotationOut, UnitIndex
from service.schemas.explanation import ExplanationOut, Influence, Rank
from service.schemas.image import ImageOut
from service.schemas.maps import Map, MapEncoding
from service.schemas.model import ModelOut
from service.schemas.overlays import Overlays


def by_class(classes: Sequence[str], values: Iterable[float]) -> dict[str, float]:
    """One float per class, keyed by the class's name (scores, probabilities, contributions)."""
    return {name: float(value) for name, value in zip(classes, values)}


class ExplainedUnit(BaseModel):
    """One of the top-k units for the explained class, most influential first."""

    unit_id: UnitIndex
    rank: Rank
    influence: Influence
    max_activation: float = Field(description="max_xy A_k(x, y).")
    weight: float = Field(description="w_ck, the unit's weight for the explained class.")
    activation_map: Map = Field(description="A_k on the layer4 grid.")
    annotations: list[AnnotationOut] = Field(
        description=(
            'Latest label per annotator that names a phenomenon (not answered "not recognisable"), under any '
            "bundle, each flagged `current_bundle`; empty when there is none. `explanation` says which of them count."
        )
    )

    @classmethod
    def from_unit(cls, unit: UnitExplanation, mapping: GridMapping, encoding: MapEncoding = "json") -> ExplainedUnit:
        values = {name: getattr(unit, name) for name in cls.model_fields if name != "activation_map"}
        values["activation_map"] = Map.from_array(unit.activation_map, mapping, encoding)
        return cls.model_validate(values, from_attributes=True)


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
        description=("The model bundle's rule for `scores` (`breast_peak`, `patch_peak`, `worst_patch` or `classifier`, "
                     "deepminer/scoring.py)."),
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
            image=ImageOut.from_result(result, dicom=result.dicom),
            classes=list(result.classes),
            scores=by_class(result.classes, result.scores),
            score_rule=result.score_rule,
            classifier_probabilities=by_class(result.classes, result.classifier_probabilities),
            peak_probabilities=by_class(result.classes, result.peak_probabilities),
            predicted_class=result.predicted_class,
            explained_class=result.explained_class,
            probability_maps={
                c: Map.from_array(m, mapping, maps) for c, m in zip(result.classes, result.probability_maps)
            },
            cam=Map.from_array(result.cam, mapping, maps),
            explanation=ExplanationOut.from_explanation(result.explanation),
            units=[ExplainedUnit.from_unit(u, mapping, maps) for u in result.units],
            overlays=None
            if overlay_max_side is None
            else Overlays.from_drawn(draw_overlays(result, max_side=overlay_max_side)),
            timings_ms=dict(result.timings_ms),
            aux=None
            if result.aux is None
            else AuxiliaryOut(
                values=dict(result.aux.values),
                normalised=dict(result.aux.normalised),
                contribution=by_class(result.classes, result.aux.contribution),
            ),
        )
