"""Unit labels as the catalogue hands them out and takes them in, and the ETag of a unit's labels."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from annotations import AnnotationRecord, LabelAnswers, NewAnnotation, record_values


@dataclass(frozen=True, kw_only=True)
class UnitAnnotation(AnnotationRecord):
    """A stored annotation, flagged with whether it was made under the loaded bundle.

    Unit ids index one network's layer4, so a label made under another bundle
    may describe a different unit. Such labels are shown, so an expert sees
    prior labels, but flagged ``current_bundle=False``; label reports leave them out.
    """

    current_bundle: bool

    @classmethod
    def flag(cls, record: AnnotationRecord, *, bundle_hash: str) -> UnitAnnotation:
        """``record`` flagged against the loaded bundle ``bundle_hash``."""
        return cls(**record_values(record), current_bundle=record.bundle_hash == bundle_hash)


@dataclass(frozen=True, kw_only=True)
class LabelWrite(LabelAnswers):
    """One unit's expert label, as given to :meth:`UnitCatalog.annotate` and :meth:`UnitCatalog.annotate_many`."""

    unit_id: int
    annotator: str

    def under(self, bundle_hash: str) -> NewAnnotation:
        """The expert annotation to store under the bundle ``bundle_hash`` (validated on construction)."""
        return NewAnnotation(**asdict(self), bundle_hash=bundle_hash, source="expert")


@dataclass(frozen=True)
class Written:
    """A stored label and the ETag of its unit right after the write."""

    record: UnitAnnotation
    etag: str


def unit_etag(bundle_hash: str, unit_id: int, latest: Iterable[AnnotationRecord]) -> str:
    """Strong ETag of ``/units/{id}``: the loaded bundle, the unit and the ids of its latest label per annotator.

    Every write to the unit replaces one annotator's latest id with a new one,
    so the tag changes with every write and with nothing else.
    """
    ids = ",".join(str(i) for i in sorted(r.id for r in latest))
    return '"' + hashlib.sha256(f"{bundle_hash}/{unit_id}/{ids}".encode()).hexdigest()[:32] + '"'
