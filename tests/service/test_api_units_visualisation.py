"""Unit visualisations and the unit embedding, served from the bundle; only its listed PNGs leave it."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from deepminer.bundle import EMBEDDING_FILE, UNITS_DIR, load_bundle


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


def test_unranked_and_unknown_units_have_no_visualisation(client: TestClient, tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    unranked = next(k for k in range(bundle.num_units) if str(k) not in index(tiny_bundle))
    response = client.get(f"/units/{unranked}/visualisation")
    assert_error(response, 404, "not_in_bundle", "unit_id")
    assert "ranked units are visualised" in response.json()["error"]["message"]
    assert_error(client.get(f"/units/{bundle.num_units}/visualisation"), 404, "unknown_unit", "unit_id")
    assert_error(client.get("/units/x/visualisation"), 422, "validation_error", "unit_id")


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
