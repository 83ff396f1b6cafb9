"""AnnotationStore on SQLite and PostgreSQL: versions, latest views, validation, atomicity, time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy.orm import Session

from annotations import (
    CATEGORIES,
    AnnotationConflictError,
    AnnotationStore,
    AnnotationValidationError,
    NewAnnotation,
    StoreUnavailableError,
)

MakeItem = Callable[..., NewAnnotation]


class StaleVersionStore(AnnotationStore):
    """A store whose first ``stale_reads`` version reads miss the rows of one (unit, annotator), as a
    concurrent writer's would; the clash with the unique constraint is then real."""

    def __init__(self, url: str, *, stale_key: tuple[int, str], stale_reads: int, max_attempts: int) -> None:
        super().__init__(url, max_attempts=max_attempts)
        self.stale_key = stale_key
        self.stale_reads = stale_reads

    def _current_versions(self, session: Session, keys: set[tuple[int, str]]) -> dict[tuple[int, str], int]:
        found = super()._current_versions(session, keys)
        if self.stale_reads > 0:
            self.stale_reads -= 1
            found.pop(self.stale_key, None)
        return found


def add(store: AnnotationStore, make_item: MakeItem, **overrides: Any) -> Any:
    return store.add(**asdict(make_item(**overrides)))


def test_versions_count_per_unit_and_annotator_and_history_keeps_all(
    store: AnnotationStore, make_item: MakeItem
) -> None:
    first = add(store, make_item, unit_id=7, annotator="dr_a", label="Spiculation")
    second = add(store, make_item, unit_id=7, annotator="dr_a", label="Spiculated mass margin")
    other_annotator = add(store, make_item, unit_id=7, annotator="dr_b", label="Spiculation")
    other_unit = add(store, make_item, unit_id=8, annotator="dr_a", label="Vascular calcifications")

    assert (first.version, second.version, other_annotator.version, other_unit.version) == (1, 2, 1, 1)
    assert first.id < second.id < other_annotator.id < other_unit.id
    assert store.history(unit_id=7) == [first, second, other_annotator]
    assert store.count() == 4


def test_latest_gives_the_newest_version_of_each_annotator(store: AnnotationStore, make_item: MakeItem) -> None:
    add(store, make_item, unit_id=1152, annotator="dr_a", label="Calcifications", category="Calcification")
    newest_b = add(
        store, make_item, unit_id=1152, annotator="dr_b", label="Pleomorphic calcifications", category="Calcification"
    )
    newest_a = add(
        store,
        make_item,
        unit_id=1152,
        annotator="dr_a",
        label="Malignant pleomorphic calcifications",
        category="Calcification",
        cancer_association="yes",
    )
    add(store, make_item, unit_id=860, annotator="dr_a", label="Benign vascular calcifications")

    assert store.latest(unit_id=1152) == [newest_b, newest_a]
    assert newest_a.version == 2 and newest_a.cancer_association == "yes"
    assert store.latest(unit_id=5) == []


def test_latest_for_units_answers_every_requested_unit(store: AnnotationStore, make_item: MakeItem) -> None:
    add(store, make_item, unit_id=1299, annotator="dr_a", label="Spiculation")
    newest = add(store, make_item, unit_id=1299, annotator="dr_a", label="Spiculated margins")
    auto = add(
        store,
        make_item,
        unit_id=1468,
        annotator="auto:concept-iou",
        source="automatic",
        label="Masses with smooth edges",
    )

    result = store.latest_for_units(unit_ids=[1468, 1299, 3, 1299])

    assert result == {1468: [auto], 1299: [newest], 3: []}
    assert list(result) == [1468, 1299, 3]
    assert store.latest_for_units(unit_ids=[]) == {}


def test_all_latest_and_has_annotations(store: AnnotationStore, make_item: MakeItem) -> None:
    add(store, make_item, unit_id=2, annotator="dr_a")
    newest = add(store, make_item, unit_id=2, annotator="dr_a", label="Mass")
    auto = add(store, make_item, unit_id=1, annotator="auto:concept-iou", source="automatic")

    assert store.all_latest() == [auto, newest]
    assert store.all_versions()[-2:] == [newest, auto]
    assert store.has_annotations(annotator="auto:concept-iou", bundle_hash=auto.bundle_hash.upper())
    assert not store.has_annotations(annotator="auto:concept-iou", bundle_hash="cd" * 32)
    assert not store.has_annotations(annotator="dr_b", bundle_hash=auto.bundle_hash)


def test_record_holds_normalised_values_and_tz_aware_utc_time(store: AnnotationStore, make_item: MakeItem) -> None:
    before = datetime.now(timezone.utc)
    record = add(
        store,
        make_item,
        label="  Spiculation ",
        category="calcification",
        cancer_association="YES",
        recognizable=True,
        phenomena="Several",
        description="Thin lines radiating from a mass.",
        bundle_hash="AB" * 32,
    )
    after = datetime.now(timezone.utc)

    assert (record.label, record.category, record.cancer_association) == ("Spiculation", "Calcification", "yes")
    assert (record.recognizable, record.phenomena, record.bundle_hash) == (True, "several", "ab" * 32)
    [stored] = store.history(unit_id=record.unit_id)
    assert stored == record
    for created_at in (record.created_at, stored.created_at):
        assert created_at.utcoffset() == timedelta(0) and created_at.tzinfo is timezone.utc
        assert before <= created_at <= after


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("unit_id", -1, "got -1"),
        ("unit_id", "1814", "must be an integer, got '1814'"),
        ("unit_id", True, "must be an integer"),
        ("label", "   ", "must not be empty"),
        ("label", "x" * 121, "at most 120 characters, got 121"),
        ("category", "Tumour", "'Mass', 'Calcification', 'Architectural distortion'"),
        ("cancer_association", "maybe", "'yes', 'no', 'unsure'; got 'maybe'"),
        ("recognizable", "yes", "must be true, false or null"),
        ("phenomena", "many", "'single', 'several'"),
        ("annotator", "", "must not be empty"),
        ("bundle_hash", "abc", "sha256"),
        ("source", "model", "'expert', 'automatic'"),
    ],
)
def test_add_names_the_invalid_field(
    store: AnnotationStore, make_item: MakeItem, field: str, value: object, message: str
) -> None:
    values = {**asdict(make_item()), field: value}
    with pytest.raises(AnnotationValidationError, match=message) as caught:
        store.add(**values)
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)
    assert store.count() == 0


def test_unknown_category_lists_every_allowed_one(make_item: MakeItem) -> None:
    with pytest.raises(AnnotationValidationError) as caught:
        make_item(category="Tumour")
    assert all(repr(category) in str(caught.value) for category in CATEGORIES)
    assert "'Tumour'" in str(caught.value)


def test_reads_refuse_unit_ids_that_are_not_integers(store: AnnotationStore) -> None:
    with pytest.raises(AnnotationValidationError, match="'12'"):
        store.latest_for_units(unit_ids=["12"])  # type: ignore[list-item]
    with pytest.raises(AnnotationValidationError, match="got -3"):
        store.history(unit_id=-3)


def test_add_many_assigns_consecutive_versions_in_order(store: AnnotationStore, make_item: MakeItem) -> None:
    add(store, make_item, unit_id=4)
    records = store.add_many([make_item(unit_id=4, label=f"label {n}") for n in range(3)] + [make_item(unit_id=5)])
    assert [(r.unit_id, r.version, r.label) for r in records] == [
        (4, 2, "label 0"),
        (4, 3, "label 1"),
        (4, 4, "label 2"),
        (5, 1, records[-1].label),
    ]
    assert len({r.created_at for r in records}) == 1
    assert store.history(unit_id=4)[1:] == records[:3]


def test_add_many_writes_nothing_when_one_insert_fails(
    store: AnnotationStore, database_url: str, make_item: MakeItem
) -> None:
    store.add_many([make_item(unit_id=9, annotator="dr_b")])
    clashing = StaleVersionStore(database_url, stale_key=(9, "dr_b"), stale_reads=1, max_attempts=1)
    try:
        with pytest.raises(AnnotationConflictError, match=r"after 1 attempt\(s\)"):
            clashing.add_many([make_item(unit_id=1), make_item(unit_id=2), make_item(unit_id=9, annotator="dr_b")])
    finally:
        clashing.close()
    assert store.count() == 1
    assert store.latest_for_units(unit_ids=[1, 2]) == {1: [], 2: []}


def test_add_many_refuses_what_is_not_a_new_annotation(store: AnnotationStore, make_item: MakeItem) -> None:
    with pytest.raises(TypeError, match=r"items\[1\] must be a NewAnnotation, got dict"):
        store.add_many([make_item(), asdict(make_item())])  # type: ignore[list-item]
    assert store.count() == 0


def test_a_version_clash_is_retried_and_written_once(
    store: AnnotationStore, database_url: str, make_item: MakeItem
) -> None:
    store.add_many([make_item(unit_id=3)])
    clashing = StaleVersionStore(database_url, stale_key=(3, "dr_a"), stale_reads=1, max_attempts=2)
    try:
        record = clashing.add_many([make_item(unit_id=3, label="second")])[0]
    finally:
        clashing.close()
    assert clashing.stale_reads == 0, "the first attempt should have read a stale version"
    assert record.version == 2
    assert [(r.version, r.label) for r in store.history(unit_id=3)] == [(1, make_item().label), (2, "second")]


def test_ping(store: AnnotationStore, tmp_path: Any) -> None:
    store.ping()
    unreachable = AnnotationStore(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'x.db'}")
    with pytest.raises(StoreUnavailableError, match="unable to open database file"):
        unreachable.ping()
    unreachable.close()


def test_only_a_not_recognisable_answer_may_leave_the_label_empty() -> None:
    from annotations import names_phenomenon

    base = {"unit_id": 3, "annotator": "dr_a", "category": "Other", "bundle_hash": "ab" * 32}
    nothing = NewAnnotation(**base, label="  ", recognizable=False)
    assert nothing.label == "" and not names_phenomenon(nothing)
    assert names_phenomenon(NewAnnotation(**base, label="Mass edge")) and names_phenomenon(
        NewAnnotation(**base, label="Mass edge", recognizable=True)
    )
    for recognizable in (None, True):
        with pytest.raises(AnnotationValidationError, match="label: must not be empty, got ''"):
            NewAnnotation(**base, label="", recognizable=recognizable)
