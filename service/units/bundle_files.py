"""What the bundle shows about units beyond the ranking: visualisations (``units/index.json``) and their PNGs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepminer.bundle import SUSPICIOUS_DIR, UNITS_DIR, UNITS_INDEX_FILE, Bundle
from service.errors import NotInBundleError
from service.quality import QUALITY_DIR

VISUALISATION_SUFFIX = ".png"


@dataclass(frozen=True)
class BundleFile:
    """A PNG of the loaded bundle that pages show (unit visualisation, quality figure) and its meta.json sha256."""

    path: Path
    sha256: str


def visualisation_entry(bundle: Bundle, unit_id: int) -> Mapping[str, Any]:
    """The ``units/index.json`` entry of a unit (its top patches), or :class:`NotInBundleError`."""
    index = bundle.unit_index
    if index is None:
        raise NotInBundleError(
            f"bundle {bundle.id} has no unit visualisations ({UNITS_INDEX_FILE}); rebuild it with `python -m training`"
        )
    entry: Mapping[str, Any] | None = index.get(str(unit_id))
    if entry is None:
        raise NotInBundleError(
            f"unit {unit_id} has no visualisation in bundle {bundle.id}: only its {len(index)} ranked units are "
            "visualised",
            field="unit_id",
        )
    return entry


def find_bundle_file(bundle: Bundle, name: str) -> BundleFile:
    """A PNG of the bundle that pages show; else :class:`NotInBundleError`.

    Served: a unit visualisation (a path listed in meta.json under
    ``units/``), a suspicious patch's mammogram (listed, under ``suspicious/``)
    or an explanation-quality figure (listed, directly under ``quality/``). Only listed names are served, so no other file, and
    nothing outside the bundle directory, can be reached; the resolved path
    is checked as well in case a link was planted after the bundle was verified.
    """
    listed = bundle.meta["files"]
    parts = name.split("/")
    allowed = (
        (parts[0] in (UNITS_DIR, SUSPICIOUS_DIR) or (parts[0] == QUALITY_DIR and len(parts) == 2))
        and name.endswith(VISUALISATION_SUFFIX)
        and not any(part in ("", ".", "..") or "\\" in part for part in parts)
        and name in listed
    )
    root = bundle.root.resolve()
    path = (root / name).resolve() if allowed else root
    if not (allowed and path.is_relative_to(root) and path.is_file()):
        raise NotInBundleError(
            f"bundle {bundle.id} has no unit visualisation or quality figure {name[:200]!r}; paths come "
            "from GET /units/{unit_id}/visualisation and GET /quality",
            field="path",
        )
    return BundleFile(path=path, sha256=str(listed[name]))
