"""The paper's explanation of one image: up to five labelled units among the eight most influential.

DeepMiner explains a prediction as its authors showed it to experts: "among the
top eight units, print up to five that have been annotated". A unit counts when
it carries a label that

- was made under the loaded model bundle (unit ids index one network's layer4,
  so a label made under another bundle may describe a different unit);
- names a phenomenon (:func:`annotations.names_phenomenon`: an expert who
  answered "not recognisable" named nothing);
- comes from an expert, or from an automatic procedure when the caller admits
  automatic labels (``DEEPMINER_EXPLAIN_AUTOMATIC_LABELS``); those stay flagged.

Each unit gets one sentence built from its labels, e.g. ``Unit 1813 (influence
4.2, rank 1): 'Spiculated mass margin' — Mass; associated with cancer (2 of 2
experts)``. The same units and labels go to ``/explain``, ``/dicomweb/explain``
and the DICOM SR.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from annotations import AnnotationRecord, names_phenomenon

CONSIDERED_UNITS: Final = 8
"""The paper looks at the top eight units by influence..."""
MAX_NAMED_UNITS: Final = 5
"""...and prints up to five of them that are labelled."""

EXPERT: Final = "expert"
AUTOMATIC: Final = "automatic"

_ASSOCIATION_TEXT: Final = {
    "yes": "associated with cancer",
    "no": "not associated with cancer",
    "unsure": "association with cancer unsure",
}


class RankedUnit(Protocol):
    """What the explanation needs of one ranked unit (:class:`service.explainer.UnitExplanation` has it)."""

    @property
    def unit_id(self) -> int: ...
    @property
    def rank(self) -> int: ...
    @property
    def influence(self) -> float: ...
    @property
    def max_activation(self) -> float: ...
    @property
    def weight(self) -> float: ...
    @property
    def annotations(self) -> Sequence[AnnotationRecord]: ...


@dataclass(frozen=True)
class NamedLabel:
    """One label of a unit in the explanation: the annotators who gave it, merged.

    Labels merge when their text (ignoring case), category, cancer association
    and kind (expert or automatic) agree; ``label`` keeps the first spelling.
    """

    label: str
    category: str
    cancer_association: str
    annotators: int  # how many annotators' latest label this is
    automatic: bool
    annotation_ids: tuple[int, ...]  # their ids in the unit-label store, oldest first


@dataclass(frozen=True)
class NamedUnit:
    """A unit the explanation names, with its labels and its sentence."""

    unit_id: int  # 0-based layer4 index
    rank: int  # 1-based among all units by influence on the explained class
    influence: float
    max_activation: float
    weight: float
    experts: int  # experts whose current label of the unit counts
    labels: tuple[NamedLabel, ...]  # expert labels first, most annotators first
    text: str


@dataclass(frozen=True)
class Explanation:
    """The labelled units among the ``considered`` most influential ones, most influential first."""

    considered: int
    max_units: int
    sources: tuple[str, ...]  # label sources admitted: ("expert",) or ("expert", "automatic")
    units: tuple[NamedUnit, ...]
    labels_available: bool  # False: the unit-label store could not be read, so no unit could be named


def admitted_sources(include_automatic: bool) -> tuple[str, ...]:
    """The label sources an explanation admits: experts always, automatic procedures when allowed."""
    return (EXPERT, AUTOMATIC) if include_automatic else (EXPERT,)


def build_explanation(
    ranked: Sequence[RankedUnit], *, bundle_hash: str, include_automatic: bool = False, labels_available: bool = True
) -> Explanation:
    """Up to :data:`MAX_NAMED_UNITS` units among the first :data:`CONSIDERED_UNITS` of ``ranked`` that are labelled.

    ``ranked``: the explained class's units, most influential first, each with
    its latest annotation per annotator (any bundle, any answer; this function
    applies the rules above). Fewer than eight are fine for a layer that has
    fewer units; ``ValueError`` when ``ranked`` is not in order of rank.
    ``labels_available=False`` says the labels could not be read (the units then
    carry none), so that no reader takes "no unit named" for "no unit labelled".
    """
    ranks = [u.rank for u in ranked]
    if ranks != sorted(ranks) or len(set(ranks)) != len(ranks):
        raise ValueError(f"ranked units must come in increasing rank order; got ranks {ranks[:20]}")
    sources = admitted_sources(include_automatic)
    considered = ranked[:CONSIDERED_UNITS]
    named: list[NamedUnit] = []
    for unit in considered:
        admitted = [
            a
            for a in unit.annotations
            if a.bundle_hash == bundle_hash and a.source in sources and names_phenomenon(a)
        ]
        if not admitted:
            continue
        experts = len({a.annotator for a in admitted if a.source == EXPERT})
        labels = _merge(admitted)
        named.append(
            NamedUnit(
                unit_id=int(unit.unit_id),
                rank=int(unit.rank),
                influence=float(unit.influence),
                max_activation=float(unit.max_activation),
                weight=float(unit.weight),
                experts=experts,
                labels=labels,
                text=unit_sentence(unit.unit_id, unit.rank, unit.influence, labels, experts=experts),
            )
        )
        if len(named) == MAX_NAMED_UNITS:
            break
    return Explanation(
        considered=len(considered),
        max_units=MAX_NAMED_UNITS,
        sources=sources,
        units=tuple(named),
        labels_available=labels_available,
    )


def _merge(annotations: Sequence[AnnotationRecord]) -> tuple[NamedLabel, ...]:
    """The distinct labels of one unit's admitted annotations; expert first, then most annotators, then oldest."""
    groups: dict[tuple[str, str, str, bool], list[AnnotationRecord]] = {}
    for a in sorted(annotations, key=lambda a: a.id):
        key = (a.label.casefold(), a.category, a.cancer_association, a.source == AUTOMATIC)
        groups.setdefault(key, []).append(a)
    labels = [
        NamedLabel(
            label=group[0].label,
            category=group[0].category,
            cancer_association=group[0].cancer_association,
            annotators=len({a.annotator for a in group}),
            automatic=automatic,
            annotation_ids=tuple(a.id for a in group),
        )
        for (_, _, _, automatic), group in groups.items()
    ]
    return tuple(sorted(labels, key=lambda label: (label.automatic, -label.annotators, label.annotation_ids[0])))


def label_phrase(label: NamedLabel, *, experts: int) -> str:
    """``'Spiculated mass margin' — Mass; associated with cancer (2 of 2 experts)``, or ``(automatic label)``."""
    who = (
        "automatic label"
        if label.automatic
        else f"{label.annotators} of {experts} expert{'' if experts == 1 else 's'}"
    )
    return f"'{label.label}' — {label.category}; {_ASSOCIATION_TEXT[label.cancer_association]} ({who})"


def unit_sentence(
    unit_id: int, rank: int, influence: float, labels: Sequence[NamedLabel], *, experts: int
) -> str:
    """``Unit 1813 (influence 4.2, rank 1): 'Spiculated mass margin' — Mass; ... (2 of 2 experts)``.

    Several labels are joined by `` / ``; the influence has three significant digits.
    """
    if not labels:
        raise ValueError(f"a sentence needs at least one label; unit {unit_id} got none")
    phrases = " / ".join(label_phrase(label, experts=experts) for label in labels)
    return f"Unit {unit_id} (influence {influence:.3g}, rank {rank}): {phrases}"
