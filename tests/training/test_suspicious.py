"""Suspicious patches: per-image non-maximum suppression, the streamed top cells, and what the bundle records."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from deepminer.bundle import SUSPICIOUS_INDEX_FILE, load_bundle
from deepminer.fcn import build_classifier, to_fcn
from deepminer.formulas import softmax
from deepminer.grid import resized_shape
from deepminer.imaging import IMAGENET_MEAN, IMAGENET_STD, network_input, read_image
from deepminer.scoring import breast_cells
from training.config import TrainConfig
from training.patches import CLASSES
from training.ranking import fcn_maps
from training.suspicious import SuspiciousCells, non_max_suppression, suppression_radius


def test_suppression_radius_spans_half_a_patch_and_at_least_one_cell() -> None:
    assert suppression_radius(32) == 1  # one-cell patches: neighbours are near duplicates
    assert suppression_radius(128) == 2
    assert suppression_radius(227) == 4


@pytest.mark.parametrize("seed", range(5))
def test_non_max_suppression_keeps_the_best_cells_apart(seed: int) -> None:
    rng = np.random.default_rng(seed)
    prob = rng.random((7, 9))
    allowed = rng.random((7, 9)) > 0.2
    radius, n = 1 + seed % 2, 4
    kept = non_max_suppression(prob, allowed, radius=radius, n=n)
    values = [prob[c] for c in kept]
    assert values == sorted(values, reverse=True) and all(allowed[c] for c in kept)
    for a in range(len(kept)):
        for b in range(a):
            assert max(abs(kept[a][0] - kept[b][0]), abs(kept[a][1] - kept[b][1])) > radius
    # Brute force: greedy by value, each allowed cell taken unless a taken cell lies within the radius.
    expected: list[tuple[int, int]] = []
    for flat in sorted(range(prob.size), key=lambda f: (-prob.reshape(-1)[f], f)):
        cell = divmod(flat, prob.shape[1])
        near = any(max(abs(cell[0] - c[0]), abs(cell[1] - c[1])) <= radius for c in expected)
        if allowed[cell] and not near and len(expected) < n:
            expected.append(cell)
    assert kept == expected


def test_non_max_suppression_refuses_a_mask_of_another_shape() -> None:
    with pytest.raises(ValueError, match="allowed must be the map's shape"):
        non_max_suppression(np.zeros((3, 3)), np.ones((3, 4), bool), radius=1, n=2)


def test_a_count_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="whole number >= 1"):
        SuspiciousCells(CLASSES, n=0, patch_size=32)
    with pytest.raises(ValueError, match="suspicious_patches must be a whole number >= 1"):
        TrainConfig(suspicious_patches=0)


def test_streaming_keeps_the_same_cells_as_one_ranking_over_every_image(phantom_records) -> None:
    torch.manual_seed(0)
    fcn = to_fcn(build_classifier(depth=18, num_classes=3)).eval()
    args = {"short_side": 128, "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "device": torch.device("cpu")}
    maps = list(fcn_maps(fcn, phantom_records[:6], progress=False, **args))
    found = SuspiciousCells(CLASSES, n=5, patch_size=32)
    assert list(found.watch(maps)) == maps  # passed through unchanged
    assert found.lesion_classes == ("benign", "malignant") and found.images == 6
    for name in found.lesion_classes:
        c = CLASSES.index(name)
        everything = []  # every suppression survivor of every image at once, then the best five
        for order, item in enumerate(maps):
            prob = softmax(item.logits.astype(np.float64), axis=0)[c]
            breast = breast_cells(item.gray, prob.shape)
            allowed = breast if breast.any() else np.ones(prob.shape, bool)
            for i, j in non_max_suppression(prob, allowed, radius=1, n=prob.size):
                everything.append((-prob[i, j], order, (i, j)))
        kept = [(-cell.probability, cell.order, cell.cell) for cell in found.best[name]]
        assert kept == sorted(everything)[:5]
        assert all(cell.class_name == name for cell in found.best[name])


def test_the_bundle_records_the_top_cells_per_lesion_class(tiny_bundle, phantom_records) -> None:
    bundle = load_bundle(tiny_bundle)
    entry = bundle.meta["suspicious_patches"]
    assert entry["file"] == SUSPICIOUS_INDEX_FILE and entry["source"] == "holdout"
    assert entry["classes"] == ["benign", "malignant"] and entry["per_class"] == TrainConfig().suspicious_patches
    index = bundle.suspicious_patches
    assert index == json.loads(bundle.path(SUSPICIOUS_INDEX_FILE).read_text())
    assert index["images_seen"] == bundle.meta["split"]["images"]["holdout"]
    by_id = {r.image_id: r for r in phantom_records}
    weights = build_classifier(depth=18, num_classes=3)
    weights.load_state_dict(torch.load(bundle.path("weights.pt"), weights_only=True))
    fcn = to_fcn(weights).eval()
    probabilities: dict[str, np.ndarray] = {}
    for name in entry["classes"]:
        rows = [p for p in index["patches"] if p["class"] == name]
        assert 0 < len(rows) <= entry["per_class"]
        assert [p["rank"] for p in rows] == list(range(1, len(rows) + 1))
        values = [p["probability"] for p in rows]
        assert values == sorted(values, reverse=True)
        for p in rows:
            image = index["images"][p["image_id"]]
            assert bundle.has(image["file"])
            original = read_image(by_id[p["image_id"]].image_path)
            assert image["original_shape"] == list(original.shape)
            assert image["shape"] == list(resized_shape(*original.shape, bundle.input_short_side))
            with Image.open(bundle.path(image["file"])) as png:
                assert (png.height, png.width) == tuple(image["shape"]) and png.mode == "L"
            for key, shape in (
                ("box", original.shape),
                ("cell_box", original.shape),
                ("context_box", image["shape"]),
                ("context_cell_box", image["shape"]),
            ):
                b = p[key]
                assert 0 <= b["top"] and b["top"] + b["height"] <= shape[0] + 1e-6, (key, b, shape)
                assert 0 <= b["left"] and b["left"] + b["width"] <= shape[1] + 1e-6, (key, b, shape)
                assert b["height"] > 0 and b["width"] > 0
            # The cell's centre lies inside both of its boxes.
            i, j = p["cell"]
            cy, cx = 32 * i + 0.5, 32 * j + 0.5
            for key in ("context_box", "context_cell_box"):
                b = p[key]
                assert b["top"] <= cy <= b["top"] + b["height"] and b["left"] <= cx <= b["left"] + b["width"]
            # The probability is the FCN's softmax at that cell of the original hold-out image.
            if p["image_id"] not in probabilities:
                x = network_input(original, short_side=bundle.input_short_side)
                with torch.inference_mode():
                    logits, _ = fcn(torch.from_numpy(x))
                probabilities[p["image_id"]] = softmax(logits[0].numpy().astype(np.float64), axis=0)
            prob = probabilities[p["image_id"]][CLASSES.index(name), i, j]
            assert p["probability"] == pytest.approx(prob, abs=1e-4)
        # No two kept cells of one image sit next to each other (one per lesion).
        for a in rows:
            for b in rows:
                if a is not b and a["image_id"] == b["image_id"]:
                    assert max(abs(a["cell"][0] - b["cell"][0]), abs(a["cell"][1] - b["cell"][1])) > 1


def test_the_count_per_class_is_a_build_option_recorded_in_the_run_file() -> None:
    from training.cli import _config_from, build_parser

    args = build_parser().parse_args(["build", "--manifest", "m.csv", "--out", "b", "--suspicious-patches", "5"])
    config = _config_from(args, TrainConfig())
    assert config.suspicious_patches == 5
    assert TrainConfig.from_dict(config.to_dict()) == config
    args = build_parser().parse_args(["build", "--manifest", "m.csv", "--out", "b"])
    assert _config_from(args, TrainConfig()).suspicious_patches == TrainConfig().suspicious_patches == 24
    with pytest.raises(SystemExit):
        build_parser().parse_args(["build", "--manifest", "m.csv", "--out", "b", "--suspicious-patches", "0"])
