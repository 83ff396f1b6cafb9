"""The loaded bundle's explanation-quality report."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.quality import BundleQuality

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
    score_among_lesion_images: dict[str, float | None] | None = Field(
        default=None,
        description="From the image-level score, on the lesion images only, per lesion class: how well the score "
        "tells benign from malignant, which the AUCs over every image mix with lesion against normal. Absent from "
        "reports written before it was added.",
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
    peak_offset_input_px: dict[str, Any] | None = Field(
        default=None,
        description="Median over lesion images of the CAM peak cell's centre minus the centre of the nearest lesion "
        "of the true class, in network-input pixels: `down`, `right` (and `definition`). A systematic lean of the "
        "CAM shows here. Absent from reports written before it was added.",
    )


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
    """The pointing game, concept naming and predicted class on the lesion images of one concept or BI-RADS
    category."""

    model_config = _OPEN

    images: int
    pointing_game: float | None = Field(description="Hit rate of the pointing game on these images.")
    concept_named: float | None = Field(description="Share of these images named by a correct concept.")
    predicted_as_pathology: float | None = Field(
        default=None,
        description="Share of these images whose predicted class is their pathology; absent from reports written "
        "before it was added.",
    )


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
    def from_report(cls, quality: BundleQuality, *, per_image: bool, url: Callable[[str], str]) -> QualityResponse:
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
