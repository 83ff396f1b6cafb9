"""Concurrent writers never lose an acknowledged write, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from annotations import AnnotationRecord, AnnotationStore, NewAnnotation

THREADS = 8
WRITES_PER_THREAD = 10


def test_parallel_writers_to_one_unit_and_annotator_get_versions_1_to_80(
    store: AnnotationStore, make_item: Callable[..., NewAnnotation]
) -> None:
    start = threading.Barrier(THREADS)

    def write(worker: int) -> list[AnnotationRecord]:
        start.wait()
        return [store.add_many([make_item(unit_id=42, label=f"w{worker} #{n}")])[0] for n in range(WRITES_PER_THREAD)]

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        acknowledged = [record for records in pool.map(write, range(THREADS)) for record in records]

    stored = store.history(unit_id=42)
    total = THREADS * WRITES_PER_THREAD
    assert len(stored) == store.count() == total
    assert sorted(r.version for r in stored) == list(range(1, total + 1))
    assert sorted(acknowledged, key=lambda r: r.id) == stored
    # Writers are serialised: versions and timestamps both follow write (id) order.
    assert [r.version for r in stored] == list(range(1, total + 1))
    assert [r.created_at for r in stored] == sorted(r.created_at for r in stored)
