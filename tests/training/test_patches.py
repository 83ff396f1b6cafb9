"""The patch rule on hand-made masks, and the split by case."""

from pathlib import Path

import numpy as np
import pytest

from training.manifest import Finding, ImageRecord
from training.patches import Box, PatchRule, crop_patch, label_boxes, sliding_boxes
from training.split import case_pathology, split_by_case
from deepminer.tissue import otsu_threshold, tissue_mask

RULE = PatchRule()
AS_NORMAL = PatchRule(partly_touching="normal")


def test_sliding_grid_geometry():
    # width 400 → side 100, stride 50; height 300 → rows 0, 50, ..., 200 (5), columns 0..300 (7).
    boxes = sliding_boxes(300, 400, RULE)
    assert {b.side for b in boxes} == {100}
    assert sorted({b.top for b in boxes}) == [0, 50, 100, 150, 200]
    assert sorted({b.left for b in boxes}) == [0, 50, 100, 150, 200, 250, 300]
    assert len(boxes) == 35
    assert sliding_boxes(50, 400, RULE) == []


def _full_tissue(h=400, w=400):
    return np.ones((h, w), dtype=bool)


def test_tissue_rule_keeps_windows_at_least_half_tissue():
    tissue = np.zeros((100, 100), dtype=bool)
    tissue[:, :50] = True  # exactly 50% of a 100-px window
    boxes = [Box(0, 0, 100)]
    assert label_boxes(boxes, tissue, [], RULE) == [(boxes[0], "normal")]
    tissue[:, 49] = False  # 49%
    assert label_boxes(boxes, tissue, [], RULE) == []


def test_lesion_fraction_of_patch_rule():
    box = Box(0, 0, 100)
    mask = np.zeros((400, 400), dtype=bool)
    mask[:30, :100] = True  # 30% of the window ...
    mask[:, 300:] = True  # ... of a lesion so big that < 30% of it lies in the window
    assert label_boxes([box], _full_tissue(), [("benign", mask)], RULE)[0][1] == "benign"
    mask[29, :100] = False  # 29% of the window, still < 30% of the lesion
    assert label_boxes([box], _full_tissue(), [("benign", mask)], AS_NORMAL)[0][1] == "normal"


def test_lesion_fraction_inside_rule():
    box = Box(0, 0, 100)
    mask = np.zeros((400, 400), dtype=bool)
    mask[90:100, 90:100] = True  # 100 px inside the window ...
    mask[100:110, 100:133] = True  # ... of 430 in all: 23%
    assert label_boxes([box], _full_tissue(), [("malignant", mask)], AS_NORMAL)[0][1] == "normal"
    mask[100:110, 123:133] = False  # 100 of 330: 30.3%
    assert label_boxes([box], _full_tissue(), [("malignant", mask)], RULE)[0][1] == "malignant"


def test_partly_touching_windows_are_dropped_by_default():
    boxes = [Box(0, 0, 100), Box(0, 100, 100), Box(0, 200, 100)]
    mask = np.zeros((400, 400), dtype=bool)
    mask[:10, 90:110] = True  # 100 px in each of the first two windows: 1% of a window, 50% of the lesion
    big = np.zeros((400, 400), dtype=bool)
    big[:5, 150:400] = True  # 250 px in window 2, 500 in window 3, of 121,250 in all: neither rule met
    big[100:400, :] = True
    lesions = [("malignant", mask), ("benign", big)]
    assert label_boxes(boxes, _full_tissue(), lesions, RULE) == [(boxes[0], "malignant"), (boxes[1], "malignant")]
    assert label_boxes(boxes, _full_tissue(), lesions, AS_NORMAL) == [
        (boxes[0], "malignant"), (boxes[1], "malignant"), (boxes[2], "normal")
    ]
    # a window that no lesion touches stays normal under both
    assert label_boxes([Box(300, 300, 100)], _full_tissue(), [("benign", mask)], RULE) == [(Box(300, 300, 100), "normal")]


def test_partly_touching_is_recorded_and_checked():
    assert RULE.to_dict()["partly_touching"] == "drop" and "meets neither lesion rule (partly_touching) is dropped" in (
        RULE.to_dict()["text"]
    )
    assert "is labelled normal" in AS_NORMAL.to_dict()["text"]
    with pytest.raises(ValueError, match=r"partly_touching must be one of \('drop', 'normal'\), got 'keep'"):
        PatchRule(partly_touching="keep")


def test_malignant_wins_over_benign():
    box = Box(0, 0, 100)
    small = np.zeros((400, 400), dtype=bool)
    small[10:20, 10:20] = True
    both = [("benign", small), ("malignant", small.copy())]
    assert label_boxes([box], _full_tissue(), both, RULE)[0][1] == "malignant"
    assert label_boxes([box], _full_tissue(), both[::-1], RULE)[0][1] == "malignant"


def test_crop_patch_resizes():
    img = np.random.default_rng(0).random((300, 400)).astype(np.float32)
    patch = crop_patch(img, Box(10, 20, 100), 32)
    assert patch.shape == (32, 32)
    assert patch.mean() == pytest.approx(img[10:110, 20:120].mean(), abs=0.01)


def test_tissue_mask_separates_breast_from_background():
    img = np.full((100, 100), 0.02, dtype=np.float32)
    img[:, :60] = 0.6 + 0.1 * np.random.default_rng(0).random((100, 60))
    mask = tissue_mask(img)
    assert mask[:, :60].all() and not mask[:, 60:].any()
    assert 0.02 < otsu_threshold(img) < 0.6


def _records(n_cases, views=4, malignant=()):
    lesion = Finding(finding_id="1", pathology="malignant", concept="irregular mass", lexicon="Mass",
                     descriptors={}, mask_path=Path("/x/m.png"))
    return [
        ImageRecord(image_id=f"c{c}_{v}", case_id=f"c{c}", image_path=Path(f"/x/{c}_{v}.png"), view="CC",
                    laterality="L", findings=(lesion,) if c in malignant and v == 0 else ())
        for c in range(n_cases)
        for v in range(views)
    ]


def test_split_is_by_case_seeded_and_80_10_10():
    records = _records(50)
    parts = split_by_case(records, seed=1)
    cases = {name: {r.case_id for r in part} for name, part in parts.items()}
    assert not (cases["train"] & cases["holdout"])
    assert not (cases["train"] & cases["test"]) and not (cases["holdout"] & cases["test"])
    assert [len(cases[p]) for p in ("train", "holdout", "test")] == [40, 5, 5]
    assert sum(len(p) for p in parts.values()) == 200
    for part in parts.values():  # every view of a case travels together
        for case in {r.case_id for r in part}:
            assert sum(r.case_id == case for r in part) == 4
    assert split_by_case(records, seed=1) == parts
    assert split_by_case(records, seed=2) != parts


def test_split_is_stratified_by_case_pathology():
    malignant = set(range(0, 50, 5))  # 10 malignant cases among 50
    parts = split_by_case(_records(50, malignant=malignant), seed=3)
    for name, expected in (("holdout", 1), ("test", 1), ("train", 8)):
        cases = {r.case_id for r in parts[name] if r.pathology == "malignant"}
        assert len(cases) == expected, name
    assert case_pathology(_records(3, malignant={1})) == {"c0": "normal", "c1": "malignant", "c2": "normal"}


def test_split_small_and_invalid():
    parts = split_by_case(_records(3), seed=0)
    assert all(len(p) == 4 for p in parts.values())
    with pytest.raises(ValueError, match="at least 3 cases"):
        split_by_case(_records(2), seed=0)
    with pytest.raises(ValueError, match="sum to 1"):
        split_by_case(_records(10), seed=0, fractions=(0.5, 0.1, 0.1))
