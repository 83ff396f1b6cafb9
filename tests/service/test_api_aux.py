"""/explain with auxiliary features: the ``aux`` form field, both backends, micro-batching and the 422s.

The aux bundle is the session's ``tiny_bundle`` with an auxiliary head added
(known weights V) and re-exported, so no second training run is needed; the
training pipeline's own aux bundles are tested in tests/training/test_aux_training.py.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from deepminer.auxiliary import AuxFeature
from deepminer.bundle import HEAD_FILE, META_FILE, ONNX_FILE, WEIGHTS_FILE, finalise_bundle, load_bundle
from deepminer.formulas import auxiliary_term, softmax
from deepminer.imaging import decode_image, network_input
from deepminer.scoring import breast_cells, classifier_probabilities, image_scores, input_gray
from service.backends.onnx import OnnxBackend
from service.batching import MicroBatcher

torch = pytest.importorskip("torch")

FEATURES = (AuxFeature("age", 58.0, 8.0), AuxFeature("prs", 0.0, 1.0))
V = np.array([[-0.8, -0.5], [0.1, 0.2], [0.9, 0.6]], dtype=np.float32)  # older / higher risk: more malignant
AUX = {"age": 70, "prs": 1.5}


@pytest.fixture(scope="module")
def aux_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_bundle`` with an auxiliary head (age, prs) of weights V: weights, head.npz, ONNX and meta.json."""
    from deepminer.fcn import build_classifier, to_fcn
    from training.export import export_onnx

    logging.getLogger("onnx_ir").setLevel(logging.WARNING)
    logging.getLogger("onnxscript").setLevel(logging.WARNING)
    root = tmp_path_factory.mktemp("aux-service") / "tiny-aux"
    shutil.copytree(tiny_bundle, root)
    meta = json.loads((root / META_FILE).read_text())
    model = build_classifier(depth=18, num_classes=3, aux_features=FEATURES)
    model.resnet.load_state_dict(torch.load(root / WEIGHTS_FILE, weights_only=True))
    with torch.no_grad():
        model.aux.weight.copy_(torch.from_numpy(V))
    torch.save(model.state_dict(), root / WEIGHTS_FILE)
    with np.load(root / HEAD_FILE) as npz:
        np.savez(root / HEAD_FILE, weight=npz["weight"], bias=npz["bias"], aux_weight=V)
    side = meta["preprocessing"]["input_short_side"]
    export_onnx(to_fcn(model).eval(), root / ONNX_FILE, example_shape=(side, side + side // 2))
    meta["model"]["aux_features"] = [f.to_json() for f in FEATURES]
    meta.pop("files")
    finalise_bundle(root, meta)
    return root


def post(client: Any, png: bytes, aux: Any = None, **params: Any) -> Any:
    data = None if aux is None else {"aux": aux if isinstance(aux, str) else json.dumps(aux)}
    return client.post("/explain", files={"file": ("m.png", png, "image/png")}, data=data, params=params)


def expected_probabilities(bundle_dir: Path, png: bytes, aux: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """The classifier probabilities and image-level scores of ``png`` with ``aux``, from the ONNX model directly."""
    bundle = load_bundle(bundle_dir)
    x = network_input(decode_image(png).pixels, short_side=bundle.input_short_side, mean=bundle.mean, std=bundle.std)
    session = ort.InferenceSession(str(bundle.path(ONNX_FILE)), providers=["CPUExecutionProvider"])
    values = np.array([[aux[f.name] for f in FEATURES]], dtype=np.float32)
    (logits,) = session.run(["logits"], {"image": x, "aux": values})
    cells = breast_cells(input_gray(x, bundle.mean, bundle.std), logits.shape[2:])
    scores = image_scores(softmax(logits[0], axis=0), logits[0], cells, classes=bundle.classes, rule=bundle.score_rule)
    return classifier_probabilities(logits[0]), scores


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_explain_with_aux(make_client: Callable[..., Any], aux_bundle: Path, phantom_png: bytes, backend: str) -> None:
    with make_client(bundle=aux_bundle, backend=backend, device="cpu") as client:
        body = post(client, phantom_png, AUX, maps="json", class_name="malignant").json()
        younger = post(client, phantom_png, {"age": 40.5, "prs": -1}, maps="json", class_name="malignant").json()
    assert body["model"]["backend"] == backend
    z = [(70 - 58) / 8, 1.5]
    assert body["aux"]["values"] == {"age": 70.0, "prs": 1.5}
    assert body["aux"]["normalised"] == pytest.approx({"age": z[0], "prs": z[1]})
    term = auxiliary_term(np.array([70.0, 1.5]), np.array([58.0, 0.0]), np.array([8.0, 1.0]), V)
    assert body["aux"]["contribution"] == pytest.approx(dict(zip(body["classes"], term.tolist())), abs=1e-5)
    probabilities, scores = expected_probabilities(aux_bundle, phantom_png, AUX)
    assert [body["classifier_probabilities"][c] for c in body["classes"]] == pytest.approx(
        probabilities.tolist(), abs=1e-4
    )
    assert [body["scores"][c] for c in body["classes"]] == pytest.approx(scores.tolist(), abs=1e-4)
    # The aux term moves the probabilities, never the CAM or the units.
    assert younger["classifier_probabilities"]["malignant"] < body["classifier_probabilities"]["malignant"]
    np.testing.assert_allclose(younger["cam"]["values"], body["cam"]["values"], atol=1e-5)
    assert [u["unit_id"] for u in younger["units"]] == [u["unit_id"] for u in body["units"]]


def test_micro_batches_keep_each_images_aux(aux_bundle: Path, phantom_png: bytes) -> None:
    bundle = load_bundle(aux_bundle)
    inner = OnnxBackend(bundle, device="cpu")
    x = network_input(decode_image(phantom_png).pixels, short_side=bundle.input_short_side)
    rows = [np.array([[a, p]], dtype=np.float32) for a, p in ((40, -1), (58, 0), (75, 2))]
    batcher = MicroBatcher(inner, max_size=3, max_wait_s=5.0, on_batch=(sizes := []).append)
    results: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def call(i: int) -> None:
        results[i] = batcher.run(x, rows[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sizes == [3]
    for i, row in enumerate(rows):
        logits, features = inner.run(x, row)
        np.testing.assert_allclose(results[i][0], logits, atol=1e-4)
        np.testing.assert_allclose(results[i][1], features, atol=1e-4)
    with pytest.raises(ValueError, match=r"needs aux of shape \(1, 2\), got None"):
        inner.run(x)


def assert_invalid(response: Any, field: str, message: str) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_parameter", field)
    assert message in error["message"]


def test_aux_errors_name_the_field(make_client: Callable[..., Any], aux_bundle: Path, phantom_png: bytes) -> None:
    with make_client(bundle=aux_bundle) as client:
        assert_invalid(post(client, phantom_png), "aux", "needs the auxiliary features ['age', 'prs']")
        assert_invalid(post(client, phantom_png, {"age": 61}), "aux.prs", "'prs' is missing")
        assert_invalid(post(client, phantom_png, {"age": "sixty", "prs": 0}), "aux.age", "finite number")
        assert_invalid(post(client, phantom_png, {"age": True, "prs": 0}), "aux.age", "finite number")
        assert_invalid(post(client, phantom_png, {**AUX, "bmi": 22}), "aux.bmi", "not an auxiliary feature")
        assert_invalid(post(client, phantom_png, "age=61"), "aux", "JSON object")
        assert_invalid(post(client, phantom_png, "[61, 1]"), "aux", "JSON object")
        assert post(client, phantom_png, AUX).status_code == 200  # still serving


def test_bundle_without_aux(client: Any, phantom_png: bytes) -> None:
    response = post(client, phantom_png)
    assert response.status_code == 200, response.text
    assert response.json()["aux"] is None
    assert_invalid(post(client, phantom_png, {"age": 61}), "aux", "takes no auxiliary features")


def test_openapi_documents_the_aux_field(client: Any) -> None:
    spec = client.get("/openapi.json").json()
    schema = spec["paths"]["/explain"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert "aux" in schema["properties"] and "JSON object" in schema["properties"]["aux"]["description"]
    assert "aux" in spec["components"]["schemas"]["ExplainResponse"]["properties"]
