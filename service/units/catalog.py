"""The unit catalogue: the bundle's unit rankings joined with the unit-label store, and expert label writes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from annotations import AnnotationRecord, AnnotationStore, AnnotationValidationError, names_phenomenon
from deepminer.bundle import Bundle
from service.errors import InvalidParameterError, UnknownUnitError
from service.units.labels import LabelWrite, UnitAnnotation, Written, unit_etag
from service.units.rankings import ClassCoverage, UnitRanking, class_coverage, index_rankings

EtagPrecondition = Callable[[str], None]
"""Called with a unit's ETag under the store's writer lock; whatever it raises aborts the write."""


@dataclass(frozen=True)
class UnitInfo:
    """A unit's ranking, its latest annotation per annotator (any bundle, flagged) and its ETag."""

    ranking: UnitRanking
    annotations: tuple[UnitAnnotation, ...]
    etag: str


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
        self._by_unit = index_rankings(self._rankings, bundle)
        self.thresholds = np.asarray(self._rankings["unit_thresholds"], dtype=np.float32)
        """Each unit's activation threshold (the ranking's quantile over whole mammograms), shape ``(K,)``."""

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
        return self._by_unit.get(unit_id) or UnitRanking.unranked(
            unit_id, float(self._rankings["unit_thresholds"][unit_id])
        )

    def overview(self) -> UnitOverview:
        """Every ranked unit (the union over classes), best rank first, with its annotations."""
        ranked = sorted(
            self._by_unit.values(), key=lambda r: (min(r.ranks.values()), -sum(r.counts.values()), r.unit_id)
        )
        labels = self.annotations_for([r.unit_id for r in ranked])
        return UnitOverview(
            model_id=self.bundle.id,
            bundle_hash=self.bundle.hash,
            classes=tuple(self.bundle.classes),
            num_units=self.num_units,
            num_images=int(self._rankings.get("num_images", 0)),
            top_per_image=int(self._rankings.get("top_per_image", 0)),
            top_per_class=int(self._rankings.get("top_per_class", 0)),
            threshold_quantile=float(self._rankings.get("threshold_quantile", 0.0)),
            coverage=class_coverage(self._rankings),
            units=tuple(self._info(r, labels[r.unit_id]) for r in ranked),
        )

    def unit(self, unit_id: int) -> UnitInfo:
        """One unit, ranked or not, with its current annotations and ETag."""
        ranking = self.ranking(unit_id)
        return self._info(ranking, self.annotations_for([unit_id])[unit_id])

    def annotations_for(
        self, unit_ids: Sequence[int], *, naming_only: bool = False
    ) -> dict[int, tuple[UnitAnnotation, ...]]:
        """Latest annotation per annotator of each unit, under any bundle, flagged ``current_bundle``.

        ``naming_only``: leave out annotations answered "not recognisable"
        (:func:`annotations.names_phenomenon`), for whatever describes an
        image with them (an explanation, a region query, the DICOM SR); the
        survey and ``/units`` show every annotation.
        """
        latest = self.store.latest_for_units(unit_ids=list(unit_ids))
        return {
            unit_id: tuple(self._flag(r) for r in records if not naming_only or names_phenomenon(r))
            for unit_id, records in latest.items()
        }

    def current_labels(self) -> dict[int, tuple[UnitAnnotation, ...]]:
        """Every labelled unit's latest annotation per annotator made under the loaded bundle that names a
        phenomenon (so "not recognisable" answers never enter a label report)."""
        labelled = {
            unit_id: tuple(r for r in records if r.current_bundle and names_phenomenon(r))
            for unit_id, records in self.all_labels().items()
        }
        return {unit_id: records for unit_id, records in labelled.items() if records}

    def all_labels(self) -> dict[int, tuple[UnitAnnotation, ...]]:
        """:meth:`annotations_for` of every labelled unit of the layer, in one query without an id list."""
        labelled: dict[int, list[UnitAnnotation]] = {}
        for record in self.store.all_latest():
            if record.unit_id < self.num_units:
                labelled.setdefault(record.unit_id, []).append(self._flag(record))
        return {unit_id: tuple(records) for unit_id, records in labelled.items()}

    def annotate(self, write: LabelWrite, *, precondition: EtagPrecondition | None = None) -> Written:
        """Store the next version of an annotator's expert label for a unit under the loaded bundle.

        ``precondition``, when given, is called with the unit's ETag as it
        stands at the moment of writing (under the store's writer lock, so no
        other write can slip in between); whatever it raises aborts the write
        and nothing is stored. Returns the record and the unit's new ETag.
        """
        unit_id = self.check(write.unit_id)
        before: list[AnnotationRecord] = []

        def check_etag(latest: Mapping[int, list[AnnotationRecord]]) -> None:
            before[:] = latest[unit_id]
            if precondition is not None:
                precondition(unit_etag(self.bundle.hash, unit_id, before))

        (record,) = self.store.add_many([write.under(self.bundle.hash)], precondition=check_etag)
        # Writers are serialised, so the state right after this write is the state the check saw plus it.
        after = [r for r in before if r.annotator != record.annotator] + [record]
        return Written(record=self._flag(record), etag=unit_etag(self.bundle.hash, unit_id, after))

    def annotate_many(self, writes: Sequence[LabelWrite]) -> list[UnitAnnotation]:
        """Store every label in one transaction, all or nothing, under the loaded bundle; records in order.

        A bad item is refused before anything is written, its error naming
        ``annotations.<index>.<field>`` (the position in the batch body).
        """
        items = []
        for index, write in enumerate(writes):
            where = f"annotations.{index}"
            if not 0 <= write.unit_id < self.num_units:
                raise InvalidParameterError(
                    f"{where}.unit_id: unit {write.unit_id} does not exist; units are 0 to {self.num_units - 1}",
                    field=f"{where}.unit_id",
                )
            try:
                items.append(write.under(self.bundle.hash))
            except AnnotationValidationError as exc:
                raise AnnotationValidationError(f"{where}.{exc.field}", exc.message) from None
        return [self._flag(r) for r in self.store.add_many(items)]

    def history(self, unit_id: int) -> list[UnitAnnotation]:
        """Every stored version of every annotator's label for ``unit_id``, oldest first, all bundles, flagged."""
        return [self._flag(r) for r in self.store.history(unit_id=self.check(unit_id))]

    def _flag(self, record: AnnotationRecord) -> UnitAnnotation:
        return UnitAnnotation.flag(record, bundle_hash=self.bundle.hash)

    def _info(self, ranking: UnitRanking, annotations: tuple[UnitAnnotation, ...]) -> UnitInfo:
        return UnitInfo(
            ranking=ranking, annotations=annotations, etag=unit_etag(self.bundle.hash, ranking.unit_id, annotations)
        )
