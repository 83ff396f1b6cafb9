"""POST /query/region: units ranked by IoU of their binarised maps with a region, and label reports (Lu & Perer)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from annotations import AnnotationStore
from deepminer.formulas import binarise, iou, unit_max_activations
from deepminer.grid import GridMapping, upsample
from service.queries import RegionQueries, query_shape, rasterise_polygon

# The phantom resized to 366 x 256: the network input is then 183 x 128, exactly half, so each query pixel
# covers 2 x 2 upload pixels and a rectangle can be given identically as a polygon and as a mask.
SHAPE = (366, 256)
QUERY = (183, 128)
BOX = (60, 140, 30, 100)  # query rows [60, 140), columns [30, 100)
OLD_BUNDLE = "ab" * 32


def assert_error(response: Any, status: int, code: str, field: str | None) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["field"] == field


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def image(phantom_png: bytes) -> bytes:
    pixels = Image.open(io.BytesIO(phantom_png)).convert("F").resize((SHAPE[1], SHAPE[0]), Image.Resampling.BILINEAR)
    return png(np.clip(np.asarray(pixels), 0, 65535).astype(np.uint16))


def box_polygon(top: int, bottom: int, left: int, right: int) -> str:
    """Query rows [top, bottom) and columns [left, right) as a polygon in upload pixels (x, y)."""
    y0, y1, x0, x1 = 2 * top - 0.5, 2 * bottom - 0.5, 2 * left - 0.5, 2 * right - 0.5
    return json.dumps([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])


def box_mask(top: int, bottom: int, left: int, right: int) -> bytes:
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[2 * top : 2 * bottom, 2 * left : 2 * right] = 255
    return png(mask)


def query(client: TestClient, image: bytes, *, min_iou: float | None = None, **region: Any) -> Any:
    files: dict[str, Any] = {"file": ("m.png", image, "image/png")}
    if "mask" in region:
        files["mask"] = ("region.png", region.pop("mask"), "image/png")
    params = {} if min_iou is None else {"min_iou": min_iou}
    return client.post("/query/region", files=files, data=region, params=params)


def brute_force(client: TestClient, image: bytes, region: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(IoU, max activation, mask fraction) of every unit, upsampling every map: no pruning."""
    explainer = client.app.state.explainer  # type: ignore[attr-defined]
    thresholds = client.app.state.catalog.thresholds  # type: ignore[attr-defined]
    pixels = explainer.decode(image).pixels
    x = explainer.preprocess(pixels)
    _, features = explainer.forward(x)
    mapping = GridMapping.for_input(image_shape=pixels.shape, input_shape=(x.shape[2], x.shape[3]))
    masks = [binarise(upsample(features[k], mapping, region.shape), float(thresholds[k])) for k in range(len(features))]
    return (
        np.array([iou(m, region) for m in masks]),
        unit_max_activations(features),
        np.array([m.mean() for m in masks]),
    )


def test_region_query_equals_brute_force(client: TestClient, image: bytes) -> None:
    region = np.zeros(QUERY, dtype=bool)
    top, bottom, left, right = BOX
    region[top:bottom, left:right] = True
    ious, maxima, fractions = brute_force(client, image, region)

    body = query(client, image, min_iou=1e-9, polygon=box_polygon(*BOX)).json()
    assert body["query_shape"] == list(QUERY) and body["image"]["shape"] == list(SHAPE)
    assert body["region"] == {"pixels": int(region.sum()), "fraction": pytest.approx(region.mean())}
    expected = sorted(np.flatnonzero(ious > 0), key=lambda k: (-ious[k], k))
    assert len(expected) > 3, "the region should meet several units"
    assert [u["unit_id"] for u in body["units"]] == [int(k) for k in expected]
    for unit in body["units"]:
        k = unit["unit_id"]
        assert unit["iou"] == pytest.approx(ious[k]) and unit["max_activation"] == pytest.approx(maxima[k])
        assert unit["mask_fraction"] == pytest.approx(fractions[k])

    default = query(client, image, polygon=box_polygon(*BOX)).json()
    assert default["min_iou"] == 0.2
    assert [u["unit_id"] for u in default["units"]] == [int(k) for k in expected if ious[k] >= 0.2]


def test_the_best_matching_units_map_comes_with_the_answer(client: TestClient, image: bytes) -> None:
    explainer = client.app.state.explainer  # type: ignore[attr-defined]
    x = explainer.preprocess(explainer.decode(image).pixels)
    _, features = explainer.forward(x)
    body = query(client, image, min_iou=0.01, polygon=box_polygon(*BOX)).json()
    best = body["units"][0]["unit_id"]
    sent = body["best_unit_map"]
    assert sent["shape"] == list(features.shape[1:]) and sent["encoding"] == "json"
    np.testing.assert_allclose(np.array(sent["values"]), features[best], rtol=1e-3, atol=1e-4)
    assert sent["grid_to_image"]["image_shape"] == list(SHAPE)

    # No unit's mask is exactly one query pixel, so at the IoU of 1 none matches and there is no map.
    nothing = query(client, image, min_iou=1.0, polygon=box_polygon(10, 11, 10, 11)).json()
    assert nothing["units"] == [] and nothing["best_unit_map"] is None


def test_mask_and_polygon_give_the_same_answer(client: TestClient, image: bytes) -> None:
    by_polygon = query(client, image, min_iou=0.01, polygon=box_polygon(*BOX)).json()
    by_mask = query(client, image, min_iou=0.01, mask=box_mask(*BOX)).json()
    assert by_mask["region"] == by_polygon["region"]
    assert by_mask["units"] == by_polygon["units"] and by_mask["labels"] == by_polygon["labels"]


def test_whole_image_region_iou_is_the_mask_fraction(client: TestClient, image: bytes) -> None:
    everything = json.dumps([[-1, -1], [SHAPE[1], -1], [SHAPE[1], SHAPE[0]], [-1, SHAPE[0]]])
    body = query(client, image, min_iou=1e-9, polygon=everything).json()
    assert body["region"]["fraction"] == 1.0 and body["units"]
    for unit in body["units"]:
        assert unit["iou"] == pytest.approx(unit["mask_fraction"])
    ious = [u["iou"] for u in body["units"]]
    assert ious == sorted(ious, reverse=True)


def test_pruning_is_exact_at_a_reduced_query_resolution(client: TestClient, image: bytes) -> None:
    """With the query grid much coarser than the network input, the pruned query still equals brute force."""
    queries = RegionQueries(explainer=client.app.state.explainer, catalog=client.app.state.catalog, max_side=50)  # type: ignore[attr-defined]
    polygon = np.array([[40.0, 90.0], [200.0, 60.0], [230.0, 300.0], [90.0, 250.0]])
    shape = query_shape(QUERY, 50)
    assert max(shape) == 50
    region = rasterise_polygon(polygon, SHAPE, shape)
    from service.queries import PolygonRegion

    result = queries.query(image, PolygonRegion(vertices=polygon), min_iou=1e-9)
    ious, _, _ = brute_force(client, image, region)
    assert result.query_shape == shape
    assert {u.unit_id: u.iou for u in result.units} == pytest.approx(
        {int(k): ious[k] for k in np.flatnonzero(ious > 0)}
    )


def test_label_reports_use_the_loaded_bundles_labels(
    make_client: Callable[..., Any], database_url: str, image: bytes
) -> None:
    with make_client(database_url=database_url) as client:
        region = np.zeros(QUERY, dtype=bool)
        region[BOX[0] : BOX[1], BOX[2] : BOX[3]] = True
        ious, maxima, _ = brute_force(client, image, region)
        hit = [int(k) for k in np.argsort(-ious)[:3]]
        miss = int(np.flatnonzero(ious == 0)[0])
        label = {"category": "Mass", "cancer_association": "yes"}
        batch = [
            {**label, "unit_id": hit[0], "annotator": "dr-a", "label": "Mass edge"},
            {**label, "unit_id": hit[0], "annotator": "dr-b", "label": "Mass edge"},  # counted once
            {**label, "unit_id": miss, "annotator": "dr-a", "label": "Mass edge"},
            {**label, "unit_id": hit[1], "annotator": "dr-a", "label": "Calcified vessel"},
        ]
        assert client.post("/units/batch", json={"annotations": batch}).status_code == 201
        store = AnnotationStore(database_url)
        store.add(unit_id=hit[2], annotator="dr-old", label="Old label", category="Other", bundle_hash=OLD_BUNDLE)
        store.close()

        body = query(client, image, min_iou=1e-9, polygon=box_polygon(*BOX)).json()
        reports = {r["label"]: r for r in body["labels"]}
        assert set(reports) == {"Mass edge", "Calcified vessel"}  # other bundles' labels describe other units
        edge = reports["Mass edge"]
        assert edge["unit_ids"] == sorted([hit[0], miss])
        assert edge["mean_iou"] == pytest.approx((ious[hit[0]] + 0.0) / 2)
        assert edge["mean_max_activation"] == pytest.approx((maxima[hit[0]] + maxima[miss]) / 2)
        assert reports["Calcified vessel"]["mean_iou"] == pytest.approx(ious[hit[1]])
        assert [r["mean_iou"] for r in body["labels"]] == sorted((r["mean_iou"] for r in body["labels"]), reverse=True)

        listed = {u["unit_id"]: u for u in body["units"]}
        assert [a["annotator"] for a in listed[hit[0]]["annotations"]] == ["dr-a", "dr-b"]
        assert [(a["label"], a["current_bundle"]) for a in listed[hit[2]]["annotations"]] == [("Old label", False)]


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((40, 40), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("region", "params", "status", "code", "field"),
    [
        ({}, {}, 422, "invalid_parameter", "polygon"),
        ({"polygon": box_polygon(*BOX), "mask": box_mask(*BOX)}, {}, 422, "invalid_parameter", "polygon"),
        ({"polygon": "[[1, 2], [3, 4"}, {}, 422, "invalid_parameter", "polygon"),
        ({"polygon": "[[1, 2], [3, 4]]"}, {}, 422, "invalid_parameter", "polygon"),
        ({"polygon": '{"points": [[1, 2], [3, 4], [5, 6]]}'}, {}, 422, "invalid_parameter", "polygon"),
        ({"polygon": '[[1, 2], [3, "4"], [5, 6]]'}, {}, 422, "invalid_parameter", "polygon"),
        ({"polygon": "[[1, 2], [3, NaN], [5, 6]]"}, {}, 422, "invalid_parameter", "polygon"),
        ({"polygon": "[[1, 2], [3, 4, 5], [5, 6]]"}, {}, 422, "invalid_parameter", "polygon"),
        ({"polygon": "[[1, 2], [true, 4], [5, 6]]"}, {}, 422, "invalid_parameter", "polygon"),
        ({"polygon": json.dumps([[0, 0]] * 5000)}, {}, 422, "invalid_parameter", "polygon"),
        ({"polygon": "[[1000, 1000], [1100, 1000], [1100, 1100]]"}, {}, 422, "invalid_parameter", "polygon"),
        ({"polygon": "[[10, 10], [10, 10], [10, 10]]"}, {}, 422, "invalid_parameter", "polygon"),
        ({"mask": png(np.full((100, 100), 255, dtype=np.uint8))}, {}, 422, "invalid_parameter", "mask"),
        ({"mask": png(np.zeros(SHAPE, dtype=np.uint8))}, {}, 422, "invalid_parameter", "mask"),
        ({"mask": _jpeg()}, {}, 415, "unsupported_media_type", "mask"),
        ({"mask": box_mask(*BOX)[:60]}, {}, 422, "corrupt_image", "mask"),
        ({"polygon": box_polygon(*BOX)}, {"min_iou": 0}, 422, "validation_error", "min_iou"),
        ({"polygon": box_polygon(*BOX)}, {"min_iou": 1.5}, 422, "validation_error", "min_iou"),
        ({"polygon": box_polygon(*BOX)}, {"min_iou": "high"}, 422, "validation_error", "min_iou"),
    ],
)
def test_bad_regions_are_4xx_naming_the_field(
    client: TestClient, image: bytes, region: dict[str, Any], params: dict[str, Any], status: int, code: str, field: str
) -> None:
    files: dict[str, Any] = {"file": ("m.png", image, "image/png")}
    data = {k: v for k, v in region.items() if k != "mask"}
    if "mask" in region:
        files["mask"] = ("region.png", region["mask"], "image/png")
    response = client.post("/query/region", files=files, data=data, params=params)
    assert_error(response, status, code, field)


def test_bad_uploads_are_4xx_like_explain(client: TestClient, image: bytes) -> None:
    polygon = {"polygon": box_polygon(*BOX)}
    assert_error(
        client.post("/query/region", files={"file": ("m.png", b"", "image/png")}, data=polygon),
        400,
        "empty_upload",
        "file",
    )
    assert_error(
        client.post("/query/region", files={"file": ("m.txt", b"hello there", "text/plain")}, data=polygon),
        415,
        "unsupported_media_type",
        "file",
    )
    assert_error(client.post("/query/region", json={"polygon": "[]"}), 415, "unsupported_media_type", "file")
    assert_error(
        client.post("/query/region", files={"mask": ("r.png", box_mask(*BOX), "image/png")}, data=polygon),
        422,
        "invalid_parameter",
        "file",
    )
    as_file = {"file": ("m.png", image, "image/png"), "polygon": ("p.json", b"[[1,2],[3,4],[5,6]]", "application/json")}
    assert_error(client.post("/query/region", files=as_file), 422, "invalid_parameter", "polygon")


def test_region_too_large_for_the_upload_limit(make_client: Callable[..., Any], image: bytes) -> None:
    with make_client(max_upload_bytes=len(image) + 10) as client:
        response = query(client, image, mask=box_mask(*BOX))
        assert_error(response, 413, "upload_too_large", "file")


def test_dicom_queries_log_no_patient_identifiers(
    client: TestClient, phantom_dicom: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    from pydicom import dcmread

    header = dcmread(io.BytesIO(phantom_dicom))
    identifiers = [str(header.PatientName), str(header.PatientID), str(header.PatientBirthDate)]
    caplog.set_level(logging.DEBUG)
    files = {"file": (f"{identifiers[1]}.dcm", phantom_dicom, "application/dicom")}
    response = client.post("/query/region", files=files, data={"polygon": "[[10, 10], [150, 10], [150, 200]]"})
    assert response.status_code == 200, response.text
    assert response.json()["image"]["format"] == "DICOM"
    logged = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert "/query/region" in logged  # the access line is there, by route template only
    for identifier in identifiers:
        assert identifier not in logged and identifier not in response.text


def test_rasterised_polygon_matches_point_in_polygon() -> None:
    rng = np.random.default_rng(7)
    image_shape, out_shape = (90, 70), (45, 35)
    rows = (np.arange(out_shape[0]) + 0.5) * 2 - 0.5
    cols = (np.arange(out_shape[1]) + 0.5) * 2 - 0.5
    for _ in range(10):
        vertices = rng.uniform(-10, 100, (int(rng.integers(3, 9)), 2))
        expected = np.zeros(out_shape, dtype=bool)
        for i, y in enumerate(rows):
            for j, x in enumerate(cols):
                inside = False
                for (x1, y1), (x2, y2) in zip(vertices, np.roll(vertices, -1, axis=0)):
                    if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
                        inside = not inside
                expected[i, j] = inside
        assert (rasterise_polygon(vertices, image_shape, out_shape) == expected).all()


def test_query_shape_caps_the_long_side() -> None:
    assert query_shape((183, 128)) == (183, 128)
    assert query_shape((1211, 908)) == (384, 288)
    assert query_shape((908, 1211), 100) == (75, 100)
