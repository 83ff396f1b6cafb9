"""Auxiliary features in training: ``aux:`` manifest columns, DDP, and a tiny end-to-end build.

Run as a script (``torchrun ... tests/training/test_aux_training.py OUT``) this
file is the DDP worker: every rank fine-tunes the same tiny ResNet-18 with an
auxiliary feature and saves its final state to ``OUT/rank<r>.pt``.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from deepminer.auxiliary import AuxFeature, fit_normalisation
from deepminer.bundle import load_bundle
from deepminer.fcn import build_classifier, to_fcn
from deepminer.formulas import auxiliary_term, class_activation_map
from deepminer.imaging import network_input, read_image
from training.config import TrainConfig
from training.config_file import read_run_file, write_run_file
from training.data import PatchSet
from training.distributed import DistContext
from training.manifest import ImageRecord, ManifestError, read_manifest, write_manifest
from training.patches import Box
from training.split import split_by_case
from training.train import fine_tune

TINY_CONFIG = TrainConfig(
    name="tiny-aux-resnet18", depth=18, patch_size=32, epochs=1, batch_size=32, lr=0.01, lr_decay_epoch=None,
    samples_per_epoch=256, top_per_image=8, top_per_class=20, device="cpu", aux_features=("age",),
)


def case_ages(records: list[ImageRecord]) -> dict[str, float]:
    """A made-up age per case: older for cases with a malignant finding."""
    ages: dict[str, float] = {}
    for i, case in enumerate(dict.fromkeys(r.case_id for r in records)):
        malignant = any(r.pathology == "malignant" for r in records if r.case_id == case)
        ages[case] = 45.0 + 2.5 * i + (12.0 if malignant else 0.0)
    return ages


@pytest.fixture(scope="module")
def aux_manifest(phantom_records: list[ImageRecord], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The phantom manifest with an ``aux:age`` column (written by write_manifest; paths absolute)."""
    ages = case_ages(phantom_records)
    records = [dataclasses.replace(r, aux={"age": ages[r.case_id]}) for r in phantom_records]
    path = tmp_path_factory.mktemp("aux-manifest") / "manifest.csv"
    write_manifest(path, records)
    return path


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def _write(path: Path, header: list[str], rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return path


# -- manifest ---------------------------------------------------------------


def test_manifest_aux_columns_round_trip(aux_manifest, phantom_records, tmp_path):
    header, _ = _rows(aux_manifest)
    assert header[-1] == "aux:age"
    records = read_manifest(aux_manifest)
    assert [r.image_id for r in records] == [r.image_id for r in phantom_records]
    ages = case_ages(phantom_records)
    assert [r.aux for r in records] == [{"age": ages[r.case_id]} for r in phantom_records]
    again = tmp_path / "again.csv"
    write_manifest(again, records)
    assert [r.aux for r in read_manifest(again)] == [r.aux for r in records]
    # Without aux columns, records carry none (and the phantom manifest has none).
    assert all(r.aux == {} for r in phantom_records)


@pytest.mark.parametrize(
    ("value", "message"),
    [("", "empty auxiliary value"), ("sixty", "must be a number, got 'sixty'"), ("inf", "must be finite")],
)
def test_manifest_aux_value_errors_name_the_line(aux_manifest, tmp_path, value, message):
    header, rows = _rows(aux_manifest)
    rows[3]["aux:age"] = value
    with pytest.raises(ManifestError, match=message) as info:
        read_manifest(_write(tmp_path / "m.csv", header, rows))
    assert (info.value.line, info.value.column) == (5, "aux:age")  # header is line 1, rows[3] is line 5


def test_manifest_aux_must_agree_within_a_case(aux_manifest, tmp_path):
    header, rows = _rows(aux_manifest)
    case = rows[0]["case_id"]
    later = max(i for i, row in enumerate(rows) if row["case_id"] == case)
    rows[later]["aux:age"] = "99"
    with pytest.raises(ManifestError, match=f"case '{case}' has aux:age .* on line 2 but 99.0 here") as info:
        read_manifest(_write(tmp_path / "m.csv", header, rows))
    assert (info.value.line, info.value.column) == (later + 2, "aux:age")


def test_manifest_aux_header_and_writer_errors(aux_manifest, tmp_path):
    header, rows = _rows(aux_manifest)
    for row in rows:
        row["aux:"] = "1"
    with pytest.raises(ManifestError, match="unique name after 'aux:'"):
        read_manifest(_write(tmp_path / "m.csv", [*header, "aux:"], rows))
    records = read_manifest(aux_manifest)
    with pytest.raises(ManifestError, match="auxiliary features must be finite numbers for every image"):
        write_manifest(tmp_path / "w.csv", [dataclasses.replace(records[0], aux={}), *records[1:]])
    same_case = [r for r in records if r.case_id == records[0].case_id]
    with pytest.raises(ManifestError, match="differ from those of another image of case"):
        write_manifest(tmp_path / "w.csv", [same_case[0], dataclasses.replace(same_case[1], aux={"age": 1.0})])


def test_config_aux_features_round_trip(tmp_path):
    config = TrainConfig(aux_features=("age", "prs"))
    assert config.to_dict()["aux_features"] == ["age", "prs"]
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert read_run_file(write_run_file(tmp_path / "run.toml", config)).config == config
    for bad in ("age", ["age", "age"], ["", "x"], [1]):
        with pytest.raises(ValueError, match="aux_features"):
            TrainConfig.from_dict({"aux_features": bad})


def test_cli_aux_features_flag():
    from training.cli import _config_from, build_parser

    args = build_parser().parse_args(["build", "--manifest", "m.csv", "--out", "b", "--aux-features", "age, prs"])
    assert _config_from(args, TrainConfig()).aux_features == ("age", "prs")
    args = build_parser().parse_args(["build", "--manifest", "m.csv", "--out", "b"])
    assert _config_from(args, TrainConfig()).aux_features == ()


def test_build_names_a_missing_aux_column(phantom_manifest, tmp_path):
    from training.pipeline import build_bundle

    with pytest.raises(ValueError, match=r"aux_features \['age'\] have no aux:<name> column; the manifest has none"):
        build_bundle(phantom_manifest, tmp_path / "b", TINY_CONFIG, progress=False)


# -- DDP --------------------------------------------------------------------

DDP_CONFIG = TrainConfig(
    name="ddp-aux-check", depth=18, patch_size=64, epochs=1, batch_size=13, samples_per_epoch=26, lr=0.01,
    lr_decay_epoch=None, device="cpu", eval_batch_size=4, aux_features=("age",),
)
DDP_FEATURES = (AuxFeature("age", 60.0, 10.0),)
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def synthetic_patches(n: int, seed: int) -> PatchSet:
    rng = np.random.default_rng(seed)
    pixels = rng.random((n, DDP_CONFIG.patch_size, DDP_CONFIG.patch_size)).astype(np.float16)
    labels = np.arange(n, dtype=np.int64) % 3
    aux = (60.0 + 10.0 * rng.standard_normal((n, 1)) + 5.0 * labels[:, None]).astype(np.float32)
    return PatchSet(pixels, labels, tuple(f"img{i}" for i in range(n)), tuple(Box(0, 0, 1) for _ in range(n)), aux)


def train_once(dist: DistContext | None) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_classifier(depth=18, num_classes=3, aux_features=DDP_FEATURES)
    result = fine_tune(model, synthetic_patches(40, 1), synthetic_patches(11, 2), DDP_CONFIG,
                       device=torch.device("cpu"), progress=False, dist=dist)
    return result.model.state_dict()


def _worker(out: Path) -> None:
    from training.distributed import distributed_run

    torch.set_num_threads(1)
    with distributed_run("cpu") as dist:
        torch.save(train_once(dist), out / f"rank{dist.rank}.pt")


def test_ddp_with_aux_matches_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    run = subprocess.run([*TORCHRUN, __file__, str(tmp_path)], env=env, capture_output=True, text=True,
                         timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    single = train_once(None)
    assert float(single["aux.weight"].abs().max()) > 1e-3  # V, zero at the start, was trained
    for rank in (0, 1):
        ddp = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert set(ddp) == set(single)
        for name, expected in single.items():
            if expected.is_floating_point():
                torch.testing.assert_close(ddp[name], expected, rtol=1e-4, atol=1e-5, msg=f"{name} on rank {rank}")


# -- end to end -------------------------------------------------------------


@pytest.fixture(scope="module")
def aux_bundle(aux_manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.pipeline import build_bundle

    logging.getLogger("onnx_ir").setLevel(logging.WARNING)
    logging.getLogger("onnxscript").setLevel(logging.WARNING)
    return build_bundle(aux_manifest, tmp_path_factory.mktemp("aux-bundle") / "tiny-aux", TINY_CONFIG, progress=False)


def test_bundle_records_aux_features_and_train_normalisation(aux_bundle, aux_manifest):
    bundle = load_bundle(aux_bundle)
    (feature,) = bundle.aux_features
    records = read_manifest(aux_manifest)
    train = split_by_case(records, seed=TINY_CONFIG.seed, fractions=TINY_CONFIG.split_fractions)["train"]
    (expected,) = fit_normalisation(["age"], list({r.case_id: r.aux for r in train}.values()))
    assert feature == expected
    all_cases = np.array(list({r.case_id: r.aux["age"] for r in records}.values()))
    assert feature.mean != pytest.approx(all_cases.mean(), abs=1e-9)  # the train split's, not all cases'
    assert bundle.meta["model"]["aux_features"] == [expected.to_json()]
    assert bundle.meta["model"]["onnx"]["aux_input"]["name"] == "aux"
    assert bundle.meta["training"]["config"]["aux_features"] == ["age"]
    assert bundle.aux_weight is not None and bundle.aux_weight.shape == (3, 1)
    assert float(np.abs(bundle.aux_weight).max()) > 0  # V was trained


def test_onnx_takes_aux_and_agrees_with_torch(aux_bundle, aux_manifest):
    bundle = load_bundle(aux_bundle)
    graph = onnx.load(str(bundle.path("fcn.onnx"))).graph
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert inputs == {"image": ["batch", 3, "height", "width"], "aux": ["batch", 1]}
    assert [o.name for o in graph.output] == ["logits", "features"]

    model = build_classifier(depth=18, num_classes=3, aux_features=bundle.aux_features)
    model.load_state_dict(torch.load(bundle.path("weights.pt"), weights_only=True))
    fcn = to_fcn(model).eval()
    record = read_manifest(aux_manifest)[0]
    x = network_input(read_image(record.image_path), short_side=bundle.input_short_side)
    session = ort.InferenceSession(str(bundle.path("fcn.onnx")), providers=["CPUExecutionProvider"])
    weight, bias = bundle.head
    (feature,) = bundle.aux_features
    for age in (record.aux["age"], 30.0, 90.0):
        aux = np.array([[age]], dtype=np.float32)
        onnx_logits, onnx_features = session.run(["logits", "features"], {"image": x, "aux": aux})
        with torch.inference_mode():
            logits, features = fcn(torch.from_numpy(x), torch.from_numpy(aux))
        np.testing.assert_allclose(onnx_logits, logits.numpy(), atol=1e-3)
        np.testing.assert_allclose(onnx_features, features.numpy(), atol=1e-3)
        # The logit map is CAM + bias + the aux term, with raw values in and normalisation in the graph.
        term = auxiliary_term(aux[0], np.array([feature.mean]), np.array([feature.std]), bundle.aux_weight)
        for c in range(3):
            cam = class_activation_map(onnx_features[0], weight, c)
            np.testing.assert_allclose(cam + bias[c] + term[c], onnx_logits[0, c], atol=1e-3)


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
