"""The bundle is verified on load: missing, unknown and modified files, or an unknown score rule, stop it clearly."""

import json
import re

import numpy as np
import pytest

from deepminer.bundle import REQUIRED_FILES, BundleError, finalise_bundle, load_bundle
from deepminer.scoring import DEFAULT_SCORE_RULE


@pytest.fixture
def bundle_dir(tmp_path):
    root = tmp_path / "b"
    root.mkdir()
    for name in REQUIRED_FILES:
        (root / name).write_bytes(name.encode())
    np.savez(root / "head.npz", weight=np.ones((3, 4)), bias=np.zeros(3))
    (root / "rankings.json").write_text(json.dumps({"per_class": {}}))
    (root / "plots").mkdir()
    (root / "plots" / "roc.png").write_bytes(b"png")
    meta = {
        "name": "t",
        "model": {"classes": ["normal", "benign", "malignant"], "num_units": 4},
        "preprocessing": {"input_short_side": 128, "mean": [0, 0, 0], "std": [1, 1, 1]},
    }
    digest = finalise_bundle(root, meta)
    return root, digest


def test_round_trip(bundle_dir):
    root, digest = bundle_dir
    bundle = load_bundle(root)
    assert bundle.hash == digest
    assert bundle.id == f"t@{digest[:12]}"
    assert set(bundle.meta["files"]) == {*REQUIRED_FILES, "plots/roc.png"}
    weight, bias = bundle.head
    assert weight.shape == (3, 4) and bias.shape == (3,)
    assert bundle.classes == ["normal", "benign", "malignant"]


def test_modified_file_is_refused(bundle_dir):
    root, _ = bundle_dir
    (root / "fcn.onnx").write_bytes(b"tampered")
    with pytest.raises(BundleError, match="fcn.onnx has sha256 .* restore or rebuild"):
        load_bundle(root)


def test_missing_and_unknown_files_are_refused(bundle_dir):
    root, _ = bundle_dir
    (root / "extra.bin").write_bytes(b"x")
    with pytest.raises(BundleError, match="does not list: extra.bin"):
        load_bundle(root)
    (root / "extra.bin").unlink()
    (root / "plots" / "roc.png").unlink()
    with pytest.raises(BundleError, match="incomplete: missing plots/roc.png"):
        load_bundle(root)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nope")
    with pytest.raises(BundleError, match="meta.json is missing"):
        load_bundle(tmp_path)
    (tmp_path / "meta.json").write_text("{")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(BundleError, match="schema_version 99"):
        load_bundle(tmp_path)


def test_finalise_requires_the_core_files(tmp_path):
    with pytest.raises(BundleError, match="required files missing"):
        finalise_bundle(tmp_path, {})


def _with_meta(root, **entries):
    meta = json.loads((root / "meta.json").read_text())
    meta.pop("files")
    meta.update(entries)
    return finalise_bundle(root, meta)


def test_score_rule_defaults_to_the_breast_peak_and_follows_meta(bundle_dir):
    root, _ = bundle_dir
    assert load_bundle(root).score_rule == DEFAULT_SCORE_RULE == "breast_peak"
    _with_meta(root, image_score={"rule": "classifier"})
    assert load_bundle(root).score_rule == "classifier"


@pytest.mark.parametrize(
    ("image_score", "message"),
    [
        ({"rule": "mean"}, "image_score.rule must be one of breast_peak, classifier, patch_peak, worst_patch, got 'mean'"),
        ({"rule": None}, "image_score.rule must be one of breast_peak, classifier, patch_peak, worst_patch, got None"),
        ("breast_peak", "image_score must be an object, got 'breast_peak'"),
    ],
)
def test_unknown_score_rule_is_refused_at_load(bundle_dir, image_score, message):
    root, _ = bundle_dir
    _with_meta(root, image_score=image_score)
    with pytest.raises(BundleError, match=re.escape(message)):
        load_bundle(root)
    with pytest.raises(BundleError, match=re.escape(message)):
        load_bundle(root, verify=False)
