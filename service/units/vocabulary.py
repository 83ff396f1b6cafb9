"""The label vocabulary: every label experts or the build have given units, with its category, for suggestions.

Lu & Perer have groups of units reuse one vocabulary rather than near-duplicate
labels; the pages offer these terms while a label is typed, and still accept a new one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from annotations import names_phenomenon
from service.units.labels import UnitAnnotation


@dataclass(frozen=True)
class LabelTerm:
    """One label with one BI-RADS category, the units whose latest label (per annotator) it is, and where from."""

    label: str
    category: str
    unit_ids: tuple[int, ...]
    current_bundle: bool  # given to some unit under the loaded bundle


def label_vocabulary(labelled: Mapping[int, Iterable[UnitAnnotation]]) -> tuple[LabelTerm, ...]:
    """The distinct (label, category) pairs of ``labelled``'s annotations that name a phenomenon; most units first.

    Answers "not recognisable" carry no label worth reusing, so they are left out.
    """
    units: dict[tuple[str, str], set[int]] = {}
    current: set[tuple[str, str]] = set()
    for unit_id, records in labelled.items():
        for record in records:
            if not names_phenomenon(record):
                continue
            key = (record.label, record.category)
            units.setdefault(key, set()).add(unit_id)
            if record.current_bundle:
                current.add(key)
    terms = [
        LabelTerm(
            label=label, category=category, unit_ids=tuple(sorted(ids)), current_bundle=(label, category) in current
        )
        for (label, category), ids in units.items()
    ]
    return tuple(sorted(terms, key=lambda t: (not t.current_bundle, -len(t.unit_ids), t.label.casefold(), t.category)))
