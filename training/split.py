"""Seeded split by case: every image of a case lands in the same part."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from training.manifest import ImageRecord

PARTS = ("train", "holdout", "test")
_SEVERITY = {"normal": 0, "benign": 1, "malignant": 2}


def case_pathology(records: Sequence[ImageRecord]) -> dict[str, str]:
    """Each case's worst pathology over its images: malignant > benign > normal."""
    worst: dict[str, str] = {}
    for record in records:
        current = worst.get(record.case_id, "normal")
        if _SEVERITY[record.pathology] > _SEVERITY[current]:
            current = record.pathology
        worst[record.case_id] = current
    return worst


def split_by_case(
    records: Sequence[ImageRecord],
    *,
    seed: int,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> dict[str, list[ImageRecord]]:
    """Cut the cases 80/10/10 into train, hold-out and test, stratified by case pathology.

    Within each pathology (a case's worst finding), the cases are shuffled with
    ``seed`` and cut by ``fractions``; a pathology with three or more cases
    gives hold-out and test at least one each, so even a small data set can be
    evaluated on every class. All images of a case stay together.
    """
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {fractions}")
    pathology = case_pathology(records)
    if len(pathology) < 3:
        raise ValueError(f"need at least 3 cases to split into train/hold-out/test, got {len(pathology)}")
    strata: dict[str, list[str]] = defaultdict(list)
    for case, name in sorted(pathology.items()):
        strata[name].append(case)
    rng = np.random.default_rng(seed)
    part_of: dict[str, str] = {}
    for name in sorted(strata, key=_SEVERITY.__getitem__):
        cases = [strata[name][i] for i in rng.permutation(len(strata[name]))]
        n = len(cases)
        n_holdout = max(1, round(fractions[1] * n)) if n >= 3 else 0
        n_test = max(1, round(fractions[2] * n)) if n >= 3 else 0
        for i, case in enumerate(cases):
            part_of[case] = "holdout" if i < n_holdout else "test" if i < n_holdout + n_test else "train"
    parts: dict[str, list[ImageRecord]] = {name: [] for name in PARTS}
    for record in records:
        parts[part_of[record.case_id]].append(record)
    return parts
