"""CBIS-DDSM ingest on a miniature CBIS-DDSM-shaped tree, then the real pipeline on the result.

The tree is built from the session's phantom mammograms, written as DICOM the
way TCIA publishes CBIS-DDSM: ``CBIS-DDSM/<Folder>/<date-ish>/<series-ish>/1-N.dcm``,
description CSVs whose lower path parts do not match the disk, ROI masks and
cropped images in the ``_<abnormality>`` folders in no fixed order. It has mass
and calc CSVs for train and test, a BENIGN_WITHOUT_CALLBACK row, an image with
two findings, a mask of another size, a 0/1 mask, compressed and uncompressed
files, a MONOCHROME1 image, a row whose image is missing, and the phantoms'
normal images as a separate normals manifest.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset

from deepminer.imaging import read_image
from training.cli import main as training_cli
from training.config import TrainConfig
from training.data import load_lesion_masks
from training.ingest import ingest_cbis_ddsm
from training.manifest import Finding, ImageRecord, read_manifest, write_manifest

MASS_COLUMNS = ["patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
                "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
                "image file path", "cropped image file path", "ROI mask file path"]
CALC_COLUMNS = ["patient_id", "breast density", "left or right breast", "image view", "abnormality id",
                "abnormality type", "calc type", "calc distribution", "assessment", "pathology", "subtlety",
                "image file path", "cropped image file path", "ROI mask file path"]
FULL_IMAGE_SYNTAXES = [uid.ExplicitVRLittleEndian, uid.JPEG2000Lossless, uid.RLELossless, uid.JPEGLSLossless]
TINY = TrainConfig(name="tiny-cbis", depth=18, patch_size=32, epochs=1, batch_size=32, lr=0.01,
                   lr_decay_epoch=None, samples_per_epoch=256, top_per_image=8, top_per_class=20, device="cpu")


def write_dicom(path: Path, arr: np.ndarray, *, bits: int, photometric: str = "MONOCHROME2",
                syntax: str = uid.ExplicitVRLittleEndian, **tags: object) -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # CBIS-DDSM: SC
    ds.PatientName, ds.PatientID = "DDSM", str(tags.pop("PatientID", "P"))
    ds.Modality = "MG"
    ds.set_pixel_data(arr, photometric, bits)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    if syntax != uid.ExplicitVRLittleEndian:
        ds.compress(syntax)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


@dataclass
class Tree:
    root: Path
    normals: Path
    expected: dict[str, dict] = field(default_factory=dict)  # image_id -> what the manifest must say


def _uid_path(folder: str, rng: np.random.Generator, name: str) -> str:
    """A CSV path as published: right folder name, lower parts that exist nowhere on disk."""
    a, b = (f"1.3.6.1.4.1.9590.100.1.2.{rng.integers(10**9, 10**10)}" for _ in range(2))
    return f"{folder}/{a}/{b}/{name}"


def _crop(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    r0, c0 = max(0, rows.min() - 20), max(0, cols.min() - 20)
    return image[r0 : max(rows.max() + 20, r0 + 40), c0 : max(cols.max() + 20, c0 + 40)]


def build_tree(records: list[ImageRecord], root: Path) -> Tree:
    rng = np.random.default_rng(7)
    tree = Tree(root=root, normals=root / "normals.csv")
    dicom_root = root / "CBIS-DDSM"
    rows: dict[tuple[str, str], list[dict[str, str]]] = {}
    normals: list[ImageRecord] = []
    test_patients = {"P0004", "P0007"}
    n_image = 0
    for record in records:
        patient = f"P_{int(record.case_id[1:]) + 1:05d}"
        if not record.lesions:
            normals.append(ImageRecord(record.image_id, patient, record.image_path, record.view, record.laterality, ()))
            continue
        image16 = np.asarray(Image.open(record.image_path), dtype=np.uint16)
        for kind in ("mass", "calc"):
            lesions = [f for f in record.lesions if (f.lexicon == "Mass") == (kind == "mass")]
            if not lesions:
                continue
            split = "test" if record.case_id in test_patients else "train"
            side = {"L": "LEFT", "R": "RIGHT"}[record.laterality]
            folder = f"{kind.capitalize()}-{'Test' if split == 'test' else 'Training'}_{patient}_{side}_{record.view}"
            syntax = FULL_IMAGE_SYNTAXES[n_image % len(FULL_IMAGE_SYNTAXES)]
            monochrome1 = record.image_id == "P0001_L_CC" and kind == "calc"
            n_image += 1
            stored = (65535 - image16) if monochrome1 else image16
            series = dicom_root / folder / "07-20-2016-DDSM-74994" / f"1.000000-full mammogram images-{n_image}"
            write_dicom(series / "1-1.dcm", stored, bits=16, syntax=syntax,
                        photometric="MONOCHROME1" if monochrome1 else "MONOCHROME2", PatientID=patient)
            masks = [np.asarray(Image.open(f.mask_path)) > 127 for f in lesions]
            findings = [(f.pathology.upper(), m) for f, m in zip(lesions, masks)]
            if record.image_id == "P0005_L_CC":
                # A second, synthetic benign mass: the image with two findings.
                extra = np.zeros_like(masks[0])
                r, c = np.argwhere(image16 > np.percentile(image16, 60)).mean(axis=0).astype(int)
                extra[r - 6 : r + 6, c - 6 : c + 6] = True
                findings.append(("BENIGN", extra))
            expected_findings = []
            for k, (pathology, mask) in enumerate(findings, start=1):
                if record.image_id.startswith("P0006"):
                    pathology = "BENIGN_WITHOUT_CALLBACK"
                roi = dicom_root / f"{folder}_{k}" / "07-21-2016-DDSM-09887"
                mask_u8 = mask.astype(np.uint8) * 255
                if record.image_id == "P0006_R_CC":  # a mask of another size, as in the real data
                    h, w = mask_u8.shape
                    mask_u8 = np.asarray(Image.fromarray(mask_u8).resize((w // 2, h // 2), Image.Resampling.NEAREST))
                if record.image_id == "P0005_L_MLO":  # a 0/1 mask
                    mask_u8 = (mask_u8 > 0).astype(np.uint8)
                crop = _crop(image16, mask)
                # Mask and crop: 1-1 / 1-2 in either order, in one series folder or two.
                names = ["1-1.dcm", "1-2.dcm"] if rng.random() < 0.5 else ["1-2.dcm", "1-1.dcm"]
                same_series = k % 2 == 1
                mask_file = roi / f"1.000000-ROI mask images-{k}" / names[0]
                crop_file = (mask_file.parent if same_series else roi / f"1.000000-cropped images-{k}") / names[1]
                write_dicom(mask_file, mask_u8, bits=8,
                            syntax=uid.RLELossless if record.image_id == "P0007_L_CC" else uid.ExplicitVRLittleEndian)
                write_dicom(crop_file, crop, bits=16)
                descriptors = (
                    {"mass shape": "IRREGULAR", "mass margins": "SPICULATED"} if kind == "mass"
                    else {"calc type": "PLEOMORPHIC", "calc distribution": "CLUSTERED"}
                )
                rows.setdefault((kind, split), []).append({
                    "patient_id": patient, "breast_density": "2", "breast density": "2",
                    "left or right breast": side, "image view": record.view, "abnormality id": str(k),
                    "abnormality type": "mass" if kind == "mass" else "calcification",
                    **descriptors, "assessment": "4", "pathology": pathology, "subtlety": "3",
                    "image file path": _uid_path(folder, rng, "000000.dcm"),
                    # Real CSVs carry stray newlines at the end of some paths.
                    "cropped image file path": _uid_path(f"{folder}_{k}", rng, "000000.dcm") + "\n",
                    "ROI mask file path": _uid_path(f"{folder}_{k}", rng, "000001.dcm"),
                })
                expected_findings.append({"pathology": pathology, "mask": mask, "mask_file": mask_file})
            tree.expected[folder] = {
                "case_id": patient, "view": record.view, "laterality": record.laterality, "kind": kind,
                "pixels": image16 / 65535.0, "findings": expected_findings,
            }
    # A row whose image was never downloaded: skipped and reported, not fatal.
    missing = dict(rows[("mass", "train")][0], patient_id="P_09999",
                   **{"image file path": "Mass-Training_P_09999_LEFT_CC/1.2/1.3/000000.dcm"})
    rows[("mass", "train")].append(missing)
    for (kind, split), content in rows.items():
        columns = MASS_COLUMNS if kind == "mass" else CALC_COLUMNS
        with (root / f"{kind}_case_description_{split}_set.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(content)
    write_manifest(tree.normals, normals)
    return tree


@pytest.fixture(scope="module")
def cbis_tree(tmp_path_factory: pytest.TempPathFactory, phantom_records: list[ImageRecord]) -> Tree:
    return build_tree(phantom_records, tmp_path_factory.mktemp("cbis"))


@pytest.fixture(scope="module")
def ingested(cbis_tree: Tree, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("cbis_manifest") / "manifest.csv"
    started = time.perf_counter()
    report = ingest_cbis_ddsm(cbis_tree.root, out, normals=cbis_tree.normals, progress=False)
    return out, report, time.perf_counter() - started


def test_manifest_from_cbis_tree(cbis_tree: Tree, ingested):
    out, report, _ = ingested
    records = {r.image_id: r for r in read_manifest(out)}
    normals = read_manifest(cbis_tree.normals)
    assert set(records) == set(cbis_tree.expected) | {r.image_id for r in normals}
    assert report.images == len(records) and report.normals == len(normals)
    assert len(report.skipped) == 1 and "Mass-Training_P_09999_LEFT_CC" in report.skipped[0]
    for image_id, want in cbis_tree.expected.items():
        record = records[image_id]
        assert (record.case_id, record.view, record.laterality) == (want["case_id"], want["view"], want["laterality"])
        # Every full image decodes to the phantom, whatever its syntax or photometric interpretation.
        np.testing.assert_allclose(read_image(record.image_path), want["pixels"], atol=1e-6)
        assert [f.finding_id for f in record.findings] == [str(k + 1) for k in range(len(want["findings"]))]
        for finding, expected in zip(record.findings, want["findings"]):
            assert finding.mask_path == expected["mask_file"]  # the mask, not the cropped image
            original = expected["pathology"]
            assert finding.pathology == ("malignant" if original == "MALIGNANT" else "benign")
            assert finding.descriptors["cbis_pathology"] == original
            if want["kind"] == "mass":
                assert finding.lexicon == "Mass" and finding.concept == "irregular mass with spiculated margins"
                assert finding.descriptors["shape"] == "IRREGULAR" and finding.descriptors["margins"] == "SPICULATED"
            else:
                assert finding.lexicon == "Calcification"
                assert finding.concept == "pleomorphic calcifications with clustered distribution"
                assert finding.descriptors["calc_distribution"] == "CLUSTERED"
            assert finding.descriptors["breast_density"] == "2" and finding.descriptors["subtlety"] == "3"
            assert finding.descriptors["cbis_split"] in ("train", "test")
    assert len(records["Mass-Training_P_00006_LEFT_CC"].findings) == 2
    assert {f.descriptors["cbis_pathology"] for f in records["Calc-Training_P_00007_RIGHT_CC"].findings} == {
        "BENIGN_WITHOUT_CALLBACK"
    }
    assert records["Mass-Test_P_00008_LEFT_CC"].findings[0].descriptors["cbis_split"] == "test"
    # Normal images keep their patient's case id, so a patient stays in one split part.
    assert {r.case_id for r in normals} >= {"P_00001", "P_00002", "P_00008"}
    assert all(not records[r.image_id].findings for r in normals)


def test_masks_of_every_kind_load_onto_their_image(cbis_tree: Tree, ingested, caplog):
    out, _, _ = ingested
    records = {r.image_id: r for r in read_manifest(out)}
    for image_id, want in cbis_tree.expected.items():
        record = records[image_id]
        with caplog.at_level(logging.WARNING, logger="training.data"):
            caplog.clear()
            masks = load_lesion_masks(record, want["pixels"].shape)
        resized = image_id == "Calc-Training_P_00007_RIGHT_CC"
        assert ("resized nearest-neighbour" in caplog.text) == resized
        assert str(record.findings[0].mask_path) in caplog.text or not resized
        for (pathology, mask), expected in zip(masks, want["findings"]):
            assert mask.shape == want["pixels"].shape
            if resized:  # half resolution and back: equal up to the lesion's edge
                assert np.mean(mask != expected["mask"]) < 0.01 and mask.sum() > 0
            else:
                np.testing.assert_array_equal(mask, expected["mask"])


def test_mask_with_another_aspect_ratio_is_refused(tmp_path: Path):
    image = tmp_path / "image.dcm"
    write_dicom(image, np.zeros((100, 80), np.uint16), bits=16)
    mask = tmp_path / "mask.dcm"
    write_dicom(mask, np.full((100, 100), 255, np.uint8), bits=8)
    finding = Finding("1", "benign", "mass", "Mass", {}, mask)
    record = ImageRecord("img", "case", image, "CC", "L", (finding,))
    with pytest.raises(ValueError, match=r"mask .*mask.dcm is 100x100 but image img is 80x100: aspect ratios differ"):
        load_lesion_masks(record, (100, 80))


def test_cli_ingest_cbis(cbis_tree: Tree, tmp_path: Path, capsys):
    out = tmp_path / "m.csv"
    assert training_cli(["-q", "ingest-cbis", "--root", str(cbis_tree.root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "skipped" in printed and "P_09999" in printed
    assert len(read_manifest(out)) == len(cbis_tree.expected)
    assert training_cli(["-q", "ingest-cbis", "--root", str(tmp_path / "nothing"), "--out", str(out)]) == 2


@pytest.mark.slow
def test_pipeline_end_to_end_on_ingested_cbis(ingested, tmp_path: Path):
    from deepminer.bundle import load_bundle
    from training.pipeline import build_bundle

    manifest, report, _ = ingested
    logging.getLogger("onnx_ir").setLevel(logging.WARNING)
    logging.getLogger("onnxscript").setLevel(logging.WARNING)
    out = build_bundle(manifest, tmp_path / "bundle", TINY, progress=False)
    bundle = load_bundle(out)
    assert bundle.meta["data"]["images"] == report.images
    assert bundle.meta["model"]["architecture"] == "resnet18"
    assert set(bundle.meta["split"]["cases"]) == {"train", "holdout", "test"}


def test_quality_report_on_a_miniature_cbis_tree(ingested, tiny_bundle: Path, tmp_path: Path) -> None:
    """`python -m training quality` on CBIS-DDSM's DICOM images and ROI masks, as ingested."""
    import json

    manifest, _, _ = ingested
    out = tmp_path / "quality"
    assert training_cli(["-q", "quality", "--bundle", str(tiny_bundle), "--manifest", str(manifest),
                         "--out", str(out)]) == 0
    figures = json.loads((out / "quality.json").read_text())
    assert figures["dataset"]["part"] == "all"  # not the manifest the bundle was built from
    lesion_images = [r for r in read_manifest(manifest) if r.lesions]
    assert figures["lesion_images"] == len(lesion_images) > 0
    assert figures["pointing_game"]["images"] == len(lesion_images)
    assert set(figures["per_category"]) <= {"Mass", "Calcification"}
