"""The HTTP contract of ``/dicomweb/explain``: the request by UIDs and a compact answer.

The answer summarises the explanation (classes, image-level scores, the named
units of ``/explain``'s ``explanation``, the top units) rather than repeating
``/explain``'s maps: the full result is in the PACS, as DICOM, next to the image.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.pacs.service import PacsExplanation
from service.schemas import ExplanationOut, by_class

UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"
Uid = Annotated[str, Field(min_length=1, max_length=64, pattern=UID_PATTERN, examples=["1.2.840.113619.2.55.3.42"])]


class DicomWebExplainRequest(BaseModel):
    """Which instance to explain, and whether to store the results in its study."""

    model_config = ConfigDict(extra="forbid")

    study_uid: Uid = Field(description="Study Instance UID of the image.")
    series_uid: Uid = Field(description="Series Instance UID of the image.")
    sop_uid: Uid = Field(description="SOP Instance UID of the image.")
    store_results: bool | None = Field(
        default=None,
        description="Store the SR, Secondary Capture and GSPS in the study (STOW-RS); default: the "
        "dicomweb_store_results setting.",
    )
    class_name: str | None = Field(
        default=None, description="Class to explain (one of the model's classes); default: the predicted class."
    )
    top_k: int | None = Field(
        default=None, ge=1, description="How many units to explain (1 to max_top_k); default: the top_k setting."
    )


class ModelSummary(BaseModel):
    """The model that explained the image; its name and hash are in every DICOM result."""

    id: str = Field(description="Bundle id, `name@<12 hex digits of the hash>`.")
    hash: str = Field(description="The bundle's full sha256: the model version written into the DICOM results.")
    architecture: str


class UnitSummary(BaseModel):
    """One of the top units, with its labels of this model bundle."""

    unit_id: int = Field(description="0-based index into layer4.")
    rank: int
    influence: float = Field(description="`max_xy A_k(x, y) * w_ck` for the explained class.")
    labels: list[str] = Field(
        description=(
            "The unit's labels made under this model bundle that name a phenomenon, expert or automatic (latest "
            "version per annotator); empty if none. `explanation` says which of them explain the image (the SR's)."
        )
    )


class StoredObject(BaseModel):
    """One DICOM result stored in the source study."""

    kind: Literal["sr", "secondary_capture", "presentation_state"] = Field(
        description="`sr`: Comprehensive SR (TID 1500); `secondary_capture`: burned-in CAM overlay; "
        "`presentation_state`: Grayscale Softcopy Presentation State outlining the high-CAM region."
    )
    sop_class_uid: str
    series_instance_uid: str = Field(description="A new series in the source study.")
    sop_instance_uid: str
    retrieve_url: str | None = Field(description="WADO-RS URL the PACS reported for it, if any.")


class DicomWebExplainResponse(BaseModel):
    """What was explained, the classification and its named units, and the DICOM results stored in the study."""

    study_uid: str
    series_uid: str
    sop_uid: str
    model: ModelSummary
    predicted_class: str = Field(description="The argmax of `scores`.")
    explained_class: str
    scores: dict[str, float] = Field(
        description="Image-level score of each class under `score_rule`, as in /explain (the values in the SR)."
    )
    score_rule: str = Field(
        description="The model bundle's rule for `scores` (`breast_peak`, `patch_peak`, `worst_patch` or `classifier`)."
    )
    classifier_probabilities: dict[str, float] = Field(
        description="Softmax of the spatial mean of the FCN's logit map: the exact patch-classifier equivalent."
    )
    explanation: ExplanationOut = Field(
        description="As in /explain: up to five labelled units among the top eight; the SR names exactly these."
    )
    units: list[UnitSummary] = Field(description="The top units for the explained class, by influence.")
    stored: list[StoredObject] = Field(description="The results stored in the study; empty unless store_results.")
    timings_ms: dict[str, float] = Field(
        description=(
            "retrieve (WADO-RS), the explanation's stages, dicom (writing the results), store (STOW-RS, then the "
            "QIDO-RS search that checks the study holds every result), total."
        )
    )

    @classmethod
    def from_explanation(cls, explanation: PacsExplanation) -> DicomWebExplainResponse:
        result = explanation.result
        return cls(
            study_uid=explanation.study_uid,
            series_uid=explanation.series_uid,
            sop_uid=explanation.sop_uid,
            model=ModelSummary.model_validate(result.model, from_attributes=True),
            predicted_class=result.predicted_class,
            explained_class=result.explained_class,
            scores=by_class(result.classes, result.scores),
            score_rule=result.score_rule,
            classifier_probabilities=by_class(result.classes, result.classifier_probabilities),
            explanation=ExplanationOut.from_explanation(result.explanation),
            units=[
                UnitSummary(
                    unit_id=unit.unit_id,
                    rank=unit.rank,
                    influence=unit.influence,
                    labels=[record.label for record in unit.annotations if record.bundle_hash == result.model.hash],
                )
                for unit in result.units
            ],
            stored=[StoredObject.model_validate(s, from_attributes=True) for s in explanation.stored],
            timings_ms={stage: round(ms, 3) for stage, ms in explanation.timings_ms.items()},
        )
