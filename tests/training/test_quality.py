"""The explanation-quality report: hand-made maps and masks with known answers, and the CLI on real bundles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepminer.grid import GridMapping
from training.manifest import Finding, ImageRecord
from training.quality import (
    DEMO_BARS,
    UnitLabel,
    assess,
    labels_by_unit,
    named_units,
    one_vs_rest_auc,
    pointing_hit,
    tolerance_image_px,
)
from training.ranking import ImageMaps

CLASSES = ("normal", "benign", "malignant")
SIDE = 128  # image side in pixels; the network input is the same size, so one cell is 32 px


def _record(tmp_path: Path, name: str, lesion: tuple[slice, slice] | None, pathology: str = "malignant") -> ImageRecord:
    image = tmp_path / f"{name}.png"
    Image.fromarray(np.zeros((SIDE, SIDE), np.uint8)).save(image)
    findings = ()
    if lesion is not None:
        mask = np.zeros((SIDE, SIDE), np.uint8)
        mask[lesion] = 255
        path = tmp_path / f"{name}_1.png"
        Image.fromarray(mask).save(path)
        findings = (Finding("1", pathology, "round mass with circumscribed margins", "Mass", {}, path),)
    return ImageRecord(name, name, image, "CC", "L", findings)


def _maps(record: ImageRecord, *, peak: tuple[int, int], lesion_prob: float, breast: slice) -> ImageMaps:
    """A 4 × 4 grid: units 0..2; unit 2 fires at ``peak`` (the malignant CAM's maximum); the gray input
    is bright (breast) in the columns ``breast`` and black elsewhere."""
    features = np.zeros((3, 4, 4), np.float32)
    features[2][peak] = 5.0
    features[1] += 0.1
    logits = np.zeros((3, 4, 4), np.float32)
    logits[1:] = -10.0  # normal everywhere (lesion probabilities 4.5e-5) ...
    logits[2][peak] = np.log(lesion_prob / (1 - lesion_prob))  # ... but at the peak: lesion_prob against normal
    gray = np.zeros((SIDE, SIDE), np.float32)
    gray[:, breast] = 0.6
    gray[0, 0] = 0.0
    pixels = np.zeros((SIDE, SIDE), np.float32)
    return ImageMaps(record=record, pixels=pixels, input_shape=(SIDE, SIDE), logits=logits, features=features,
                     gray=gray)


WEIGHT = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], np.float32)  # class c <- unit c


def test_pointing_hit_and_chance_on_a_known_map() -> None:
    mapping = GridMapping.for_input(image_shape=(SIDE, SIDE), input_shape=(SIDE, SIDE))
    lesion = np.zeros((SIDE, SIDE), bool)
    lesion[60:70, 60:70] = True  # around cell (2, 2), centred on pixel (64, 64)
    from scipy import ndimage

    distance = ndimage.distance_transform_edt(~lesion)
    cam = np.zeros((4, 4))
    cam[2, 2] = 1.0
    assert pointing_hit(cam, mapping, distance, 0.0) == (True, 1 / 16)
    cam = np.zeros((4, 4))
    cam[0, 3] = 1.0
    hit, chance = pointing_hit(cam, mapping, distance, 0.0)
    assert not hit and chance == 1 / 16
    # Cell (1, 2) is centred on (32, 64), 28 px above the lesion: a hit only within the tolerance.
    cam = np.zeros((4, 4))
    cam[1, 2] = 1.0
    assert pointing_hit(cam, mapping, distance, 27.0)[0] is False
    hit, chance = pointing_hit(cam, mapping, distance, 28.0)
    assert hit and chance == 5 / 16  # (2, 2) and its four neighbours, each 28 px from the lesion
    assert tolerance_image_px(mapping) == 15.0


def test_auc_named_units_and_labels() -> None:
    truth = ["normal", "benign", "malignant", "malignant"]
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.3, 0.6], [0.6, 0.5, 0.2]])
    auc = one_vs_rest_auc(truth, scores, CLASSES)
    # malignant: positives 0.6, 0.2 against negatives 0.0, 0.1 -> every pair ordered: 1.0
    assert auc == {"normal": 1.0, "benign": 1.0, "malignant": 1.0}
    scores[3, 2] = 0.05  # now 0.05 < 0.1: 3 of 4 pairs
    assert one_vs_rest_auc(truth, scores, CLASSES)["malignant"] == 0.75
    labels = labels_by_unit([
        {"unit_id": 3, "label": "a", "category": "Mass"},
        {"unit_id": 5, "label": "", "category": "Mass", "recognizable": False},
        {"unit_id": 7, "label": "b", "category": "Calcification"},
    ])
    assert labels == {3: [UnitLabel("a", "Mass")], 7: [UnitLabel("b", "Calcification")]}
    influence = np.arange(10, dtype=float)  # unit 9 most influential
    assert named_units(influence, labels, top=8) == [7, 3]
    assert named_units(influence, labels, top=2) == []


def test_assess_on_hand_made_images(tmp_path: Path) -> None:
    lesion = (slice(60, 70), slice(60, 70))  # on cell (2, 2)
    hit = _maps(_record(tmp_path, "hit", lesion), peak=(2, 2), lesion_prob=0.9, breast=slice(0, 100))
    miss = _maps(_record(tmp_path, "miss", lesion), peak=(0, 3), lesion_prob=0.8, breast=slice(0, 128))
    # A normal image whose malignant peak (0.3) lies outside the breast (column 96 is black).
    normal = _maps(_record(tmp_path, "normal", None), peak=(1, 3), lesion_prob=0.3, breast=slice(0, 90))
    labels = {2: [UnitLabel("round mass with circumscribed margins", "Mass")]}
    rankings = {"per_class": {"malignant": {"units": [{"unit_id": 2}, {"unit_id": 1}]},
                              "benign": {"units": [{"unit_id": 1}]}, "normal": {"units": []}}}
    report = assess([hit, miss, normal], weight=WEIGHT, classes=CLASSES, labels=labels, rankings=rankings,
                    score_rule="breast_peak", dataset={"manifest": "hand-made"}, bars=DEMO_BARS)
    f = report.figures
    assert (f["images"], f["lesion_images"], f["normal_images"]) == (3, 2, 1)
    assert f["pointing_game"]["hit_rate"] == 0.5
    assert f["pointing_game"]["chance_rate"] == pytest.approx(1 / 16)  # tolerance 15 px: only cell (2, 2)
    # Peaks at cell centres (64, 64) and (0, 96) against the lesion's centre (64.5, 64.5): medians of
    # (-0.5, -0.5) and (-64.5, 31.5), in input pixels (here the image's own).
    offset = f["pointing_game"]["peak_offset_input_px"]
    assert (offset["down"], offset["right"]) == (-32.5, 15.5)
    # Both lesion images name their concept: unit 2 is their top unit and carries it.
    assert f["concept_naming"]["named_rate"] == 1.0
    assert f["concept_naming"]["ranked_units_named"] == 0.5  # units 1 and 2, one named
    assert f["concept_naming"]["lesion_ranked_units_named_by_lesion_concept"] == pytest.approx(1 / 3)
    # Background: the normal image's malignant 0.3 lies outside its breast; benign is nowhere above 5e-5.
    assert f["background"]["max_probability"]["malignant"] == pytest.approx(0.3, abs=1e-4)
    assert f["background"]["max_probability"]["benign"] < 1e-4
    # Scores: the normal image's malignant peak is outside the breast, so its breast peak is 4.5e-5;
    # the lesion images' peaks are 0.9 and 0.8: malignant AUC 1, every image predicted right.
    assert f["auc"]["score"]["malignant"] == 1.0
    assert f["predicted"]["lesion_images_correct"] == 1.0
    assert f["predicted"]["normal_images_correct"] == 1.0
    assert f["per_concept"]["round mass with circumscribed margins"]["predicted_as_pathology"] == 1.0
    assert f["auc"]["score_among_lesion_images"] == {"benign": None, "malignant": None}  # one lesion class only
    assert f["bars"]["pointing_game"] == {"value": 0.5, "bar": ">= 0.9", "pass": False}
    assert [c.image_id for c in report.worst] == ["miss"]
    assert report.per_image[0]["named_units"] == [{"unit_id": 2, "labels": ["round mass with circumscribed margins"]}]


def test_benign_told_from_malignant_among_lesion_images(tmp_path: Path) -> None:
    """A benign lesion whose malignant peak (0.6) tops its other classes is predicted malignant: wrong, and
    counted so per concept; among the lesion images the malignant score still ranks the malignant image first."""
    lesion = (slice(60, 70), slice(60, 70))
    malignant = _maps(_record(tmp_path, "m", lesion), peak=(2, 2), lesion_prob=0.9, breast=slice(0, 128))
    benign = _maps(_record(tmp_path, "b", lesion, pathology="benign"), peak=(2, 2), lesion_prob=0.6,
                   breast=slice(0, 128))
    normal = _maps(_record(tmp_path, "n", None), peak=(1, 1), lesion_prob=0.95, breast=slice(0, 128))
    report = assess([malignant, benign, normal], weight=WEIGHT, classes=CLASSES, labels={}, rankings={},
                    score_rule="breast_peak", dataset={"manifest": "hand-made"})
    f = report.figures
    assert [row["predicted"] for row in report.per_image] == ["malignant", "malignant", "malignant"]
    assert f["predicted"]["lesion_images_correct"] == 0.5
    assert f["per_concept"]["round mass with circumscribed margins"]["predicted_as_pathology"] == 0.5
    # Over every image the normal image's 0.95 outranks both lesions (malignant AUC 0.5); among lesion images
    # malignant 0.9 > 0.6 orders the one pair, and benign's equal scores (4.5e-5 each) tie.
    assert f["auc"]["score"]["malignant"] == 0.5
    assert f["auc"]["score_among_lesion_images"] == {"benign": 0.5, "malignant": 1.0}


def test_quality_cli_on_a_bundle(tiny_bundle: Path, phantom_manifest: Path, tmp_path: Path, capsys) -> None:
    from training.cli import main

    out = tmp_path / "q"
    assert main(["-q", "quality", "--bundle", str(tiny_bundle), "--manifest", str(phantom_manifest),
                 "--out", str(out), "--part", "all"]) == 0
    figures = json.loads((out / "quality.json").read_text())
    for key in ("auc", "predicted", "pointing_game", "concept_naming", "background", "per_concept", "per_category"):
        assert key in figures
    assert figures["dataset"]["part"] == "all"
    assert 0.0 <= figures["pointing_game"]["hit_rate"] <= 1.0
    assert "# Explanation quality" in capsys.readouterr().out
    assert (out / "quality.md").is_file()

    # The same model under another image-score rule: pointing and naming (CAM, units) do not move; the scores do,
    # and each image's patch_peak scores are the patch classifier at its least normal 4 x 4 block (the tiny bundle's
    # 32 px patches are one cell: the peak cell's own probabilities).
    assert figures["image_score_rule"] == "breast_peak"
    other = tmp_path / "q-patch"
    assert main(["-q", "quality", "--bundle", str(tiny_bundle), "--manifest", str(phantom_manifest),
                 "--out", str(other), "--part", "all", "--score-rule", "patch_peak"]) == 0
    patch = json.loads((other / "quality.json").read_text())
    assert patch["image_score_rule"] == "patch_peak"
    assert patch["pointing_game"] == figures["pointing_game"] and patch["concept_naming"] == figures["concept_naming"]
    for before, after in zip(figures["per_image"], patch["per_image"], strict=True):
        assert before["image_id"] == after["image_id"]
        assert after["scores"]["normal"] == pytest.approx(before["scores"]["normal"], abs=1e-4)  # same least-normal cell
        assert abs(sum(after["scores"].values()) - 1.0) < 1e-3  # one block's probabilities: a distribution


def test_quality_cli_refuses_a_manifest_without_lesions(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    from training.cli import main
    from training.manifest import read_manifest, write_manifest

    records = [r for r in read_manifest(Path(json.loads((tiny_bundle / "meta.json").read_text())["data"]["manifest"]))
               if not r.lesions]
    manifest = tmp_path / "normals.csv"
    write_manifest(manifest, [ImageRecord(r.image_id, r.case_id, r.image_path, r.view, r.laterality, ())
                              for r in records])
    assert main(["-q", "quality", "--bundle", str(tiny_bundle), "--manifest", str(manifest)]) == 2
    assert "no image with a lesion mask" in capsys.readouterr().err
