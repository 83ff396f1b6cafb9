"""Seeded split by case: every image of a case lands in the same part."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.manifest import ImageRecord

PARTS = ("train", "holdout", "test")


def split_by_case(
    records: Sequence[ImageRecord],
    *,
    seed: int,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> dict[str, list[ImageRecord]]:
    """Shuffle the case ids with ``seed`` and cut them 80/10/10 (train, hold-out, test).

    Each of hold-out and test gets at least one case when there are three or
    more cases, so a small data set still yields every part.
    """
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {fractions}")
    cases = sorted({r.case_id for r in records})
    if len(cases) < 3:
        raise ValueError(f"need at least 3 cases to split into train/hold-out/test, got {len(cases)}")
    order = np.random.default_rng(seed).permutation(len(cases))
    shuffled = [cases[i] for i in order]
    n_holdout = max(1, round(fractions[1] * len(cases)))
    n_test = max(1, round(fractions[2] * len(cases)))
    part_of = {}
    for i, case in enumerate(shuffled):
        part_of[case] = "holdout" if i < n_holdout else "test" if i < n_holdout + n_test else "train"
    parts: dict[str, list[ImageRecord]] = {name: [] for name in PARTS}
    for record in records:
        parts[part_of[record.case_id]].append(record)
    return parts
