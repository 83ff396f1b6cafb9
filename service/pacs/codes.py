"""Coded concepts of the SR: standard ones where DICOM has them, else the private scheme ``99DEEPMINER``.

The classes, units, expert labels and the measurements the method defines
(influence, maximum activation) have no standard code. They are coded in a
private scheme, declared in each result's Coding Scheme Identification
Sequence, with the text a reader sees as the code meaning.
"""

from __future__ import annotations

import re

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr.coding import CodedConcept

from service.explanation import NamedLabel

SCHEME = "99DEEPMINER"
CODING_SCHEME = CodingSchemeIdentificationItem(
    designator=SCHEME, name="DeepMiner service concepts", responsible_organization="DeepMiner Service"
)
_MEANING_CHARS = 64  # Code Meaning is LO


def concept(value: str, meaning: str) -> CodedConcept:
    """A concept of the private scheme; meanings longer than Code Meaning allows are shortened with an ellipsis."""
    if len(meaning) > _MEANING_CHARS:
        meaning = meaning[: _MEANING_CHARS - 3].rstrip() + "..."
    return CodedConcept(value=value, scheme_designator=SCHEME, meaning=meaning)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "none"


MAMMOGRAPHY = CodedConcept(value="71651007", scheme_designator="SCT", meaning="Mammography")
NO_UNITS = CodedConcept(value="1", scheme_designator="UCUM", meaning="no units")
RANK_UNIT = CodedConcept(value="{rank}", scheme_designator="UCUM", meaning="rank")

CLASSIFICATION = concept("classification", "Image classification")
PREDICTED_CLASS = concept("predicted-class", "Predicted class")
EXPLAINED_CLASS = concept("explained-class", "Explained class")
NAMED_CONCEPT = concept("named-concept", "Expert-named concept of the unit")
AUTOMATIC_CONCEPT = concept("automatic-concept", "Automatically named concept of the unit")
INFLUENCE = concept("influence", "Unit influence on the explained class")
INFLUENCE_RANK = concept("influence-rank", "Unit rank by influence")
MAX_ACTIVATION = concept("max-activation", "Unit maximum activation")
CLASS_WEIGHT = concept("class-weight", "Unit weight for the explained class")


def class_concept(name: str) -> CodedConcept:
    """One of the model's classes, e.g. ``malignant``."""
    return concept(f"class-{_slug(name)}", name)


def class_score(name: str) -> CodedConcept:
    """The image-level score of a class (:mod:`deepminer.scoring`): it ranks images, it is not a probability."""
    return concept(f"score-{_slug(name)}", f"Image-level score of {name}")


def unit_concept(unit_id: int) -> CodedConcept:
    """A layer4 unit, by its 0-based index."""
    return concept(f"unit-{unit_id}", f"Layer4 unit {unit_id}")


def label_concept(label: NamedLabel) -> CodedConcept:
    """A label of a unit; the code is the id in the unit-label store of the first annotation that gave it."""
    return concept(f"label-{label.annotation_ids[0]}", label.label)


def label_name(label: NamedLabel) -> CodedConcept:
    """What names the label's evaluation: an expert, or an automatic procedure."""
    return AUTOMATIC_CONCEPT if label.automatic else NAMED_CONCEPT


def category_concept(category: str) -> CodedConcept:
    """A BI-RADS lexicon category (Mass, Calcification, ...)."""
    return concept(f"category-{_slug(category)}", category)
