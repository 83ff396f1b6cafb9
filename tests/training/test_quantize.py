"""The int8 path's training side: the gates' figures on hand-made maps with known answers, the float regions
of a real FCN graph, and ``python -m training quantize`` on the tiny bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from deepminer.bundle import INT8_ONNX_FILE, ONNX_FILE, load_bundle
from training.cli import main
from training.manifest import Finding, ImageRecord
from training.quantize.gates import GATE_BOUNDS, compare, gate_checks, pearson, units_shared
from training.quantize.int8 import float_nodes, residual_outputs
from training.ranking import ImageMaps

CLASSES = ("normal", "benign", "malignant")
SIDE = 128  # image and network input side: a 4 x 4 grid, one cell per 32 px, cell (i, j) centred on (32 i, 32 j)
LESION = (slice(56, 72), slice(56, 72))  # around cell (2, 2)'s centre (64, 64); cell (0, 0) is ~80 px away
HIT, MISS = (2, 2), (0, 0)
MAXIMA = np.array([6, 5, 4, 3, 2, 1], np.float32)  # unit k's peak activation: top-5 units are 0..4
WEIGHT = np.ones((3, 6), np.float32)  # every class weighs every unit 1: influence = peak, CAM = sum of the maps


def _record(tmp_path: Path, name: str, malignant: bool) -> ImageRecord:
    image = tmp_path / f"{name}.png"
    Image.fromarray(np.zeros((SIDE, SIDE), np.uint8)).save(image)
    findings: tuple[Finding, ...] = ()
    if malignant:
        mask = np.zeros((SIDE, SIDE), np.uint8)
        mask[LESION] = 255
        Image.fromarray(mask).save(tmp_path / f"{name}_mask.png")
        findings = (Finding("1", "malignant", "irregular mass", "Mass", {}, tmp_path / f"{name}_mask.png"),)
    return ImageRecord(name, name, image, "CC", "L", findings)


def _maps(record: ImageRecord, *, malignant_logit: float, peak: tuple[int, int], maxima: np.ndarray) -> ImageMaps:
    """Every unit fires at ``peak`` only, at its entry of ``maxima``; the logits are the same in every cell,
    0 for normal and benign and ``malignant_logit`` for malignant, so the image's scores are their softmax."""
    features = np.zeros((len(maxima), 4, 4), np.float32)
    features[:, peak[0], peak[1]] = maxima
    logits = np.zeros((3, 4, 4), np.float32)
    logits[2] = malignant_logit
    return ImageMaps(record=record, pixels=np.zeros((SIDE, SIDE), np.float32), input_shape=(SIDE, SIDE),
                     logits=logits, features=features, gray=np.full((SIDE, SIDE), 0.6, np.float32))


def _compare(candidate: list[ImageMaps], reference: list[ImageMaps]) -> dict:
    return compare(candidate, reference, weight=WEIGHT, classes=CLASSES, labels={}, rankings={},
                   score_rule="breast_peak", dataset={"part": "test"})


@pytest.fixture
def images(tmp_path: Path) -> list[ImageRecord]:
    """Three malignant images, then three normal ones."""
    return [_record(tmp_path, f"m{i}", True) for i in range(3)] + [_record(tmp_path, f"n{i}", False) for i in range(3)]


# Malignant logits: the malignant images 1, 2, 3 and the normal ones -1, -2, -3, so both AUCs are 1.
REFERENCE_LOGITS = (1.0, 2.0, 3.0, -1.0, -2.0, -3.0)


def test_units_shared_and_pearson_have_their_known_values() -> None:
    scores = np.array([9, 8, 7, 6, 5, 4, 3], np.float32)
    assert units_shared(scores, scores) == 5
    swapped = scores.copy()
    swapped[[0, 6]] = swapped[[6, 0]]  # unit 0 drops out of the top 5, unit 6 comes in
    assert units_shared(swapped, scores) == 4
    assert units_shared(-scores, scores) == 3  # top 5 of the reversed order: units 2..6, of which 2, 3, 4 shared
    a = np.array([[1.0, 2.0], [3.0, 5.0]])
    assert pearson(a, 3 * a + 7) == pytest.approx(1.0)
    assert pearson(a, -a) == pytest.approx(-1.0)
    assert pearson(np.array([1.0, -1.0, 1.0, -1.0]), np.array([1.0, 1.0, -1.0, -1.0])) == 0.0
    assert pearson(np.ones(4), np.ones(4)) == 1.0 and pearson(np.ones(4), np.arange(4.0)) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        pearson(np.ones(4), np.ones(5))


def test_gate_checks_hold_at_their_bounds_and_fail_beyond() -> None:
    def figures(auc: float, shared: float, r: float, points: float | None) -> dict:
        return {"auc_delta": {"normal": 0.0, "benign": None, "malignant": auc},
                "top5_units_shared_median": {"normal": 5.0, "malignant": shared},
                "cam_pearson_median": {"normal": 1.0, "malignant": r}, "pointing_game_delta_points": points}

    at_bounds = gate_checks(figures(0.005, 4.0, 0.99, 2.0))
    assert {name: c["pass"] for name, c in at_bounds.items()} == dict.fromkeys(GATE_BOUNDS, True)
    assert at_bounds["auc_delta"] == {"value": 0.005, "bound": "<= 0.005", "pass": True}
    beyond = gate_checks(figures(0.0051, 3.5, 0.9899, 2.01))
    assert {name: c["pass"] for name, c in beyond.items()} == dict.fromkeys(GATE_BOUNDS, False)
    assert beyond["top5_units_shared"]["value"] == 3.5  # the worst class's median
    assert gate_checks(figures(0.0, 5.0, 1.0, None))["pointing_game_delta_points"]["pass"] is None  # not measured


def test_identical_maps_pass_every_gate_exactly(images: list[ImageRecord]) -> None:
    reference = [_maps(r, malignant_logit=z, peak=HIT, maxima=MAXIMA) for r, z in zip(images, REFERENCE_LOGITS)]
    gates = _compare(reference, reference)
    figures = gates["figures"]
    assert gates["pass"] is True and gates["images"] == 6
    assert figures["auc"]["fp32"] == {"normal": 1.0, "benign": None, "malignant": 1.0}
    assert figures["auc_delta"] == {"normal": 0.0, "benign": None, "malignant": 0.0}
    assert figures["pointing_game"] == {"int8": 1.0, "fp32": 1.0}
    assert figures["top5_units_shared_median"] == dict.fromkeys(CLASSES, 5.0)
    assert figures["cam_pearson_median"] == dict.fromkeys(CLASSES, 1.0)


def test_gates_measure_known_changes(images: list[ImageRecord]) -> None:
    """The candidate: unit 5 outranks unit 4 everywhere (4 of the top 5 shared), m0's malignant logit falls
    from 1 to -1.5 (below n0's -1 only: 1 of 9 pairs flips, both AUCs 8/9), and m2's peak moves off its
    lesion (the pointing game 3/3 -> 2/3, 33.3 points; that image's CAMs correlate -1/15, the median stays 1)."""
    reference = [_maps(r, malignant_logit=z, peak=HIT, maxima=MAXIMA) for r, z in zip(images, REFERENCE_LOGITS)]
    boosted = MAXIMA.copy()
    boosted[5] = 10.0
    logits = (-1.5, *REFERENCE_LOGITS[1:])
    peaks = [HIT, HIT, MISS, HIT, HIT, HIT]
    candidate = [_maps(r, malignant_logit=z, peak=p, maxima=boosted) for r, z, p in zip(images, logits, peaks)]
    gates = _compare(candidate, reference)
    figures = gates["figures"]
    assert figures["auc"]["int8"]["malignant"] == pytest.approx(8 / 9)
    assert figures["auc_delta"]["malignant"] == pytest.approx(1 / 9)
    assert figures["auc_delta"]["normal"] == pytest.approx(1 / 9)  # the normal score falls as the malignant rises
    assert figures["pointing_game"] == {"int8": pytest.approx(2 / 3), "fp32": 1.0}
    assert figures["pointing_game_delta_points"] == pytest.approx(100 / 3)
    assert figures["top5_units_shared_median"] == dict.fromkeys(CLASSES, 4.0)
    assert figures["top5_units_shared_min"] == dict.fromkeys(CLASSES, 4)
    assert figures["cam_pearson_median"] == dict.fromkeys(CLASSES, pytest.approx(1.0))
    assert figures["cam_pearson_min"] == dict.fromkeys(CLASSES, pytest.approx(-1 / 15))
    checks = gates["checks"]
    assert {name: c["pass"] for name, c in checks.items()} == {
        "auc_delta": False, "top5_units_shared": True, "cam_pearson": True, "pointing_game_delta_points": False}
    assert gates["pass"] is False


def test_compare_refuses_maps_of_other_images(images: list[ImageRecord]) -> None:
    maps = [_maps(r, malignant_logit=0.0, peak=HIT, maxima=MAXIMA) for r in images]
    with pytest.raises(ValueError, match="same images in the same order"):
        _compare(maps[::-1], maps)


# -- the graph's float regions -----------------------------------------------


def test_float_regions_of_the_resnet18_graph(tiny_bundle: Path) -> None:
    model = onnx.load(str(tiny_bundle / ONNX_FILE))
    nodes = {n.name: n for n in model.graph.node}
    assert len(residual_outputs(model.graph)) == 8  # ResNet-18: 2 basic blocks in each of 4 layers
    regions = {region: float_nodes(model, region, depth=18) for region in ("none", "head", "last-block", "layer4")}
    assert regions["none"] == []
    assert [nodes[n].op_type for n in regions["head"]] == ["Conv"] and nodes[regions["head"][0]].output == ["logits"]
    # The last basic block: conv, relu, conv, add, relu; layer4's first adds the downsampling conv.
    assert sorted(nodes[n].op_type for n in regions["last-block"]) == ["Add", "Conv", "Conv", "Conv", "Relu", "Relu"]
    assert len(regions["layer4"]) == 12 and set(regions["last-block"]) < set(regions["layer4"])
    with pytest.raises(ValueError, match="float region must be one of"):
        float_nodes(model, "layer3", depth=18)


# -- python -m training quantize ----------------------------------------------


def test_quantize_command_adds_a_hashed_int8_graph_with_its_gates(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle_dir = tmp_path / "tiny"
    shutil.copytree(tiny_bundle, bundle_dir)
    before = load_bundle(bundle_dir)
    code = main(["-q", "quantize", "--bundle", str(bundle_dir), "--calibration", "minmax", "entropy",
                 "--float", "layer4", "--repeats", "1"])
    out = capsys.readouterr().out
    bundle = load_bundle(bundle_dir)  # verifies every file, the new one included
    assert bundle.hash != before.hash and before.hash[:12] in out and bundle.hash[:12] in out
    assert INT8_ONNX_FILE in bundle.meta["files"] and not list(tmp_path.glob("tiny.int8.*"))
    int8 = bundle.int8
    assert int8 is not None and code == (0 if int8["gates"]["pass"] else 1)
    quantization = int8["quantization"]
    assert quantization["format"] == "QDQ" and quantization["calibration"]["method"] in ("minmax", "entropy")
    assert quantization["calibration"]["images"] == bundle.meta["split"]["images"]["holdout"]
    assert quantization["float_region"] == "layer4" and len(quantization["float_nodes"]) == 12
    assert int8["gates"]["images"] == bundle.meta["split"]["images"]["test"]
    assert set(int8["gates"]["checks"]) == set(GATE_BOUNDS)
    assert [(t["calibration"], t["float_region"]) for t in int8["trials"]] == [("minmax", "layer4"),
                                                                             ("entropy", "layer4")]
    assert int8["speed"]["int8_median_s"] > 0 and int8["speed"]["cpu"]["model"]
    assert bundle.int8_failed_gates() == [f"{n}: {c['value']} ({c['bound']})"
                                          for n, c in int8["gates"]["checks"].items() if c["pass"] is False]
    graph = onnx.load(str(bundle.path(INT8_ONNX_FILE)))
    ops = {n.op_type for n in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert [i.name for i in graph.graph.input] == ["image"] and [o.name for o in graph.graph.output] == [
        "logits", "features"]
    assert json.loads((bundle_dir / "meta.json").read_text())["int8"]["file"] == INT8_ONNX_FILE


def test_quantize_needs_the_bundles_images(tiny_bundle: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    bundle_dir = tmp_path / "tiny"
    shutil.copytree(tiny_bundle, bundle_dir)
    assert main(["quantize", "--bundle", str(bundle_dir), "--manifest", str(tmp_path / "absent.csv")]) == 2
    assert "absent.csv" in capsys.readouterr().err


@pytest.mark.slow
def test_build_with_int8_quantizes_a_bundle_with_auxiliary_features(
    phantom_records: list[ImageRecord], tmp_path: Path
) -> None:
    """``build --int8`` end to end, on a model whose graph takes ``aux``: that path stays in float and is fed."""
    import dataclasses

    from service.backends.onnx import OnnxBackend
    from training.config import TrainConfig
    from training.manifest import write_manifest
    from training.pipeline import build_bundle

    cases = sorted({r.case_id for r in phantom_records})
    records = [dataclasses.replace(r, aux={"age": 40.0 + 3 * cases.index(r.case_id)}) for r in phantom_records]
    manifest = tmp_path / "manifest.csv"
    write_manifest(manifest, records)
    config = TrainConfig(name="tiny-aux-int8", depth=18, patch_size=32, epochs=1, lr=0.01, lr_decay_epoch=None,
                         samples_per_epoch=128, balance_classes=True, device="cpu", aux_features=("age",))
    bundle = load_bundle(build_bundle(manifest, tmp_path / "bundle", config, progress=False, int8=True))
    int8 = bundle.int8
    assert int8 is not None and len(int8["trials"]) == 12  # every calibration method x float region
    assert int8["quantization"]["calibration"]["images"] == bundle.meta["split"]["images"]["holdout"]
    model = onnx.load(str(bundle.path(INT8_ONNX_FILE)))
    on_aux = {n.name for n in model.graph.node if "aux" in n.input}
    assert on_aux and on_aux <= set(int8["quantization"]["float_nodes"])  # the aux term is never quantized
    x = np.random.default_rng(0).standard_normal((1, 3, 128, 96), dtype=np.float32)
    logits, features = OnnxBackend(bundle, device="cpu", precision="int8").run(x, np.array([[50.0]], np.float32))
    assert np.isfinite(logits).all() and features.shape[0] == 512
