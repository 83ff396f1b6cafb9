"""Automatic unit labels shipped in the bundle (``concept_labels.json``), stored once at start-up."""

from __future__ import annotations

from annotations import AnnotationStore, NewAnnotation, load_annotation_rows
from deepminer.bundle import CONCEPT_LABELS_FILE, Bundle, BundleError


def seed_automatic_labels(bundle: Bundle, store: AnnotationStore) -> int:
    """Store the bundle's ``concept_labels.json`` once per (annotator, bundle); returns how many were added.

    Skipped per annotator when that annotator already labelled units under
    this bundle, so restarts (and a second replica) do not add versions.
    """
    if not bundle.has(CONCEPT_LABELS_FILE):
        return 0
    try:
        rows = load_annotation_rows(
            bundle.path(CONCEPT_LABELS_FILE), fmt="json", bundle_hash=bundle.hash, source="automatic"
        )
    except ValueError as exc:  # AnnotationValidationError is a ValueError too
        raise BundleError(f"{bundle.path(CONCEPT_LABELS_FILE)}: {exc}") from exc
    by_annotator: dict[str, list[NewAnnotation]] = {}
    for row in rows:
        by_annotator.setdefault(row.annotator, []).append(row)
    added = 0
    for annotator, items in by_annotator.items():
        if store.has_annotations(annotator=annotator, bundle_hash=bundle.hash):
            continue
        store.add_many(items)
        added += len(items)
    return added
