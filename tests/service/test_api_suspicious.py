"""GET /suspicious-patches: the bundle's most suspicious hold-out cells, filtered, limited, and queryable."""

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

from deepminer.bundle import SUSPICIOUS_DIR, SUSPICIOUS_INDEX_FILE


def assert_error(response: Any, status: int, code: str, field: str | None) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["field"] == field


def stored(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / SUSPICIOUS_INDEX_FILE).read_text())  # type: ignore[no-any-return]


def test_every_patch_most_probable_first_with_its_image(client: TestClient, tiny_bundle: Path) -> None:
    index = stored(tiny_bundle)
    body = client.get("/suspicious-patches").json()
    assert body["classes"] == index["classes"] == ["benign", "malignant"]
    assert body["source"] == "holdout" and body["per_class"] == index["per_class"]
    assert len(body["patches"]) == len(index["patches"]) > 0
    probabilities = [p["probability"] for p in body["patches"]]
    assert probabilities == sorted(probabilities, reverse=True)
    by_id = {p["id"]: p for p in index["patches"]}
    for served in body["patches"]:
        entry = by_id[served["id"]]
        for key in ("class", "rank", "image_id", "box", "cell_box", "context_box", "context_cell_box"):
            assert served[key] == entry[key], key
        assert served["cell"] == entry["cell"] and served["probability"] == pytest.approx(entry["probability"])
        image = index["images"][entry["image_id"]]
        assert served["image"]["shape"] == image["shape"]
        assert served["image"]["original_shape"] == image["original_shape"]
        path = urlsplit(served["image"]["url"]).path
        assert path == f"/bundle-files/{image['file']}"
    png = client.get(urlsplit(body["patches"][0]["image"]["url"]).path)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.headers["etag"] == f'"{hashlib.sha256(png.content).hexdigest()}"'


@pytest.mark.parametrize("name", ["malignant", "benign"])
def test_one_class_by_rank_and_a_limit(client: TestClient, name: str) -> None:
    patches = client.get("/suspicious-patches", params={"class": name}).json()["patches"]
    assert patches and all(p["class"] == name for p in patches)
    assert [p["rank"] for p in patches] == list(range(1, len(patches) + 1))
    limited = client.get("/suspicious-patches", params={"class": name, "limit": 2}).json()["patches"]
    assert limited == patches[:2]


def test_bad_filters_are_named(client: TestClient) -> None:
    response = client.get("/suspicious-patches", params={"class": "normal"})
    assert_error(response, 422, "invalid_parameter", "class")
    assert "['benign', 'malignant']" in response.json()["error"]["message"]
    assert_error(client.get("/suspicious-patches", params={"limit": 0}), 422, "validation_error", "limit")
    assert_error(client.get("/suspicious-patches", params={"limit": "x"}), 422, "validation_error", "limit")


def test_the_stored_image_explains_and_queries_as_the_build_saw_it(client: TestClient) -> None:
    """The stored image is the network's view: explained again, its cell has the recorded probability."""
    patch = client.get("/suspicious-patches", params={"class": "malignant", "limit": 1}).json()["patches"][0]
    png = client.get(urlsplit(patch["image"]["url"]).path).content
    explained = client.post(
        "/explain", files={"file": ("p.png", png, "image/png")}, params={"class_name": "malignant", "maps": "json"}
    ).json()
    assert explained["image"]["shape"] == patch["image"]["shape"] == explained["image"]["network_input_shape"]
    i, j = patch["cell"]
    # The same cell, up to the stored image's 8-bit rounding.
    assert explained["probability_maps"]["malignant"]["values"][i][j] == pytest.approx(patch["probability"], abs=0.02)
    b = patch["context_box"]
    polygon = [
        [b["left"] - 0.5, b["top"] - 0.5],
        [b["left"] + b["width"] - 0.5, b["top"] - 0.5],
        [b["left"] + b["width"] - 0.5, b["top"] + b["height"] - 0.5],
        [b["left"] - 0.5, b["top"] + b["height"] - 0.5],
    ]
    found = client.post(
        "/query/region", files={"file": ("p.png", png, "image/png")}, data={"polygon": json.dumps(polygon)}
    )
    assert found.status_code == 200, found.text
    assert 0 < found.json()["region"]["fraction"] < 1


def test_a_bundle_without_suspicious_patches_says_so(
    make_client: Callable[..., Any], bundle_copy: Callable[..., Path]
) -> None:
    def strip(root: Path) -> None:
        shutil.rmtree(root / SUSPICIOUS_DIR)

    with make_client(bundle=bundle_copy(strip)) as client:
        response = client.get("/suspicious-patches")
        assert_error(response, 404, "not_in_bundle", None)
        assert SUSPICIOUS_INDEX_FILE in response.json()["error"]["message"]
        assert_error(client.get("/bundle-files/suspicious/images/0000.png"), 404, "not_in_bundle", "path")
