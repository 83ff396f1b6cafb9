"""Unit labels on the wire: a stored version, a new label, a batch of them and a unit's history."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt

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
from annotations.validation import normalise_text

MAX_BATCH_ANNOTATIONS = 2048
"""Most labels one batch may hold: every unit of a ResNet-152's layer4."""

UnitIndex = Annotated[int, Field(description="0-based layer4 unit index.")]


def _normalised(value: Any) -> Any:
    return normalise_text(value) if isinstance(value, str) else value


LabelText = Annotated[str, BeforeValidator(_normalised)]
"""Text of a label write, in Unicode NFC before its length is checked, so the limit counts the characters stored.

The store refuses control characters and strips the text (``annotations.validation.check_text``).
"""


class AnnotationOut(BaseModel):
    """One stored version of one annotator's label for a unit."""

    id: int = Field(description="Global write order.")
    unit_id: UnitIndex
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

    @classmethod
    def from_records(cls, records: Iterable[AnnotationRecord]) -> list[AnnotationOut]:
        """:meth:`from_record` of each record, in order."""
        return [cls.from_record(record) for record in records]


class AnnotationIn(BaseModel):
    """An expert's label for a unit (the survey of DESIGN.md §2); stored as a new version."""

    model_config = ConfigDict(extra="forbid")

    annotator: LabelText | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_ANNOTATOR_LENGTH,
        description=(
            "Who labels the unit. Required when DEEPMINER_AUTH is off. With a bearer token it defaults to the "
            "token's name, and another name is refused (422) unless the token is an admin's, who may record a "
            "label on an expert's behalf."
        ),
    )
    label: LabelText = Field(
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
    description: LabelText = Field(
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


LatestAnnotations = Annotated[
    list[AnnotationOut],
    Field(description="Latest label per annotator, under any bundle; `current_bundle` flags those of the loaded one."),
]
"""A unit's current labels, as every resource that shows a unit lists them."""
