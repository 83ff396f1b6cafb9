"""Unit visualisations: streamed top patches, Lu & Perer masks, source boxes, the bundle's units/ folder."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepminer.bundle import PATCHES_PER_UNIT, UNITS_INDEX_FILE, finalise_bundle, load_bundle
from deepminer.fcn import build_classifier, to_fcn
from deepminer.imaging import IMAGENET_MEAN, IMAGENET_STD, read_image
from deepminer.unit_patches import TOP_PATCHES_FILE, TopPatchTable
from training.cli import build_parser
from training.config import TrainConfig
from training.config_file import read_run_file
from training.data import cut_patches
from training.evaluate import batch_input
from training.patches import CLASSES, PatchRule, crop_patch
from training.pipeline import build_bundle, unit_visualisation_meta
from training.ranking import UnitRanking
from training.visualise import (
    dim_outside,
    merge_top,
    to_uint8,
    top_activating_patches,
    write_top_patch_table,
    write_unit_visualisations,
)

PATCH = 64  # a 2x2 layer4 grid, so the upsampled masks are not constant
UNITS = (3, 17, 100, 511)
ARGS = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "device": torch.device("cpu"), "progress": False}


@pytest.fixture(scope="module")
def body():
    torch.manual_seed(2)
    return to_fcn(build_classifier(depth=18, num_classes=3)).eval().body


@pytest.fixture(scope="module")
def patches(phantom_records):
    return cut_patches(phantom_records[:3], rule=PatchRule(), patch_size=PATCH, progress=False)


@pytest.fixture(scope="module")
def all_maps(body, patches):
    with torch.inference_mode():
        return body(batch_input(patches.pixels, IMAGENET_MEAN, IMAGENET_STD)).numpy()  # (N, K, 2, 2)


def test_streamed_top_patches_match_brute_force(body, patches, all_maps):
    assert len(patches) > 10
    top = top_activating_patches(body, patches, UNITS, n=5, batch_size=3, **ARGS)
    for u, k in enumerate(UNITS):
        acts = all_maps[:, k].reshape(len(patches), -1).max(axis=1)
        expected = sorted(range(len(patches)), key=lambda i: (-acts[i], i))[:5]
        assert list(top.indices[u]) == expected
        np.testing.assert_allclose(top.activations[u], acts[expected], rtol=1e-5)
        np.testing.assert_allclose(top.maps[u], all_maps[expected, k], rtol=1e-5, atol=1e-6)
        # the patch threshold: the 99th percentile over every cell of every patch
        cells = np.sort(all_maps[:, k].ravel())
        assert top.patch_thresholds[u] == cells[-math.ceil(0.01 * cells.size)]
    # the batch size does not change the result
    whole = top_activating_patches(body, patches, UNITS, n=5, batch_size=len(patches), **ARGS)
    np.testing.assert_array_equal(whole.indices, top.indices)


def test_merge_top_breaks_ties_to_the_lower_index():
    empty = (np.empty((1, 0)), np.empty((1, 0), np.int64), np.empty((1, 0, 1, 1)))
    first = merge_top(empty, (np.array([[1.0, 2.0, 1.0]]), np.array([[0, 1, 2]]), np.zeros((1, 3, 1, 1))), 2)
    second = merge_top(first, (np.array([[2.0, 1.0]]), np.array([[3, 4]]), np.zeros((1, 2, 1, 1))), 3)
    assert second[1].tolist() == [[1, 3, 0]]


def test_fewer_patches_than_n_are_padded(body, patches):
    few = type(patches)(patches.pixels[:2], patches.labels[:2], patches.image_ids[:2], patches.boxes[:2])
    top = top_activating_patches(body, few, UNITS[:1], n=4, **ARGS)
    assert top.indices[0].tolist()[2:] == [-1, -1] and np.isneginf(top.activations[0, 2:]).all()


def _bilinear_brute_force(grid: np.ndarray, size: int) -> np.ndarray:
    """Cell (i, j) is centred on pixel (32 i, 32 j) of the patch; hold the edges, interpolate in between."""
    h, w = grid.shape
    out = np.zeros((size, size))
    for y in range(size):
        for x in range(size):
            gy, gx = min(y / 32, h - 1), min(x / 32, w - 1)
            y0, x0 = int(gy), int(gx)
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            fy, fx = gy - y0, gx - x0
            out[y, x] = ((1 - fy) * (1 - fx) * grid[y0, x0] + (1 - fy) * fx * grid[y0, x1]
                         + fy * (1 - fx) * grid[y1, x0] + fy * fx * grid[y1, x1])
    return out


def _ranking(thresholds: np.ndarray, units) -> UnitRanking:
    counts = np.zeros((3, thresholds.shape[0]), dtype=np.int64)
    counts[2, list(units)] = np.arange(len(units), 0, -1)
    return UnitRanking(classes=CLASSES, num_images=4, top_per_image=8, top_per_class=20, counts=counts,
                       influence_sum=counts.astype(float), thresholds=thresholds, threshold_quantile=0.99)


def test_written_patches_masks_and_boxes(tmp_path, body, patches, all_maps, phantom_records):
    top = top_activating_patches(body, patches, UNITS, n=4, **ARGS)
    thresholds = np.zeros(512, dtype=np.float32)
    for u, k in enumerate(UNITS):  # a threshold inside the top maps' range, so masks are partial
        thresholds[k] = np.median(top.maps[u])
    ranking = _ranking(thresholds, UNITS)
    index = write_unit_visualisations(
        tmp_path, top, patches, phantom_records[:3], ranking, threshold_source="ranking", progress=False
    )

    assert index == json.loads((tmp_path / UNITS_INDEX_FILE).read_text())
    assert sorted(index, key=int) == [str(k) for k in UNITS]
    records = {r.image_id: r for r in phantom_records}
    partial = 0
    for u, k in enumerate(UNITS):
        entry = index[str(k)]
        assert entry["threshold"] == pytest.approx(float(thresholds[k]))
        assert entry["classes"] == {"malignant": {"rank": u + 1, "count": len(UNITS) - u}}
        assert [p["rank"] for p in entry["patches"]] == [1, 2, 3, 4]
        acts = [p["activation"] for p in entry["patches"]]
        assert acts == sorted(acts, reverse=True)
        for col, item in enumerate(entry["patches"]):
            i = int(top.indices[u, col])
            # the box names the source image and lies inside it; cropping it again gives the patch
            source = read_image(records[item["image_id"]].image_path)
            box = item["box"]
            assert box["top"] >= 0 and box["left"] >= 0
            assert box["top"] + box["side"] <= source.shape[0] and box["left"] + box["side"] <= source.shape[1]
            assert item["image_id"] == patches.image_ids[i]
            pixels = crop_patch(source, patches.boxes[i], PATCH)
            patch_png = np.asarray(Image.open(tmp_path / item["patch"]))
            assert patch_png.shape == (PATCH, PATCH)
            np.testing.assert_allclose(patch_png, to_uint8(pixels), atol=1)
            # the masked patch is the patch dimmed outside the unit's thresholded, upsampled map
            mask = _bilinear_brute_force(all_maps[i, k], PATCH) > thresholds[k]
            masked_png = np.asarray(Image.open(tmp_path / item["masked"]))
            expected = dim_outside(patches.pixels[i].astype(np.float32), mask)
            np.testing.assert_array_equal(masked_png, expected)
            assert item["mask_fraction"] == pytest.approx(mask.mean())
            partial += 0 < mask.mean() < 1
            context = Image.open(tmp_path / item["context"])
            assert context.height <= 256
            assert context.height / source.shape[0] == pytest.approx(context.width / source.shape[1], rel=0.02)
            cbox = item["context_box"]
            assert cbox["top"] == pytest.approx(box["top"] * context.height / source.shape[0], abs=0.01)
            assert cbox["top"] + cbox["height"] <= context.height + 0.01
    assert partial > 0
    assert index["3"]["threshold_source"] == "ranking"
    assert index["3"]["thresholds"] == {"ranking": pytest.approx(thresholds[3]),
                                        "patches": pytest.approx(top.patch_thresholds[0])}
    contexts = {p["context"] for e in index.values() for p in e["patches"]}
    assert len(contexts) == len({p["image_id"] for e in index.values() for p in e["patches"]})


def test_bundle_holds_unit_visualisations(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    index = bundle.unit_index
    assert index is not None and UNITS_INDEX_FILE in bundle.meta["files"]
    rankings = bundle.rankings
    ranked = {u["unit_id"] for e in rankings["per_class"].values() for u in e["units"]}
    assert {int(k) for k in index} == ranked
    patch_size = bundle.meta["preprocessing"]["patch_size"]
    holdout = bundle.meta["split"]["patches"]["holdout"]
    per_unit = min(24, sum(holdout.values()))  # PATCHES_PER_UNIT, build_bundle's default
    for unit, entry in index.items():
        # masks use the hold-out patches' threshold; the whole-mammogram one is recorded beside it
        assert entry["threshold_source"] == "patches"
        assert entry["threshold"] == pytest.approx(entry["thresholds"]["patches"])
        assert entry["thresholds"]["ranking"] == pytest.approx(rankings["unit_thresholds"][int(unit)])
        for name, rank in entry["classes"].items():
            listed = rankings["per_class"][name]["units"][rank["rank"] - 1]
            assert listed["unit_id"] == int(unit) and listed["count"] == rank["count"]
        assert len(entry["patches"]) == per_unit
        for item in entry["patches"]:
            for key in ("patch", "masked", "context"):
                assert item[key] in bundle.meta["files"] and (tiny_bundle / item[key]).is_file()
            assert Image.open(tiny_bundle / item["patch"]).size == (patch_size, patch_size)
            assert Image.open(tiny_bundle / item["context"]).height <= 256
    meta = bundle.meta["unit_visualisation"]
    assert meta["index"] == UNITS_INDEX_FILE and meta["patches_per_unit"] == PATCHES_PER_UNIT == 24
    # meta.json says the threshold the masks were made with, not the ranking's
    assert meta["threshold_source"] == "patches"
    assert "0.99 quantile of its layer4 activations over every hold-out patch" in meta["mask"]
    assert "recorded beside it but not used" in meta["mask"]


def test_visualisation_meta_names_the_threshold_used():
    ranking = unit_visualisation_meta(top_patches=30, threshold_source="ranking", quantile=0.99)
    assert ranking["patches_per_unit"] == 30 and ranking["threshold_source"] == "ranking"
    assert "rankings.json unit_thresholds" in ranking["mask"] and "hold-out patch" not in ranking["mask"]
    patches = unit_visualisation_meta(top_patches=24, threshold_source="patches", quantile=0.95)
    assert "the unit's 0.95 quantile" in patches["mask"]
    with pytest.raises(ValueError, match="threshold_source must be one of .*got 'x'"):
        unit_visualisation_meta(top_patches=24, threshold_source="x", quantile=0.99)


def test_top_patches_reaches_the_pipeline_from_the_cli_and_run_file(tmp_path, phantom_manifest):
    args = ["build", "--manifest", "m.csv", "--out", "b"]
    assert build_parser().parse_args(args).top_patches == 24
    assert build_parser().parse_args([*args, "--top-patches", "40"]).top_patches == 40
    assert build_parser().parse_args(["demo", "--top-patches", "30"]).top_patches == 30
    run = tmp_path / "run.toml"
    run.write_text('[build]\nmanifest = "m.csv"\nout = "b"\ntop_patches = 36\n')
    assert build_parser(read_run_file(run)).parse_args(["build"]).top_patches == 36
    run.write_text('[build]\ntop_patches = true\n')
    with pytest.raises(ValueError, match="build.top_patches must be int, got True"):
        read_run_file(run)
    with pytest.raises(SystemExit):
        build_parser().parse_args([*args, "--top-patches", "0"])
    # refused before any training starts
    with pytest.raises(ValueError, match="top_patches must be a whole number >= 1, got 0"):
        build_bundle(phantom_manifest, tmp_path / "never", TrainConfig(), top_patches=0, progress=False)


def test_bundles_without_visualisations_still_load(tmp_path):
    for name in ("weights.pt", "fcn.onnx", "head.npz", "rankings.json"):
        (tmp_path / name).write_bytes(b"x")
    finalise_bundle(tmp_path, {"name": "old"})
    bundle = load_bundle(tmp_path)
    assert bundle.unit_index is None and bundle.embedding is None


def test_masks_at_the_patch_threshold(tmp_path, body, patches, phantom_records):
    top = top_activating_patches(body, patches, UNITS, n=2, **ARGS)
    ranking = _ranking(np.full(512, np.inf, dtype=np.float32), UNITS)  # whole-image thresholds no patch reaches
    index = write_unit_visualisations(
        tmp_path, top, patches, phantom_records[:3], ranking, threshold_source="ranking", progress=False
    )
    assert all(p["mask_fraction"] == 0 for e in index.values() for p in e["patches"])
    index = write_unit_visualisations(tmp_path, top, patches, phantom_records[:3], ranking,
                                      threshold_source="patches", progress=False)
    for u, k in enumerate(UNITS):
        entry = index[str(k)]
        assert entry["threshold"] == pytest.approx(top.patch_thresholds[u]) and entry["threshold_source"] == "patches"
        # the top patch holds the unit's largest cells, so some of it clears its 99th percentile
        assert entry["patches"][0]["mask_fraction"] > 0
    with pytest.raises(ValueError, match="threshold_source"):
        write_unit_visualisations(tmp_path, top, patches, phantom_records[:3], ranking, threshold_source="x")


def test_the_table_lists_every_units_top_patches(tmp_path, body, patches, all_maps, phantom_records):
    top = top_activating_patches(body, patches, range(512), n=3, **ARGS)
    table = write_top_patch_table(tmp_path, top, patches, phantom_records[:3], thresholds=top.patch_thresholds,
                                  threshold_source="patches", images_root=phantom_records[0].image_path.parent)
    loaded = TopPatchTable.load(tmp_path / TOP_PATCHES_FILE)
    assert loaded.num_units == 512 and loaded.threshold_source == "patches"
    np.testing.assert_array_equal(loaded.patch, table.patch)
    np.testing.assert_array_equal(loaded.threshold, top.patch_thresholds)
    by_id = {r.image_id: r for r in phantom_records}
    for k in (0, 3, 200, 511):  # every unit, brute force: its 3 patches of largest max activation
        acts = all_maps[:, k].reshape(len(patches), -1).max(axis=1)
        expected = sorted(range(len(patches)), key=lambda i: (-acts[i], i))[:3]
        np.testing.assert_allclose(loaded.activation[k], acts[expected], rtol=1e-5)
        for col, i in enumerate(expected):
            j = int(loaded.patch[k, col])
            image = int(loaded.image[j])
            assert loaded.image_ids[image] == patches.image_ids[i]
            box = patches.boxes[i]
            assert tuple(loaded.boxes[j]) == (box.top, box.left, box.side)
            # the stored path, relative to the images root, finds the image; so does its stored shape
            path = phantom_records[0].image_path.parent / loaded.image_paths[image]
            assert path.resolve() == by_id[patches.image_ids[i]].image_path.resolve()
            assert tuple(loaded.image_shapes[image]) == read_image(path).shape
    with pytest.raises(ValueError, match="every unit in order"):
        write_top_patch_table(tmp_path, top.subset(UNITS), patches, phantom_records[:3],
                              thresholds=top.patch_thresholds[:4], threshold_source="patches", images_root=tmp_path)
    (tmp_path / "bad.npz").write_bytes(b"not a table")
    with pytest.raises(ValueError, match="bad.npz is not a table of top patches"):
        TopPatchTable.load(tmp_path / "bad.npz")


def test_bundle_table_covers_every_unit_and_agrees_with_the_index(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    assert TOP_PATCHES_FILE in bundle.meta["files"]
    table = TopPatchTable.load(tiny_bundle / TOP_PATCHES_FILE)
    assert table.num_units == bundle.num_units and table.threshold_source == "patches"
    meta = bundle.meta["unit_visualisation"]["top_patches"]
    assert meta["file"] == TOP_PATCHES_FILE and meta["images_root"] == str(
        Path(bundle.meta["data"]["manifest"]).parent
    )
    index = bundle.unit_index
    assert index is not None and len(index) < bundle.num_units  # PNGs for the ranked units only
    for unit, entry in index.items():
        k = int(unit)
        assert table.threshold[k] == pytest.approx(entry["threshold"])
        for col, item in enumerate(entry["patches"]):
            j = int(table.patch[k, col])
            assert table.image_ids[table.image[j]] == item["image_id"]
            assert dict(zip(("top", "left", "side"), map(int, table.boxes[j]))) == item["box"]
            assert table.activation[k, col] == pytest.approx(item["activation"])
    unranked = [k for k in range(bundle.num_units) if str(k) not in index]
    assert unranked and all((table.patch[k] >= 0).all() for k in unranked)
    for image, shape in zip(table.image_paths, table.image_shapes):
        assert read_image(Path(meta["images_root"]) / image).shape == tuple(shape)
