"""Map encodings (compact uint16 by default, JSON lists on request), PNG overlays, and response sizes."""

from __future__ import annotations

import base64
import io
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from deepminer.grid import GridMapping, upsample
from service.maps import LEVELS, dequantise, quantise
from service.overlays import Canvas, preview_shape

FILES = "file"


def post(client: TestClient, data: bytes, **params: Any) -> Any:
    return client.post("/explain", files={FILES: ("m.png", data, "image/png")}, params=params)


def all_maps(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [*body["probability_maps"].values(), body["cam"], *(u["activation_map"] for u in body["units"])]


def decoded(m: dict[str, Any]) -> np.ndarray:
    """A uint16 map decoded by hand from the documented layout, not through service.maps."""
    raw = base64.b64decode(m["values"])
    rows, cols = m["shape"]
    codes = struct.unpack(f"<{rows * cols}H", raw)  # little-endian, row-major
    return m["offset"] + m["scale"] * np.array(codes, dtype=np.float64).reshape(rows, cols)


# -- quantisation -----------------------------------------------------------


def test_quantise_round_trip_error_is_at_most_half_a_step() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(3.0, 2.0, (29, 37)).astype(np.float32)
    q = quantise(values)
    assert q.offset == pytest.approx(float(values.min()))
    assert q.scale == pytest.approx((float(values.max()) - float(values.min())) / LEVELS)
    back = dequantise(q.data, scale=q.scale, offset=q.offset, shape=values.shape)
    assert np.abs(back - values).max() <= q.scale / 2 * (1 + 1e-9)
    assert back.min() == pytest.approx(values.min()) and back.max() == pytest.approx(values.max())
    assert len(base64.b64decode(q.data)) == values.size * 2


def test_quantise_byte_order_and_constant_maps() -> None:
    q = quantise(np.array([[0.0, 1.0], [0.5, 0.25]]))
    assert base64.b64decode(q.data) == struct.pack("<4H", 0, 65535, 32768, 16384)  # 0.5 * 65535 rounds to even
    flat = quantise(np.full((3, 4), 7.5))
    assert (flat.scale, flat.offset) == (0.0, 7.5)
    np.testing.assert_array_equal(dequantise(flat.data, scale=0.0, offset=7.5, shape=(3, 4)), 7.5)
    with pytest.raises(ValueError, match="finite"):
        quantise(np.array([[0.0, np.nan]]))


# -- the /explain formats ---------------------------------------------------


def test_maps_are_compact_by_default_and_match_the_json_lists(client: TestClient, phantom_png: bytes) -> None:
    compact = post(client, phantom_png, top_k=8)
    lists = post(client, phantom_png, top_k=8, maps="json")
    assert compact.status_code == lists.status_code == 200
    body, reference = compact.json(), lists.json()
    assert body["overlays"] is None
    assert [u["unit_id"] for u in body["units"]] == [u["unit_id"] for u in reference["units"]]
    for m, ref in zip(all_maps(body), all_maps(reference)):
        assert m["encoding"] == "uint16" and isinstance(m["values"], str)
        assert m["shape"] == ref["shape"] and m["range"] == ref["range"]
        assert m["grid_to_image"] == ref["grid_to_image"]
        assert ref["encoding"] == "json" and ref["scale"] is None and ref["offset"] is None
        values = decoded(m)
        np.testing.assert_allclose(values, dequantise(m["values"], scale=m["scale"], offset=m["offset"], shape=values.shape))
        expected = np.array(ref["values"])
        # Half a quantisation step, plus the JSON lists' rounding to 6 significant digits.
        assert np.abs(values - expected).max() <= m["scale"] / 2 + 1e-5 * max(1.0, np.abs(expected).max())
    assert len(compact.content) < len(lists.content)


def test_overlays_on_request(make_client: Any, phantom_png: bytes) -> None:
    with make_client(overlay_max_side=128) as client:
        response = post(client, phantom_png, top_k=3, overlays="png")
        assert response.status_code == 200, response.text
        body = response.json()
    overlays = body["overlays"]
    height, width = body["image"]["shape"]
    assert tuple(overlays["shape"]) == preview_shape((height, width), 128) and max(overlays["shape"]) == 128
    assert overlays["media_type"] == "image/png" and overlays["colormap"] == "jet"
    assert [o["unit_id"] for o in overlays["units"]] == [u["unit_id"] for u in body["units"]]
    for png in [overlays["cam"], *(o["png"] for o in overlays["units"])]:
        image = Image.open(io.BytesIO(base64.b64decode(png)))
        assert image.format == "PNG" and image.mode == "RGB"
        assert image.size == (overlays["shape"][1], overlays["shape"][0])
    assert "encode" in body["timings_ms"]


def test_overlay_draws_the_map_where_the_grid_says() -> None:
    """One hot cell comes out red over its pixels; where the map is at its minimum the image shows unchanged."""
    mapping = GridMapping.for_input(image_shape=(640, 480), input_shape=(320, 240))  # grid 10 x 8, 64 px per cell
    grid = np.zeros(mapping.grid_shape, dtype=np.float32)
    grid[2, 5] = 1.0
    gray = np.tile(np.linspace(0.0, 1.0, 480, dtype=np.float32), (640, 1))
    canvas = Canvas.for_image(gray, mapping, max_side=320)
    assert canvas.shape == (320, 240)
    rgb = canvas.overlay(grid).astype(np.int64)
    cy, cx = mapping.centre(2, 5)
    y, x = (cy + 0.5) / 2 - 0.5, (cx + 0.5) / 2 - 0.5  # the cell centre on the half-size canvas
    assert (y, x) == (64.0, 160.0)
    g = canvas.gray[64, 160] * 255
    expected_hot = np.rint(0.4 * g + 0.6 * np.array([128, 0, 0]))  # jet's dark-red top end at 60 % opacity
    assert np.all(np.abs(rgb[64, 160] - expected_hot) <= 1)
    # The next cell's centre (32 canvas pixels on) and a far corner: the map's minimum, so the image unchanged.
    for y, x in ((64, 192), (300, 10)):
        assert np.all(np.abs(rgb[y, x] - np.rint(canvas.gray[y, x] * 255)) <= 1)
    dense = upsample(grid, mapping, out_shape=canvas.shape)
    assert np.unravel_index(np.argmax(dense), dense.shape) == (64, 160)


@pytest.mark.parametrize(("params", "field"), [({"maps": "float32"}, "maps"), ({"overlays": "jpeg"}, "overlays")])
def test_unknown_formats_are_refused(client: TestClient, phantom_png: bytes, params: dict[str, str], field: str) -> None:
    response = post(client, phantom_png, **params)
    assert response.status_code == 422
    assert response.json()["error"] == {"code": "validation_error", "field": field, "message": response.json()["error"]["message"]}


# -- response sizes for a full-size mammogram --------------------------------


@pytest.fixture(scope="module")
def full_size_png() -> bytes:
    """A synthetic 3328 x 2560 16-bit phantom mammogram with a lesion (a detector's full field)."""
    from training.phantoms.config import PhantomConfig
    from training.phantoms.plan import plan_images
    from training.phantoms.render import render_phantom

    config = PhantomConfig(n_cases=1, views_per_case=1, height=3328, aspect=2560 / 3328, seed=1, normal_fraction=0.0)
    image = render_phantom(plan_images(config)[0], config).image
    assert image.shape == (3328, 2560) and image.dtype == np.uint16
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def test_response_sizes_for_a_full_size_mammogram(
    client: TestClient, full_size_png: bytes, tiny_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The sizes README.md quotes for the tiny test bundle (short side 128 px, layer4 grid 6 x 4), top_k 5."""
    sizes = {}
    for name, params in {
        "uint16": {},
        "json": {"maps": "json"},
        "uint16+png": {"overlays": "png"},
    }.items():
        response = post(client, full_size_png, **params)
        assert response.status_code == 200, response.text
        sizes[name] = len(response.content)
    body = response.json()
    assert body["image"]["shape"] == [3328, 2560] and body["cam"]["shape"] == [6, 4]
    assert tuple(body["overlays"]["shape"]) == (512, 394)
    with capsys.disabled():
        print(f"\nresponse bytes, 3328x2560 upload, tiny bundle (grid 6x4): {sizes}")
    assert sizes["uint16"] < sizes["json"] < sizes["uint16+png"]
    assert sizes["uint16"] < 12_000 and sizes["json"] < 16_000 and sizes["uint16+png"] < 2_000_000


def test_response_sizes_at_the_papers_input_size(full_size_png: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    """The sizes README.md quotes for the paper's geometry: short side 4 x 227 = 908 px, layer4 grid 37 x 29.

    The body is built by the service's own encoder from an explanation with that
    grid (3 classes, top 5 units, smooth activation-like maps, no labels) and
    the full-size phantom for the overlays.
    """
    from deepminer.grid import resized_shape
    from service.explainer import METHOD, ExplanationResult, ModelInfo, UnitExplanation
    from service.explanation import build_explanation
    from service.schemas import ExplainResponse

    pixels = np.asarray(Image.open(io.BytesIO(full_size_png)), dtype=np.float32) / 65535.0
    input_shape = resized_shape(3328, 2560, 4 * 227)
    mapping = GridMapping.for_input(image_shape=(3328, 2560), input_shape=input_shape)
    assert mapping.grid_shape == (37, 29)
    rng = np.random.default_rng(0)

    def smooth(scale: float) -> np.ndarray:
        coarse = rng.gamma(2.0, scale, (8, 6)).astype(np.float32)
        return np.asarray(Image.fromarray(coarse).resize((29, 37), Image.Resampling.BICUBIC), dtype=np.float32)

    logits = np.stack([smooth(1.0) for _ in range(3)])
    maps = np.exp(logits) / np.exp(logits).sum(axis=0)
    units = tuple(
        UnitExplanation(unit_id=u, rank=r, influence=1.0 / r, max_activation=2.0, weight=0.5 / r,
                        activation_map=np.maximum(smooth(1.0) - 1.0, 0.0), annotations=())
        for r, u in enumerate((1814, 1152, 860, 1299, 1468), start=1)
    )
    result = ExplanationResult(
        method=METHOD,
        model=ModelInfo(id="paper@000000000000", hash="0" * 64, architecture="resnet152", layer="layer4",
                        backend="onnx", provider="CPUExecutionProvider", precision="fp32"),
        image_shape=(3328, 2560), image_format="PNG", image_bits=16, dicom=None, pixels=pixels,
        input_shape=input_shape, classes=("normal", "benign", "malignant"),
        scores=maps.max(axis=(1, 2)), score_rule="breast_peak", classifier_probabilities=maps.mean(axis=(1, 2)),
        peak_probabilities=maps.max(axis=(1, 2)),
        predicted_class="malignant", explained_class="malignant", probability_maps=maps, cam=smooth(3.0) - 4.0,
        mapping=mapping,
        units=units,
        explanation=build_explanation(units, bundle_hash="0" * 64),
        timings_ms={"total": 1.0},
    )

    def size(maps: Any, overlay_max_side: int | None) -> int:
        body = ExplainResponse.from_result(result, maps=maps, overlay_max_side=overlay_max_side)
        return len(body.model_dump_json().encode())

    sizes = {"uint16": size("uint16", None), "json": size("json", None), "uint16+png": size("uint16", 512)}
    with capsys.disabled():
        print(f"\nresponse bytes, 3328x2560 upload, paper geometry (grid 37x29): {sizes}")
    assert sizes["uint16"] < 32_000 and 80_000 < sizes["json"] < 100_000
    assert sizes["uint16+png"] < 1_600_000
