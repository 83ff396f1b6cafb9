"""The unit catalogue: the bundle's unit rankings joined with the unit-label store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from annotations import AnnotationRecord, AnnotationStore, NewAnnotation, load_annotation_rows
from deepminer.bundle import CONCEPT_LABELS_FILE, Bundle, BundleError
from service.errors import UnknownUnitError


@dataclass(frozen=True)
class UnitRanking:
    """What the bundle's ranking says about one unit; empty mappings when no class ranks it."""

    unit_id: int
    threshold: float
    ranks: Mapping[str, int]
    counts: Mapping[str, int]
    mean_influence: Mapping[str, float]


@dataclass(frozen=True)
class UnitInfo:
    """A unit's ranking and its current annotations (latest version per annotator, this bundle only)."""

    ranking: UnitRanking
    annotations: tuple[AnnotationRecord, ...]


@dataclass(frozen=True)
class ClassCoverage:
    """Share of all per-image top-n slots of a class that its ranked units fill."""

    coverage: float
    slots_total: int
    ranked_units: int


@dataclass(frozen=True)
class UnitOverview:
    """The ranked units of every class, with the ranking's parameters."""

    model_id: str
    bundle_hash: str
    classes: tuple[str, ...]
    num_units: int
    num_images: int
    top_per_image: int
    top_per_class: int
    threshold_quantile: float
    coverage: Mapping[str, ClassCoverage]
    units: tuple[UnitInfo, ...]


class UnitCatalog:
    """Reads rankings from the bundle and annotations from the store; writes expert annotations.

    Unit ids are 0-based layer4 indices; an id outside ``[0, num_units)`` raises
    :class:`UnknownUnitError`. Store methods are blocking: call them from a worker thread.
    """

    def __init__(self, *, bundle: Bundle, store: AnnotationStore) -> None:
        self.bundle = bundle
        self.store = store
        self.num_units = bundle.num_units
        self._rankings = bundle.rankings
        self._by_unit = _index_rankings(self._rankings, bundle)

    def check(self, unit_id: int) -> int:
        """``unit_id`` if it names a unit of the loaded model, else :class:`UnknownUnitError`."""
        if not 0 <= unit_id < self.num_units:
            raise UnknownUnitError(
                f"unit {unit_id} does not exist: {self.bundle.meta['model'].get('layer', 'layer4')} of "
                f"{self.bundle.id} has units 0 to {self.num_units - 1}",
                field="unit_id",
            )
        return unit_id

    def ranking(self, unit_id: int) -> UnitRanking:
        """The ranking entry of one unit (unranked units have empty ranks)."""
        self.check(unit_id)
        return self._by_unit.get(unit_id) or UnitRanking(
            unit_id=unit_id,
            threshold=self._threshold(unit_id),
            ranks=MappingProxyType({}),
            counts=MappingProxyType({}),
            mean_influence=MappingProxyType({}),
        )

    def overview(self) -> UnitOverview:
        """Every ranked unit (the union over classes), best rank first, with its annotations."""
        ranked = sorted(
            self._by_unit.values(), key=lambda r: (min(r.ranks.values()), -sum(r.counts.values()), r.unit_id)
        )
        labels = self.annotations_for([r.unit_id for r in ranked])
        per_class = self._rankings["per_class"]
        return UnitOverview(
            model_id=self.bundle.id,
            bundle_hash=self.bundle.hash,
            classes=tuple(self.bundle.classes),
            num_units=self.num_units,
            num_images=int(self._rankings.get("num_images", 0)),
            top_per_image=int(self._rankings.get("top_per_image", 0)),
            top_per_class=int(self._rankings.get("top_per_class", 0)),
            threshold_quantile=float(self._rankings.get("threshold_quantile", 0.0)),
            coverage=MappingProxyType(
                {
                    name: ClassCoverage(
                        coverage=float(entry["coverage"]),
                        slots_total=int(entry["slots_total"]),
                        ranked_units=len(entry["units"]),
                    )
                    for name, entry in per_class.items()
                }
            ),
            units=tuple(UnitInfo(ranking=r, annotations=labels[r.unit_id]) for r in ranked),
        )

    def unit(self, unit_id: int) -> UnitInfo:
        """One unit, ranked or not, with its current annotations."""
        ranking = self.ranking(unit_id)
        return UnitInfo(ranking=ranking, annotations=self.annotations_for([unit_id])[unit_id])

    def annotations_for(self, unit_ids: Sequence[int]) -> dict[int, tuple[AnnotationRecord, ...]]:
        """Latest annotation per annotator of each unit, keeping only those made under the loaded bundle.

        Unit ids index a particular network's layer4, so a label recorded under
        another bundle describes a different unit and is not shown here
        (``/units/{id}/history`` still lists it).
        """
        latest = self.store.latest_for_units(unit_ids=list(unit_ids))
        return {
            unit_id: tuple(r for r in records if r.bundle_hash == self.bundle.hash)
            for unit_id, records in latest.items()
        }

    def annotate(
        self,
        unit_id: int,
        *,
        annotator: str,
        label: str,
        category: str,
        cancer_association: str = "unsure",
        recognizable: bool | None = None,
        phenomena: str | None = None,
        description: str = "",
    ) -> AnnotationRecord:
        """Store the next version of ``annotator``'s expert label for ``unit_id`` under the loaded bundle."""
        self.check(unit_id)
        return self.store.add(
            unit_id=unit_id,
            annotator=annotator,
            label=label,
            category=category,
            cancer_association=cancer_association,
            recognizable=recognizable,
            phenomena=phenomena,
            description=description,
            bundle_hash=self.bundle.hash,
            source="expert",
        )

    def history(self, unit_id: int) -> list[AnnotationRecord]:
        """Every stored version of every annotator's label for ``unit_id``, oldest first, all bundles."""
        return self.store.history(unit_id=self.check(unit_id))

    def seed_automatic_labels(self) -> int:
        """Store the bundle's ``concept_labels.json`` once per (annotator, bundle); returns how many were added.

        Skipped per annotator when that annotator already labelled units under
        this bundle, so restarts (and a second replica) do not add versions.
        """
        if not self.bundle.has(CONCEPT_LABELS_FILE):
            return 0
        try:
            rows = load_annotation_rows(
                self.bundle.path(CONCEPT_LABELS_FILE), fmt="json", bundle_hash=self.bundle.hash, source="automatic"
            )
        except ValueError as exc:  # AnnotationValidationError is a ValueError too
            raise BundleError(f"{self.bundle.path(CONCEPT_LABELS_FILE)}: {exc}") from exc
        by_annotator: dict[str, list[NewAnnotation]] = {}
        for row in rows:
            by_annotator.setdefault(row.annotator, []).append(row)
        added = 0
        for annotator, items in by_annotator.items():
            if self.store.has_annotations(annotator=annotator, bundle_hash=self.bundle.hash):
                continue
            self.store.add_many(items)
            added += len(items)
        return added

    def _threshold(self, unit_id: int) -> float:
        return float(self._rankings["unit_thresholds"][unit_id])


def _index_rankings(rankings: Mapping[str, Any], bundle: Bundle) -> dict[int, UnitRanking]:
    """Per-unit view of ``rankings.json``; a malformed file is a :class:`BundleError`."""
    where = bundle.root / "rankings.json"
    try:
        thresholds = [float(t) for t in rankings["unit_thresholds"]]
        per_class: Mapping[str, Any] = rankings["per_class"]
        entries: dict[int, dict[str, dict[str, Any]]] = {}
        for name in bundle.classes:
            for unit in per_class[name]["units"]:
                entries.setdefault(int(unit["unit_id"]), {})[name] = unit
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{where} is malformed ({exc.__class__.__name__}: {exc}); rebuild the bundle") from exc
    if len(thresholds) != bundle.num_units:
        raise BundleError(f"{where} has {len(thresholds)} unit_thresholds, the model has {bundle.num_units} units")
    bad = [u for u in entries if not 0 <= u < bundle.num_units]
    if bad:
        raise BundleError(f"{where} ranks unit ids outside [0, {bundle.num_units}): {bad[:5]}")
    return {
        unit_id: UnitRanking(
            unit_id=unit_id,
            threshold=thresholds[unit_id],
            ranks=MappingProxyType({c: int(e["rank"]) for c, e in by_class.items()}),
            counts=MappingProxyType({c: int(e["count"]) for c, e in by_class.items()}),
            mean_influence=MappingProxyType({c: float(e["mean_influence"]) for c, e in by_class.items()}),
        )
        for unit_id, by_class in entries.items()
    }
