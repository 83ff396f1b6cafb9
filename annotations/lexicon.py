"""Controlled vocabularies of the expert survey.

Each vocabulary is a ``Literal`` type, for typed callers and for enums in the
HTTP schema, plus the tuple of its values, derived from the type so the two
cannot drift apart.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

Category = Literal[
    "Mass",
    "Calcification",
    "Architectural distortion",
    "Asymmetry",
    "Associated features",
    "Normal tissue / anatomy",
    "Other",
]
"""BI-RADS lexicon category of a unit's label."""

CancerAssociation = Literal["yes", "no", "unsure"]
"""Answer to "Are they associated with breast cancer?"."""

Phenomena = Literal["single", "several"]
"""Answer to "Is there a single phenomenon or several?"."""

Source = Literal["expert", "automatic"]
"""Who produced a label: a person, or a procedure named by the annotator field."""

CATEGORIES: Final[tuple[str, ...]] = get_args(Category)
CANCER_ASSOCIATIONS: Final[tuple[str, ...]] = get_args(CancerAssociation)
PHENOMENA: Final[tuple[str, ...]] = get_args(Phenomena)
SOURCES: Final[tuple[str, ...]] = get_args(Source)

MAX_LABEL_LENGTH: Final = 120
MAX_ANNOTATOR_LENGTH: Final = 200
MAX_DESCRIPTION_LENGTH: Final = 10_000
MAX_UNIT_ID: Final = 2**31 - 1
"""Unit ids are stored as 32-bit integers; ResNet layer4 has at most 2048 units."""
