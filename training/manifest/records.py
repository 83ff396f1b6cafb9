"""The manifest's records and vocabulary: columns, findings, images, descriptors and the error it raises."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

COLUMNS: tuple[str, ...] = (
    "image_id",
    "case_id",
    "image_path",
    "view",
    "laterality",
    "finding_id",
    "pathology",
    "concept",
    "lexicon",
    "descriptors",
    "mask_path",
)
PATHOLOGIES: tuple[str, ...] = ("benign", "malignant")
LATERALITIES: tuple[str, ...] = ("L", "R")
# Columns that are all empty on the single row of an image without findings.
FINDING_COLUMNS: tuple[str, ...] = COLUMNS[5:]


class ManifestError(ValueError):
    """A manifest that breaks the contract; the message names file, line and column."""

    def __init__(self, message: str, *, path: Path, line: int | None = None, column: str | None = None) -> None:
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {message}")
        self.message = message
        self.path = path
        self.line = line
        self.column = column

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments defeat the default exception pickling (process pools).
        return (_rebuild_error, (self.message, self.path, self.line, self.column))


def _rebuild_error(message: str, path: Path, line: int | None, column: str | None) -> ManifestError:
    return ManifestError(message, path=path, line=line, column=column)


@dataclass(frozen=True)
class Finding:
    """One mask of an image: a lesion (with pathology) or a concept-only mask."""

    finding_id: str
    pathology: str | None  # "benign" | "malignant" | None (concept-only mask)
    concept: str
    lexicon: str
    descriptors: dict[str, str]
    mask_path: Path  # absolute

    @property
    def is_lesion(self) -> bool:
        """True for benign or malignant findings, False for concept-only masks."""
        return self.pathology is not None


@dataclass(frozen=True)
class ImageRecord:
    """One mammogram with all its findings (lesions and concept masks)."""

    image_id: str
    case_id: str
    image_path: Path  # absolute
    view: str
    laterality: str
    findings: tuple[Finding, ...]
    aux: Mapping[str, float] = field(default_factory=dict)  # the case's auxiliary features, by name

    @property
    def lesions(self) -> tuple[Finding, ...]:
        """The findings that carry a pathology, in manifest order."""
        return tuple(f for f in self.findings if f.is_lesion)

    @property
    def pathology(self) -> str:
        """Image label: "malignant" if any malignant lesion, elif "benign", else "normal"."""
        found = {f.pathology for f in self.lesions}
        if "malignant" in found:
            return "malignant"
        if "benign" in found:
            return "benign"
        return "normal"


def parse_descriptors(text: str) -> dict[str, str]:
    """Parse ``"k1=v1;k2=v2"`` into a dict; raises ValueError on a malformed item."""
    result: dict[str, str] = {}
    for item in text.split(";"):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ValueError(f"descriptor items must be key=value, got {item!r}")
        if key in result:
            raise ValueError(f"descriptor key {key!r} given twice in {text!r}")
        result[key] = value
    return result


def format_descriptors(descriptors: dict[str, str]) -> str:
    """Inverse of :func:`parse_descriptors`; raises ValueError on keys/values it could not round-trip."""
    parts = []
    for key, value in descriptors.items():
        if not key or any(c in key for c in ";=") or ";" in value or key != key.strip():
            raise ValueError(f"descriptor {key!r}={value!r} cannot be written as key=value;...")
        parts.append(f"{key}={value}")
    return ";".join(parts)
