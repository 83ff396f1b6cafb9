"""The unit catalogue: the bundle's unit rankings joined with the unit-label store.

Also what the bundle shows about units beyond the ranking: their visualisations
(``units/index.json`` and its PNGs) and the 2-D embedding.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from annotations import (
    AnnotationRecord,
    AnnotationStore,
    AnnotationValidationError,
    NewAnnotation,
    load_annotation_rows,
    names_phenomenon,
)
from deepminer.bundle import CONCEPT_LABELS_FILE, UNITS_DIR, UNITS_INDEX_FILE, Bundle, BundleError
from service.errors import InvalidParameterError, NotInBundleError, PreconditionFailedError, UnknownUnitError
from service.quality import QUALITY_DIR

_RECORD_FIELDS = tuple(f.name for f in fields(AnnotationRecord))
VISUALISATION_SUFFIX = ".png"


@dataclass(frozen=True)
class UnitRanking:
    """What the bundle's ranking says about one unit; empty mappings when no class ranks it."""

    unit_id: int
    threshold: float
    ranks: Mapping[str, int]
    counts: Mapping[str, int]
    mean_influence: Mapping[str, float]


@dataclass(frozen=True, kw_only=True)
class UnitAnnotation(AnnotationRecord):
    """A stored annotation, flagged with whether it was made under the loaded bundle.

    Unit ids index one network's layer4, so a label made under another bundle
    may describe a different unit. Such labels are shown, so an expert sees
    prior labels, but flagged ``current_bundle=False``; label reports leave them out.
    """

    current_bundle: bool


@dataclass(frozen=True)
class UnitInfo:
    """A unit's ranking, its latest annotation per annotator (any bundle, flagged) and its ETag."""

    ranking: UnitRanking
    annotations: tuple[UnitAnnotation, ...]
    etag: str


@dataclass(frozen=True, kw_only=True)
class LabelWrite:
    """One unit's expert label, as given to :meth:`UnitCatalog.annotate_many`."""

    unit_id: int
    annotator: str
    label: str
    category: str
    cancer_association: str = "unsure"
    recognizable: bool | None = None
    phenomena: str | None = None
    description: str = ""


@dataclass(frozen=True)
class Written:
    """A stored label and the ETag of its unit right after the write."""

    record: UnitAnnotation
    etag: str


@dataclass(frozen=True)
class EmbeddingPoint:
    """One unit in the 2-D embedding, with its latest labels."""

    unit_id: int
    x: float
    y: float
    ranked: bool
    annotations: tuple[UnitAnnotation, ...]


@dataclass(frozen=True)
class UnitEmbedding:
    """The bundle's 2-D PCA of every unit (``embedding.json``) joined with the labels."""

    model_id: str
    bundle_hash: str
    method: str
    num_images: int
    explained_variance_ratio: tuple[float, ...]
    units: tuple[EmbeddingPoint, ...]


@dataclass(frozen=True)
class BundleFile:
    """A PNG of the loaded bundle that pages show (unit visualisation, quality figure) and its meta.json sha256."""

    path: Path
    sha256: str


def unit_etag(bundle_hash: str, unit_id: int, latest: Iterable[AnnotationRecord]) -> str:
    """Strong ETag of ``/units/{id}``: the loaded bundle, the unit and the ids of its latest label per annotator.

    Every write to the unit replaces one annotator's latest id with a new one,
    so the tag changes with every write and with nothing else.
    """
    ids = ",".join(str(i) for i in sorted(r.id for r in latest))
    return '"' + hashlib.sha256(f"{bundle_hash}/{unit_id}/{ids}".encode()).hexdigest()[:32] + '"'


def etag_matches(if_match: str, etag: str) -> bool:
    """``If-Match`` with the strong comparison of RFC 9110: ``*`` or a listed tag equal to ``etag``.

    Weak tags (``W/"…"``) never match, as the RFC requires for If-Match.
    """
    return any(tag.strip() in ("*", etag) for tag in if_match.split(","))


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
            for unit_id, records in self._all_labels().items()
        }
        return {unit_id: records for unit_id, records in labelled.items() if records}

    def _all_labels(self) -> dict[int, tuple[UnitAnnotation, ...]]:
        """:meth:`annotations_for` of every labelled unit of the layer, in one query without an id list."""
        labelled: dict[int, list[UnitAnnotation]] = {}
        for record in self.store.all_latest():
            if record.unit_id < self.num_units:
                labelled.setdefault(record.unit_id, []).append(self._flag(record))
        return {unit_id: tuple(records) for unit_id, records in labelled.items()}

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
        if_match: str | None = None,
    ) -> Written:
        """Store the next version of ``annotator``'s expert label for ``unit_id`` under the loaded bundle.

        With ``if_match``, the write happens only if it matches the unit's ETag
        at the moment of writing (checked under the store's writer lock, so no
        other write can slip in between); otherwise :class:`PreconditionFailedError`
        and nothing is stored. Returns the record and the unit's new ETag.
        """
        self.check(unit_id)
        item = NewAnnotation(
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
        before: list[AnnotationRecord] = []

        def check_etag(latest: Mapping[int, list[AnnotationRecord]]) -> None:
            before[:] = latest[unit_id]
            current = unit_etag(self.bundle.hash, unit_id, before)
            if if_match is not None and not etag_matches(if_match, current):
                raise PreconditionFailedError(
                    f"unit {unit_id} changed since If-Match {if_match.strip()[:80]} was read (its ETag is now "
                    f"{current}); nothing was written: GET /units/{unit_id} and retry",
                    field="If-Match",
                )

        (record,) = self.store.add_many([item], precondition=check_etag)
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
                items.append(
                    NewAnnotation(
                        **{f.name: getattr(write, f.name) for f in fields(LabelWrite)},
                        bundle_hash=self.bundle.hash,
                        source="expert",
                    )
                )
            except AnnotationValidationError as exc:
                raise AnnotationValidationError(f"{where}.{exc.field}", exc.message) from None
        return [self._flag(r) for r in self.store.add_many(items)]

    def history(self, unit_id: int) -> list[UnitAnnotation]:
        """Every stored version of every annotator's label for ``unit_id``, oldest first, all bundles, flagged."""
        return [self._flag(r) for r in self.store.history(unit_id=self.check(unit_id))]

    def embedding(self) -> UnitEmbedding:
        """The bundle's ``embedding.json`` with every unit's labels, or :class:`NotInBundleError` when it has none."""
        embedding = self.bundle.embedding
        if embedding is None:
            raise NotInBundleError(
                f"bundle {self.bundle.id} has no unit embedding (embedding.json); rebuild it with `python -m training`"
            )
        labels = self._all_labels()
        try:
            points = tuple(
                EmbeddingPoint(
                    unit_id=int(u["unit_id"]),
                    x=float(u["x"]),
                    y=float(u["y"]),
                    ranked=bool(u.get("ranked", False)),
                    annotations=labels.get(int(u["unit_id"]), ()),
                )
                for u in embedding["units"]
            )
            return UnitEmbedding(
                model_id=self.bundle.id,
                bundle_hash=self.bundle.hash,
                method=str(embedding["method"]),
                num_images=int(embedding["num_images"]),
                explained_variance_ratio=tuple(float(v) for v in embedding["explained_variance_ratio"]),
                units=points,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{self.bundle.root}/embedding.json is malformed ({exc!r}); rebuild the bundle") from exc

    def visualisation(self, unit_id: int) -> Mapping[str, Any]:
        """The ``units/index.json`` entry of a unit (its top patches), or :class:`NotInBundleError`."""
        self.check(unit_id)
        index = self.bundle.unit_index
        if index is None:
            raise NotInBundleError(
                f"bundle {self.bundle.id} has no unit visualisations ({UNITS_INDEX_FILE}); rebuild it with "
                "`python -m training`"
            )
        entry = index.get(str(unit_id))
        if entry is None:
            raise NotInBundleError(
                f"unit {unit_id} has no visualisation in bundle {self.bundle.id}: only its {len(index)} ranked "
                "units are visualised",
                field="unit_id",
            )
        return entry  # type: ignore[no-any-return]

    def bundle_file(self, name: str) -> BundleFile:
        """A PNG of the bundle that pages show; else :class:`NotInBundleError`.

        Served: a unit visualisation (a path listed in meta.json under
        ``units/``) or an explanation-quality figure (listed, directly under
        ``quality/``). Only listed names are served, so no other file, and
        nothing outside the bundle directory, can be reached; the resolved path
        is checked as well in case a link was planted after the bundle was verified.
        """
        listed = self.bundle.meta["files"]
        parts = name.split("/")
        allowed = (
            (parts[0] == UNITS_DIR or (parts[0] == QUALITY_DIR and len(parts) == 2))
            and name.endswith(VISUALISATION_SUFFIX)
            and not any(part in ("", ".", "..") or "\\" in part for part in parts)
            and name in listed
        )
        root = self.bundle.root.resolve()
        path = (root / name).resolve() if allowed else root
        if not (allowed and path.is_relative_to(root) and path.is_file()):
            raise NotInBundleError(
                f"bundle {self.bundle.id} has no unit visualisation or quality figure {name[:200]!r}; paths come "
                "from GET /units/{unit_id}/visualisation and GET /quality",
                field="path",
            )
        return BundleFile(path=path, sha256=str(listed[name]))

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

    def _flag(self, record: AnnotationRecord) -> UnitAnnotation:
        values = {name: getattr(record, name) for name in _RECORD_FIELDS}
        return UnitAnnotation(**values, current_bundle=record.bundle_hash == self.bundle.hash)

    def _info(self, ranking: UnitRanking, annotations: tuple[UnitAnnotation, ...]) -> UnitInfo:
        return UnitInfo(
            ranking=ranking, annotations=annotations, etag=unit_etag(self.bundle.hash, ranking.unit_id, annotations)
        )


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
