"""The bundle the training pipeline writes: complete, verified, consistent with the method."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from deepminer.bundle import load_bundle
from deepminer.fcn import build_classifier, to_fcn
from deepminer.imaging import network_input, read_image
from training.cli import main as cli_main


def test_bundle_is_complete_and_verified(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    meta = bundle.meta
    assert bundle.classes == ["normal", "benign", "malignant"]
    assert meta["model"]["architecture"] == "resnet18" and meta["model"]["num_units"] == 512
    assert meta["preprocessing"]["input_short_side"] == 4 * meta["preprocessing"]["patch_size"] == 128
    assert meta["patch_rule"]["side_fraction"] == 0.25 and "text" in meta["patch_rule"]
    assert meta["split"]["seed"] == 0 and meta["split"]["by"] == "case_id"
    for name in ("weights.pt", "fcn.onnx", "head.npz", "rankings.json", "plots/roc.png", "concept_labels.json"):
        assert name in meta["files"]
    assert set(meta["metrics"]["test_patches"]["auc"]) == set(bundle.classes)
    assert len(meta["training"]["history"]) == 1


def test_onnx_torch_and_head_agree(tiny_bundle, phantom_records):
    bundle = load_bundle(tiny_bundle)
    model = build_classifier(depth=18, num_classes=3)
    model.load_state_dict(torch.load(bundle.path("weights.pt"), weights_only=True))
    fcn = to_fcn(model).eval()
    x = network_input(read_image(phantom_records[0].image_path), short_side=bundle.input_short_side)
    session = ort.InferenceSession(str(bundle.path("fcn.onnx")), providers=["CPUExecutionProvider"])
    onnx_logits, onnx_features = session.run(["logits", "features"], {"image": x})
    with torch.inference_mode():
        logits, features = fcn(torch.from_numpy(x))
    np.testing.assert_allclose(onnx_logits, logits.numpy(), atol=1e-3)
    np.testing.assert_allclose(onnx_features, features.numpy(), atol=1e-3)
    weight, bias = bundle.head
    np.testing.assert_allclose(weight, model.fc.weight.detach().numpy())
    np.testing.assert_allclose(bias, model.fc.bias.detach().numpy())


def test_rankings_and_automatic_labels(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    rankings = bundle.rankings
    assert rankings["top_per_image"] == 8 and rankings["top_per_class"] == 20
    for entry in rankings["per_class"].values():
        assert 0.0 < entry["coverage"] <= 1.0
        assert sum(u["count"] for u in entry["units"]) == pytest.approx(entry["coverage"] * entry["slots_total"])
    labels = json.loads(bundle.path("concept_labels.json").read_text())
    ranked = {u["unit_id"] for e in rankings["per_class"].values() for u in e["units"]}
    for label in labels:
        assert label["unit_id"] in ranked
        assert label["source"] == "automatic" and label["annotator"] == "auto:concept-iou"


def test_cli_help_and_verify(tiny_bundle, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["--help"])
    assert exc.value.code == 0
    assert "phantoms" in capsys.readouterr().out
    assert cli_main(["verify", str(tiny_bundle)]) == 0
    assert "files verified" in capsys.readouterr().out
    assert cli_main(["verify", str(tiny_bundle.parent / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
