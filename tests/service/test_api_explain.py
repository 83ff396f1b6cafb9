"""POST /explain on phantom mammograms: shapes, formulas recomputed through the backend, mapping, parameters."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from deepminer.bundle import META_FILE, load_bundle
from deepminer.formulas import softmax
from deepminer.imaging import decode_image, network_input
from deepminer.scoring import breast_cells, classifier_probabilities, image_scores, input_gray
from service.backends.onnx import OnnxBackend

TIMING_STAGES = {"upload", "queue", "decode", "preprocess", "inference", "explain", "annotations", "encode", "total"}


def upload(data: bytes) -> dict[str, Any]:
    return {"file": ("mammogram.png", data, "image/png")}


def _explain(client: TestClient, data: bytes, **params: Any) -> dict[str, Any]:
    """The response with maps as JSON lists (``maps=json``) unless ``params`` says otherwise."""
    params.setdefault("maps", "json")
    response = client.post("/explain", files=upload(data), params=params)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def reference(tiny_bundle: Path, phantom_png: bytes) -> dict[str, Any]:
    """The phantom run through the ONNX backend directly, for recomputing the response."""
    bundle = load_bundle(tiny_bundle)
    image = decode_image(phantom_png)
    x = network_input(image.pixels, short_side=bundle.input_short_side, mean=bundle.mean, std=bundle.std)
    logits, features = OnnxBackend(bundle, device="cpu").run(x)
    weight, bias = bundle.head
    return {"bundle": bundle, "image": image, "x": x, "logits": logits, "features": features, "w": weight, "b": bias}


def _close(values: Any, expected: np.ndarray) -> None:
    """Response values (6 significant digits) against float32 recomputation."""
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(np.asarray(values, dtype=np.float64), expected, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize(
    ("fixture", "fmt", "bits"),
    [
        ("phantom_png", "PNG", 16),
        ("phantom_png8", "PNG", 8),
        ("phantom_tiff", "TIFF", 16),
        ("phantom_jpeg", "JPEG", 8),
        ("phantom_dicom", "DICOM", 16),
    ],
)
def test_formats_give_a_complete_explanation(
    client: TestClient, request: pytest.FixtureRequest, fixture: str, fmt: str, bits: int, tiny_bundle: Path
) -> None:
    data: bytes = request.getfixturevalue(fixture)
    body = _explain(client, data)
    bundle = load_bundle(tiny_bundle)
    classes = bundle.classes

    assert body["model"]["hash"] == bundle.hash and body["model"]["id"] == bundle.id
    assert body["model"]["backend"] == "onnx" and body["model"]["provider"] == "CPUExecutionProvider"
    assert body["model"]["architecture"] == "resnet18"
    height, width = decode_image(data).pixels.shape
    assert body["image"] == {
        "shape": [height, width],
        "format": fmt,
        "bits": bits,
        "network_input_shape": body["image"]["network_input_shape"],
        "dicom": body["image"]["dicom"] if fmt == "DICOM" else None,
    }
    in_h, in_w = body["image"]["network_input_shape"]
    assert min(in_h, in_w) == bundle.input_short_side
    grid = [math.ceil(in_h / 32), math.ceil(in_w / 32)]

    assert body["classes"] == classes
    assert list(body["scores"]) == list(body["classifier_probabilities"]) == list(body["peak_probabilities"]) == classes
    assert body["score_rule"] == "breast_peak"
    assert sum(body["classifier_probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
    assert all(0.0 <= p <= 1.0 for p in [*body["peak_probabilities"].values(), *body["scores"].values()])
    assert body["predicted_class"] == max(body["scores"], key=body["scores"].get)
    assert body["explained_class"] == body["predicted_class"]

    maps = [*body["probability_maps"].values(), body["cam"], *(u["activation_map"] for u in body["units"])]
    assert list(body["probability_maps"]) == classes
    for m in maps:
        assert m["shape"] == grid and m["encoding"] == "json" and m["scale"] is None and m["offset"] is None
        assert len(m["values"]) == grid[0] and all(len(row) == grid[1] for row in m["values"])
        flat = [v for row in m["values"] for v in row]
        assert m["range"] == [min(flat), max(flat)]
        assert m["grid_to_image"]["image_shape"] == [height, width]
    stacked = np.array([body["probability_maps"][c]["values"] for c in classes])
    np.testing.assert_allclose(stacked.sum(axis=0), 1.0, atol=1e-5)
    for c in classes:
        assert body["peak_probabilities"][c] == pytest.approx(np.max(body["probability_maps"][c]["values"]), rel=1e-5)

    assert len(body["units"]) == 5  # the top_k setting's default
    assert [u["rank"] for u in body["units"]] == [1, 2, 3, 4, 5]
    assert set(body["timings_ms"]) == TIMING_STAGES
    assert all(t >= 0 for t in body["timings_ms"].values())


def test_response_recomputes_through_the_backend(
    client: TestClient, phantom_png: bytes, reference: dict[str, Any]
) -> None:
    body = _explain(client, phantom_png, top_k=8)
    logits, features, w, b = reference["logits"], reference["features"], reference["w"], reference["b"]
    classes = reference["bundle"].classes

    image_logits = logits.mean(axis=(1, 2))
    expected_p = np.exp(image_logits - image_logits.max())
    expected_p /= expected_p.sum()
    _close([body["classifier_probabilities"][c] for c in classes], expected_p)
    maps = np.exp(logits - logits.max(axis=0))
    maps /= maps.sum(axis=0)
    for i, c in enumerate(classes):
        _close(body["probability_maps"][c]["values"], maps[i])

    c = classes.index(body["explained_class"])
    # The CAM is the FCN's logit map of the class minus the class bias.
    _close(body["cam"]["values"], logits[c] - b[c])

    maxima = features.reshape(features.shape[0], -1).max(axis=1)
    brute = maxima * w[c]
    expected_units = sorted(range(len(brute)), key=lambda k: (-brute[k], k))[:8]
    assert [u["unit_id"] for u in body["units"]] == expected_units
    influences = [u["influence"] for u in body["units"]]
    assert influences == sorted(influences, reverse=True)
    for u in body["units"]:
        k = u["unit_id"]
        assert u["max_activation"] == pytest.approx(float(maxima[k]), rel=1e-5)
        assert u["weight"] == pytest.approx(float(w[c, k]), rel=1e-6)
        assert u["influence"] == pytest.approx(float(maxima[k] * w[c, k]), rel=1e-5, abs=1e-7)
        _close(u["activation_map"]["values"], features[k])


def test_grid_mapping_spells_out_cell_centres(
    client: TestClient, phantom_png: bytes, reference: dict[str, Any]
) -> None:
    body = _explain(client, phantom_png)
    height, width = reference["image"].pixels.shape
    in_h, in_w = reference["x"].shape[2:]
    mapping = body["cam"]["grid_to_image"]
    # Layer4 cell i is centred on input pixel 32 i; input pixel p covers upload pixel (p + 0.5) H / H' - 0.5.
    assert mapping["scale"] == pytest.approx([32 * height / in_h, 32 * width / in_w])
    assert mapping["offset"] == pytest.approx([0.5 * height / in_h - 0.5, 0.5 * width / in_w - 0.5])
    assert mapping["image_shape"] == [height, width]
    assert mapping["convention"].startswith("centre of cell (i, j) = offset + scale * (i, j)")
    assert all(m["grid_to_image"] == mapping for m in body["probability_maps"].values())


def _scores(reference: dict[str, Any], rule: str) -> np.ndarray:
    """deepminer.scoring on the backend's own logits for the phantom, as the service should compute them."""
    bundle, logits = reference["bundle"], reference["logits"]
    cells = breast_cells(input_gray(reference["x"], bundle.mean, bundle.std), logits.shape[1:])
    return image_scores(softmax(logits, axis=0), logits, cells, classes=bundle.classes, rule=rule)


def test_scores_follow_the_bundles_rule(
    client: TestClient,
    make_client: Any,
    bundle_copy: Any,
    phantom_png: bytes,
    reference: dict[str, Any],
) -> None:
    """``scores`` is deepminer.scoring on the same logits; the predicted and explained class are its argmax."""
    classes = reference["bundle"].classes
    peak = _scores(reference, "breast_peak")
    body = _explain(client, phantom_png)
    _close([body["scores"][c] for c in classes], peak)
    assert body["predicted_class"] == body["explained_class"] == classes[int(np.argmax(peak))]
    # Under breast_peak the scores are not the classifier's (the phantom has background cells).
    cells = breast_cells(input_gray(reference["x"], reference["bundle"].mean, reference["bundle"].std),
                         reference["logits"].shape[1:])
    assert cells.any() and not cells.all()
    assert not np.allclose(peak, classifier_probabilities(reference["logits"]), atol=1e-3)

    def classifier_rule(root: Path) -> None:
        meta = json.loads((root / META_FILE).read_text())
        meta["image_score"] = {"rule": "classifier"}
        (root / META_FILE).write_text(json.dumps(meta))

    with make_client(bundle=bundle_copy(classifier_rule)) as other:
        body = _explain(other, phantom_png)
    expected = classifier_probabilities(reference["logits"])
    assert body["score_rule"] == "classifier"
    _close([body["scores"][c] for c in classes], expected)
    _close([body["classifier_probabilities"][c] for c in classes], expected)
    assert body["predicted_class"] == classes[int(np.argmax(expected))]


def test_class_name_and_top_k(client: TestClient, phantom_png: bytes, reference: dict[str, Any]) -> None:
    classes = reference["bundle"].classes
    w = reference["w"]
    for name in classes:
        body = _explain(client, phantom_png, class_name=name, top_k=3)
        assert body["explained_class"] == name
        assert body["predicted_class"] == max(body["scores"], key=body["scores"].get)
        assert len(body["units"]) == 3
        c = classes.index(name)
        assert all(u["weight"] == pytest.approx(float(w[c, u["unit_id"]]), rel=1e-6) for u in body["units"])
        _close(body["cam"]["values"], reference["logits"][c] - reference["b"][c])
    assert len(_explain(client, phantom_png, top_k=50)["units"]) == 50
    assert len(_explain(client, phantom_png, top_k=1)["units"]) == 1


def test_response_carries_a_request_id(client: TestClient, phantom_png: bytes) -> None:
    response = client.post("/explain", files=upload(phantom_png), headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    response = client.get("/healthz", headers={"X-Request-ID": "no spaces or newlines\nplease"})
    assert response.headers["x-request-id"] != "no spaces or newlines\nplease"
    assert len(response.headers["x-request-id"]) == 32


def test_dicom_identifiers_stay_out_of_the_response(client: TestClient, phantom_dicom: bytes) -> None:
    response = client.post("/explain", files={"file": ("study.dcm", phantom_dicom, "application/dicom")})
    assert response.status_code == 200, response.text
    assert "Doe" not in response.text and "PID-424242" not in response.text and "19610402" not in response.text
