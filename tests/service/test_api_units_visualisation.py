"""Unit visualisations and the unit embedding, served from the bundle; only its listed PNGs leave it."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from deepminer.bundle import EMBEDDING_FILE, UNITS_DIR, load_bundle
from deepminer.imaging import read_image
from deepminer.unit_patches import TOP_PATCHES_FILE, TopPatchTable, crop_patch, to_uint8


def assert_error(response: Any, status: int, code: str, field: str | None) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["field"] == field


def index(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / UNITS_DIR / "index.json").read_text())  # type: ignore[no-any-return]


def test_visualisation_is_the_index_entry_with_urls(client: TestClient, tiny_bundle: Path) -> None:
    entries = index(tiny_bundle)
    unit_id, entry = next(iter(entries.items()))
    body = client.get(f"/units/{unit_id}/visualisation").json()
    assert body["unit_id"] == int(unit_id)
    assert (
        body["threshold"] == pytest.approx(entry["threshold"]) and body["threshold_source"] == entry["threshold_source"]
    )
    assert body["classes"] == entry["classes"] and body["thresholds"] == pytest.approx(entry["thresholds"])
    assert (body["source"], body["images_available"], body["images_note"]) == ("bundle", True, None)
    assert len(body["patches"]) == len(entry["patches"]) > 0
    for served, stored in zip(body["patches"], entry["patches"]):
        assert (served["rank"], served["image_id"], served["box"]) == (
            stored["rank"],
            stored["image_id"],
            stored["box"],
        )
        for kind in ("patch", "masked", "context"):
            path = urlsplit(served[kind]).path
            assert path == f"/bundle-files/{stored[kind]}"
            png = client.get(path)
            assert png.status_code == 200 and png.headers["content-type"] == "image/png"
            assert png.content == (tiny_bundle / stored[kind]).read_bytes()
            assert png.headers["etag"] == f'"{hashlib.sha256(png.content).hexdigest()}"'
            assert png.headers["x-content-type-options"] == "nosniff"


def unranked_unit(bundle: Path) -> int:
    return next(k for k in range(load_bundle(bundle).num_units) if str(k) not in index(bundle))


def png_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_an_unranked_unit_gets_its_top_patches_rendered_on_demand(client: TestClient, tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    table = TopPatchTable.load(tiny_bundle / TOP_PATCHES_FILE)
    images_root = Path(bundle.meta["unit_visualisation"]["top_patches"]["images_root"])
    patch_size = bundle.meta["preprocessing"]["patch_size"]
    unit = unranked_unit(tiny_bundle)
    response = client.get(f"/units/{unit}/visualisation")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["unit_id"], body["source"], body["images_available"], body["images_note"]) == (
        unit,
        "rendered",
        True,
        None,
    )
    assert body["classes"] == {} and body["threshold"] == pytest.approx(float(table.threshold[unit]))
    assert body["thresholds"]["ranking"] == pytest.approx(bundle.rankings["unit_thresholds"][unit])
    columns = [int(j) for j in table.patch[unit] if j >= 0]
    assert [p["rank"] for p in body["patches"]] == list(range(1, len(columns) + 1)) and len(columns) > 1
    for served, j in zip(body["patches"], columns):
        image = int(table.image[j])
        top, left, side = (int(v) for v in table.boxes[j])
        assert served["image_id"] == table.image_ids[image]
        assert served["box"] == {"top": top, "left": left, "side": side}
        # the patch PNG is the box cropped again from the hold-out image, as the build cut it
        source = read_image(images_root / table.image_paths[image])
        expected = to_uint8(crop_patch(source, top, left, side, patch_size).astype(np.float16))
        got = {kind: client.get(urlsplit(served[kind]).path) for kind in ("patch", "masked", "context")}
        assert all(r.status_code == 200 and r.headers["content-type"] == "image/png" for r in got.values())
        np.testing.assert_array_equal(png_pixels(got["patch"].content), expected)
        # masked: dimmed outside the mask, so every pixel is the patch's or a quarter of it
        masked, plain = png_pixels(got["masked"].content).astype(int), expected.astype(int)
        inside = masked == plain
        assert (inside | (np.abs(masked - np.rint(0.25 * plain)) <= 1)).all()
        assert served["mask_fraction"] == pytest.approx(inside.mean(), abs=(plain == 0).mean() + 1e-6)
        context = png_pixels(got["context"].content)
        assert context.shape[0] <= 256 and served["context_box"]["top"] == pytest.approx(
            top * context.shape[0] / source.shape[0], abs=0.01
        )


def test_on_demand_rendering_draws_a_ranked_unit_as_the_build_did(client: TestClient, tiny_bundle: Path) -> None:
    """The service's render of a ranked unit (same functions, ONNX instead of torch) matches the bundle's PNGs."""
    unit, entry = next(iter(index(tiny_bundle).items()))
    table = TopPatchTable.load(tiny_bundle / TOP_PATCHES_FILE)
    threshold = float(table.threshold[int(unit)])
    mismatched, compared_masks = [], 0
    for stored in entry["patches"]:
        # A patch whose largest activation is the threshold itself (the quantile is one of the patches' values) can
        # fall either way between torch and ONNX Runtime, and the tiny bundle's 1 x 1 maps mask it all or nothing.
        activation = float(table.activation[int(unit), stored["rank"] - 1])
        at_threshold = abs(activation - threshold) <= 1e-4 * max(1.0, abs(threshold))
        for kind in ("patch", "masked", "context"):
            response = client.get(f"/units/{unit}/visualisation/{stored['rank']}/{kind}")
            assert response.status_code == 200, response.text
            if kind == "masked" and at_threshold:
                continue
            compared_masks += kind == "masked"
            rendered, built = png_pixels(response.content), png_pixels((tiny_bundle / stored[kind]).read_bytes())
            assert rendered.shape == built.shape
            mismatched.append((rendered != built).mean())
    assert compared_masks >= len(entry["patches"]) - 1
    # a mask pixel at the threshold may fall the other way between torch and ONNX Runtime, no more
    assert max(mismatched) < 0.02 and np.mean(mismatched) < 0.005


def test_without_the_hold_out_images_the_answer_lists_the_patches_and_says_why(
    make_client: Callable[..., Any], tiny_bundle: Path, tmp_path: Path
) -> None:
    unit = unranked_unit(tiny_bundle)
    table = TopPatchTable.load(tiny_bundle / TOP_PATCHES_FILE)
    empty = tmp_path / "no-images"
    empty.mkdir()
    with make_client(holdout_images_dir=empty) as client:
        body = client.get(f"/units/{unit}/visualisation").json()
        assert (body["source"], body["images_available"]) == ("rendered", False)
        assert "not found" in body["images_note"] and "DEEPMINER_HOLDOUT_IMAGES_DIR" in body["images_note"]
        assert str(empty) in body["images_note"]
        assert len(body["patches"]) == int((table.patch[unit] >= 0).sum())
        for served, activation in zip(body["patches"], table.activation[unit]):
            assert served["activation"] == pytest.approx(float(activation)) and served["box"]["side"] > 0
            assert served["patch"] is served["masked"] is served["context"] is served["mask_fraction"] is None
        response = client.get(f"/units/{unit}/visualisation/1/masked")
        assert_error(response, 404, "not_in_bundle", "rank")
        assert "not found" in response.json()["error"]["message"]
        # ranked units are unaffected: their PNGs are in the bundle
        ranked = next(iter(index(tiny_bundle)))
        assert client.get(f"/units/{ranked}/visualisation").json()["images_available"] is True


def test_moved_images_are_found_through_the_setting_and_a_changed_one_is_refused(
    make_client: Callable[..., Any], tiny_bundle: Path, tmp_path: Path
) -> None:
    bundle = load_bundle(tiny_bundle)
    table = TopPatchTable.load(tiny_bundle / TOP_PATCHES_FILE)
    moved = tmp_path / "moved"
    shutil.copytree(bundle.meta["unit_visualisation"]["top_patches"]["images_root"], moved)
    unit = unranked_unit(tiny_bundle)
    first_image = int(table.image[table.patch[unit, 0]])
    Image.new("L", (64, 48)).save(moved / table.image_paths[first_image])  # another picture under the same name
    with make_client(holdout_images_dir=moved) as client:
        body = client.get(f"/units/{unit}/visualisation").json()
    assert body["images_available"] is False and "the build's image was" in body["images_note"]
    changed = table.image_ids[first_image]
    for served in body["patches"]:
        assert (served["patch"] is None) == (served["image_id"] == changed)


def test_bad_patch_image_requests(client: TestClient, tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    unit = unranked_unit(tiny_bundle)
    assert_error(client.get(f"/units/{bundle.num_units}/visualisation"), 404, "unknown_unit", "unit_id")
    assert_error(client.get("/units/x/visualisation"), 422, "validation_error", "unit_id")
    assert_error(client.get(f"/units/{bundle.num_units}/visualisation/1/patch"), 404, "unknown_unit", "unit_id")
    assert_error(client.get(f"/units/{unit}/visualisation/0/patch"), 422, "validation_error", "rank")
    assert_error(client.get(f"/units/{unit}/visualisation/1/outline"), 422, "validation_error", "kind")
    response = client.get(f"/units/{unit}/visualisation/999/patch")
    assert_error(response, 404, "not_in_bundle", "rank")
    assert "top patches" in response.json()["error"]["message"]


def test_a_bundle_without_the_table_shows_the_ranked_units_only(
    make_client: Callable[..., Any], bundle_copy: Callable[..., Path], tiny_bundle: Path
) -> None:
    unit = unranked_unit(tiny_bundle)
    with make_client(bundle=bundle_copy(lambda root: (root / TOP_PATCHES_FILE).unlink())) as client:
        response = client.get(f"/units/{unit}/visualisation")
        assert_error(response, 404, "not_in_bundle", "unit_id")
        assert "ranked units are visualised" in response.json()["error"]["message"]
        assert_error(client.get(f"/units/{unit}/visualisation/1/patch"), 404, "not_in_bundle", "unit_id")
        ranked = next(iter(index(tiny_bundle)))
        assert client.get(f"/units/{ranked}/visualisation").json()["source"] == "bundle"


@pytest.mark.parametrize(
    "path",
    [
        "meta.json",
        "fcn.onnx",
        "weights.pt",
        "rankings.json",
        "plots/roc.png",  # listed and a PNG, but not a unit visualisation
        "units/index.json",  # listed, under units/, but not a PNG
        "units/0/nope.png",
        "units/../meta.json",
        "units/%2e%2e/rankings.json",
        "units/..%2fmeta.json",
        "units/0/..%2f..%2fplots%2froc.png",
        "%2fetc%2fpasswd",
        "units/0%5cpatch_1.png",
        "units//0/patch_1.png",
        "units/%2e/0/patch_1.png",
        "UNITS/0/patch_1.png",
    ],
)
def test_only_listed_visualisation_pngs_are_served(client: TestClient, path: str) -> None:
    response = client.get(f"/bundle-files/{path}")
    assert response.status_code == 404, (path, response.status_code)
    assert response.json()["error"]["code"] in ("not_in_bundle", "not_found")


def test_a_file_swapped_for_a_link_after_start_up_is_not_followed(
    make_client: Callable[..., Any], bundle_copy: Callable[..., Path], tmp_path: Path
) -> None:
    bundle = bundle_copy()
    name = next(iter(index(bundle).values()))["patches"][0]["patch"]
    with make_client(bundle=bundle) as client:
        assert client.get(f"/bundle-files/{name}").status_code == 200
        outside = tmp_path / "secret.png"
        outside.write_bytes(b"\x89PNG\r\n\x1a\nnot for you")
        (bundle / name).unlink()
        (bundle / name).symlink_to(outside)
        assert_error(client.get(f"/bundle-files/{name}"), 404, "not_in_bundle", "path")


def test_embedding_carries_every_unit_with_its_labels(make_client: Callable[..., Any], tiny_bundle: Path) -> None:
    stored = json.loads((tiny_bundle / EMBEDDING_FILE).read_text())
    bundle = load_bundle(tiny_bundle)
    with make_client() as client:
        client.put(
            "/units/3",
            json={"annotator": "dr-a", "label": "Round mass", "category": "Mass", "cancer_association": "no"},
        )
        body = client.get("/units/embedding").json()
    assert body["model_id"] == bundle.id and body["bundle_hash"] == bundle.hash
    assert body["method"] == stored["method"] and body["num_images"] == stored["num_images"]
    assert body["explained_variance_ratio"] == pytest.approx(stored["explained_variance_ratio"])
    assert [u["unit_id"] for u in body["units"]] == list(range(bundle.num_units))
    for served, point in zip(body["units"], stored["units"]):
        assert (served["x"], served["y"], served["ranked"]) == pytest.approx((point["x"], point["y"], point["ranked"]))
    assert [(a["label"], a["current_bundle"]) for a in body["units"][3]["annotations"]] == [("Round mass", True)]
    assert all(u["annotations"] == [] for u in body["units"] if u["unit_id"] != 3)


def test_a_bundle_without_visualisations_or_embedding_says_so(
    make_client: Callable[..., Any], bundle_copy: Callable[..., Path]
) -> None:
    def strip(root: Path) -> None:
        shutil.rmtree(root / UNITS_DIR)
        (root / EMBEDDING_FILE).unlink()

    with make_client(bundle=bundle_copy(strip)) as client:
        assert_error(client.get("/units/embedding"), 404, "not_in_bundle", None)
        response = client.get("/units/0/visualisation")
        assert_error(response, 404, "not_in_bundle", None)
        assert "units/index.json" in response.json()["error"]["message"]
        assert_error(client.get("/bundle-files/units/0/patch_1.png"), 404, "not_in_bundle", "path")
