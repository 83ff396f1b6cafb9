"""Plain values that cross the store boundary: nothing outside the store sees ORM objects."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Final

from annotations import lexicon
from annotations.validation import (
    check_choice,
    check_optional_bool,
    check_optional_choice,
    check_sha256,
    check_text,
    check_unit_id,
)


@dataclass(frozen=True, kw_only=True)
class LabelAnswers:
    """An annotator's answers to the survey about one unit (DESIGN.md §2): the one list of a label's fields.

    :class:`NewAnnotation`, :class:`AnnotationRecord` and the service's label
    writes derive from it; the table's columns are checked against it.
    """

    label: str
    category: str
    cancer_association: str = "unsure"
    recognizable: bool | None = None
    phenomena: str | None = None
    description: str = ""


@dataclass(frozen=True, kw_only=True)
class _UnitLabel(LabelAnswers):
    """The answers with who gave them, for which unit, under which model bundle, from which source."""

    unit_id: int
    annotator: str
    bundle_hash: str
    source: str = "expert"


@dataclass(frozen=True, kw_only=True)
class NewAnnotation(_UnitLabel):
    """One annotation to append, validated and normalised on construction.

    Construction raises :class:`~annotations.errors.AnnotationValidationError`
    naming the field when a value is unacceptable. Text is stripped, and the
    vocabulary fields take their canonical spelling (``"mass"`` becomes
    ``"Mass"``). The store assigns ``version`` and ``created_at``.

    ``label`` may be empty only when ``recognizable`` is False: an expert who
    answers "not recognisable" has nothing to name. Such an annotation never
    names a unit in an explanation (:func:`names_phenomenon`).
    """

    def __post_init__(self) -> None:
        recognizable = check_optional_bool(self.recognizable, field="recognizable")
        normalised = {
            "unit_id": check_unit_id(self.unit_id),
            "annotator": check_text(self.annotator, field="annotator", max_length=lexicon.MAX_ANNOTATOR_LENGTH),
            "label": check_text(
                self.label, field="label", max_length=lexicon.MAX_LABEL_LENGTH, allow_empty=recognizable is False
            ),
            "category": check_choice(self.category, field="category", choices=lexicon.CATEGORIES),
            "bundle_hash": check_sha256(self.bundle_hash),
            "cancer_association": check_choice(
                self.cancer_association, field="cancer_association", choices=lexicon.CANCER_ASSOCIATIONS
            ),
            "recognizable": recognizable,
            "phenomena": check_optional_choice(self.phenomena, field="phenomena", choices=lexicon.PHENOMENA),
            "description": check_text(
                self.description, field="description", max_length=lexicon.MAX_DESCRIPTION_LENGTH, allow_empty=True
            ),
            "source": check_choice(self.source, field="source", choices=lexicon.SOURCES),
        }
        for name, value in normalised.items():
            object.__setattr__(self, name, value)


@dataclass(frozen=True, kw_only=True)
class AnnotationRecord(_UnitLabel):
    """One stored version of one annotator's label for one unit.

    ``id`` orders all writes globally; ``version`` counts 1, 2, 3… per
    (``unit_id``, ``annotator``); ``created_at`` is timezone-aware UTC.
    """

    id: int
    version: int
    created_at: datetime


RECORD_FIELDS: Final = tuple(f.name for f in fields(AnnotationRecord))
"""Every field of a stored annotation; the table's columns have the same names (``annotations.models``)."""


def record_values(stored: object) -> dict[str, Any]:
    """The fields of a stored annotation read from ``stored`` (a table row, or a record to copy), by name."""
    return {name: getattr(stored, name) for name in RECORD_FIELDS}


def names_phenomenon(annotation: NewAnnotation | AnnotationRecord) -> bool:
    """Whether ``annotation`` may name what a unit shows on an image: not answered "not recognisable".

    An expert who says the unit's images show no recognisable phenomenon has
    given no name (the label may be empty), so such an annotation is kept in
    the unit's history and shown in the survey, but never explains an image.
    """
    return annotation.recognizable is not False
