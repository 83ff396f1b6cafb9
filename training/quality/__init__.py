"""Explanation quality on mammograms with lesion masks: do the explanations localise and name what they show?

Every image goes through the FCN as the service explains it: the same
decoding and preprocessing (:mod:`deepminer.imaging`), the same image-level
score (:mod:`deepminer.scoring`), CAM and influence (:mod:`deepminer.formulas`)
and grid mapping (:mod:`deepminer.grid`). Figures:

- **Image-level AUC** per class, one-vs-rest, from the score the service
  returns (``scores``) and, beside it, from the classifier's probabilities
  (softmax of the mean of the logit map); and from the score on the lesion
  images alone, which tells how well it separates benign from malignant.
- **Predicted class**: the share of lesion images predicted as their pathology,
  and of normal images predicted normal.
- **Pointing game** (Zhang et al. 2016), on every image with a lesion,
  explaining its true class: a hit when the centre of the CAM's global-maximum
  cell, mapped to image pixels, lies on a lesion of that class or within
  :data:`POINTING_TOLERANCE_INPUT_PX` network-input pixels of one. Chance is
  the share of the image's cells whose centre would hit.
- **Concept naming**: whether one of the first three *named* units among the
  image's top 8 (by influence for its true class) carries a label naming one of
  its lesions' concepts or their BI-RADS category; and the share of ranked
  units that have a name at all, and of the lesion classes' ranked units that
  are named by a lesion concept.
- **Background**: on normal images, the largest benign and malignant
  probability on cells outside the breast.
- A breakdown per concept and per BI-RADS category: pointing game, concept
  naming and the predicted class.

The figures are computed in :mod:`training.quality.figures`, written as files
by :mod:`training.quality.report`; :mod:`training.quality.command` runs the
report of a built bundle (``python -m training quality``).
"""

from training.quality.command import bundle_quality
from training.quality.figures import (
    DEMO_BARS,
    NAMED_UNITS,
    POINTING_TOLERANCE_INPUT_PX,
    QUALITY_DIR,
    QUALITY_FIGURE,
    QUALITY_JSON,
    QUALITY_MARKDOWN,
    TOP_UNITS,
    QualityReport,
    UnitLabel,
    assess,
    check_bars,
    headline,
    labels_by_unit,
    named_units,
    names_finding,
    one_vs_rest_auc,
    pointing_hit,
    tolerance_image_px,
)
from training.quality.report import markdown, write_report

__all__ = [
    "DEMO_BARS",
    "NAMED_UNITS",
    "POINTING_TOLERANCE_INPUT_PX",
    "QUALITY_DIR",
    "QUALITY_FIGURE",
    "QUALITY_JSON",
    "QUALITY_MARKDOWN",
    "TOP_UNITS",
    "QualityReport",
    "UnitLabel",
    "assess",
    "bundle_quality",
    "check_bars",
    "headline",
    "labels_by_unit",
    "markdown",
    "named_units",
    "names_finding",
    "one_vs_rest_auc",
    "pointing_hit",
    "tolerance_image_px",
    "write_report",
]
