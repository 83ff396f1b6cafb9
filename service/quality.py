"""The bundle's explanation-quality report (``quality/quality.json``, written by ``training.quality``), read once.

A bundle built from a manifest whose test split has lesion masks carries the
report; ``meta.json`` ``metrics.explanation_quality.report`` names its file.
Older bundles, and builds without lesion masks, have none: :func:`load_quality`
then gives a :class:`BundleQuality` without a report, and ``GET /quality``
answers 404 ``no_quality_report``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from deepminer.bundle import Bundle, BundleError
from service.errors import NoQualityReportError

QUALITY_DIR = "quality"
QUALITY_JSON = f"{QUALITY_DIR}/quality.json"
"""Where the build writes the report when ``meta.json`` does not name it."""
QUALITY_FIGURE = f"{QUALITY_DIR}/worst_cases.png"
"""The grid of missed images (CAM of the true class, lesion outlined); only when the report has misses."""
PER_IMAGE = "per_image"
REQUIRED_FIGURES = (
    "images",
    "lesion_images",
    "normal_images",
    "auc",
    "predicted",
    "pointing_game",
    "concept_naming",
    "background",
)
MAKE_ONE = (
    "`python -m training quality --bundle DIR --manifest CSV` writes one beside the bundle; a build whose test "
    "split has lesion masks puts one in the bundle"
)
"""How to get a report, for the messages that say a bundle has none."""


@dataclass(frozen=True)
class QualityReport:
    """One bundle's report: its figures (all of ``quality.json`` but ``per_image``), the per-image rows, the figure."""

    path: str
    """Bundle-relative path of ``quality.json``."""
    figures: Mapping[str, Any]
    per_image: tuple[Mapping[str, Any], ...]
    figure: str | None
    """Bundle-relative path of the worst-case PNG, or None when the bundle lists none."""


@dataclass(frozen=True)
class BundleQuality:
    """The loaded bundle's report, or its absence; built once at start-up by :func:`load_quality`."""

    model_id: str
    bundle_hash: str
    report: QualityReport | None

    def require(self) -> QualityReport:
        """The report, or :class:`NoQualityReportError` when the bundle has none."""
        if self.report is None:
            raise NoQualityReportError(
                f"bundle {self.model_id} has no explanation-quality report ({QUALITY_JSON}); {MAKE_ONE}"
            )
        return self.report


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None: JSON has no such numbers, and they mean "undefined"."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def report_path(bundle: Bundle) -> str | None:
    """The report's path in the bundle: the one ``meta.json`` names, else :data:`QUALITY_JSON` if listed, else None."""
    section = bundle.meta.get("metrics", {}).get("explanation_quality")
    named = section.get("report") if isinstance(section, dict) else None
    if isinstance(named, str) and named:
        if not bundle.has(named):
            raise BundleError(
                f"{bundle.root}/meta.json: metrics.explanation_quality.report names {named!r}, which the bundle "
                "does not list; rebuild the bundle"
            )
        return named
    return QUALITY_JSON if bundle.has(QUALITY_JSON) else None


def load_quality(bundle: Bundle) -> BundleQuality:
    """Read the bundle's report once (the bundle is verified and immutable); ``report`` is None when it has none.

    Raises :class:`BundleError` naming the file when the report is not a JSON
    object holding every figure of :data:`REQUIRED_FIGURES`.
    """
    name = report_path(bundle)
    if name is None:
        return BundleQuality(model_id=bundle.id, bundle_hash=bundle.hash, report=None)
    try:
        data = json.loads(bundle.path(name).read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"{bundle.root}/{name}: not a readable JSON report ({exc}); rebuild the bundle") from None
    if not isinstance(data, dict):
        raise BundleError(f"{bundle.root}/{name}: the report must be a JSON object, got {type(data).__name__}")
    missing = [key for key in REQUIRED_FIGURES if key not in data]
    if missing:
        raise BundleError(f"{bundle.root}/{name}: the report lacks {', '.join(missing)}; rebuild the bundle")
    rows = data.pop(PER_IMAGE, [])
    if not isinstance(rows, list):
        raise BundleError(f"{bundle.root}/{name}: per_image must be a list, got {type(rows).__name__}")
    figure = QUALITY_FIGURE if bundle.has(QUALITY_FIGURE) else None
    report = QualityReport(
        path=name, figures=MappingProxyType(_finite(data)), per_image=tuple(_finite(rows)), figure=figure
    )
    return BundleQuality(model_id=bundle.id, bundle_hash=bundle.hash, report=report)
