"""The explanation viewer in Chromium: overlays, DICOM and TIFF uploads, upload errors, region query, group labels."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture then skips these tests, or fails them under CI=true
    expect = None

UPLOAD = "Mammogram (DICOM, PNG, JPEG or TIFF)"

# Mean red level of the image canvas: > 0 once the mammogram is drawn.
CANVAS_MEAN = """() => {
  const c = document.getElementById('image-canvas');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let s = 0;
  for (let i = 0; i < d.length; i += 4) s += d[i];
  return s / (d.length / 4);
}"""


# The RGB values of a canvas, by id.
PIXELS = """(id) => {
  const c = document.getElementById(id);
  return [...c.getContext('2d').getImageData(0, 0, c.width, c.height).data].filter((_, i) => i % 4 !== 3);
}"""


def upload(page, path: Path) -> None:
    page.get_by_label(UPLOAD).set_input_files(path)
    page.get_by_role("button", name="Explain", exact=True).click()


def explain_phantom(page, service, use_token, png: bytes, tmp_path: Path, *, who: str) -> None:
    """Open the viewer as ``who`` and explain the phantom, until its eight units are listed."""
    image = tmp_path / "phantom.png"
    image.write_bytes(png)
    use_token(page, service.tokens[who])
    page.goto("/ui/explain")
    upload(page, image)
    expect(page.locator("#units > li")).to_have_count(8)


def phantom_pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)), dtype=np.uint16)


def uncompressed_dicom(png: bytes) -> bytes:
    """The phantom as a 16-bit MONOCHROME2 MG DICOM, Explicit VR Little Endian, with no patient data."""
    from pydicom import uid
    from pydicom.dataset import Dataset, FileMetaDataset

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = uid.UID("1.2.840.10008.5.1.4.1.1.1.2")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid.UID("1.2.3.4.5.6.3")
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4.5.6.1", "1.2.3.4.5.6.2"
    ds.Modality, ds.ImageLaterality, ds.ViewPosition = "MG", "L", "CC"
    ds.set_pixel_data(phantom_pixels(png), "MONOCHROME2", 16, generate_instance_uid=False)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_the_viewer_shows_image_overlay_scores_and_units(page, service, use_token, phantom_png, tmp_path) -> None:
    image = tmp_path / "phantom.png"
    image.write_bytes(phantom_png)
    use_token(page, service.tokens["viewer"])
    page.goto("/ui/explain")
    with page.expect_response(lambda r: "/explain?" in r.url and r.request.method == "POST") as answer:
        upload(page, image)
    body = answer.value.json()

    expect(page.get_by_role("status")).to_contain_text("Explained phantom.png")
    assert page.evaluate(CANVAS_MEAN) > 5
    # Per class: the image-level score first (bar and percentage), the classifier's probability beside it.
    rows = page.get_by_role("list", name="Image-level scores").get_by_role("listitem")
    expect(rows).to_have_count(3)
    for i, c in enumerate(body["classes"]):
        expect(rows.nth(i).locator(".score")).to_have_text(f"{100 * body['scores'][c]:.1f}%")
        expect(rows.nth(i).locator(".classifier")).to_have_text(
            f"classifier {100 * body['classifier_probabilities'][c]:.1f}%"
        )
    expect(rows.nth(body["classes"].index(body["predicted_class"])).locator("strong")).to_have_text(
        body["predicted_class"]
    )
    expect(page.locator("#score-rule")).to_contain_text(f"Scores by rule {body['score_rule']}: each lesion class")
    expect(page.locator("#prob-maps canvas")).to_have_count(3)
    expect(page.locator("#units > li")).to_have_count(8)
    expect(page.locator("#units > li").first).to_contain_text("influence")
    expect(page.get_by_role("combobox", name="Overlay")).to_have_value("cam")

    # Opacity is the overlay canvas's; choosing a unit draws its map and marks its card.
    page.get_by_label("Opacity").fill("25")
    expect(page.locator("#opacity-value")).to_have_text("25%")
    assert page.locator("#overlay-canvas").evaluate("c => c.style.opacity") == "0.25"
    second = page.locator("#units > li").nth(1)
    second.get_by_role("button").click()
    expect(second).to_have_class(re.compile("selected"))
    expect(page.get_by_role("combobox", name="Overlay")).to_have_value(f"unit:{second.get_attribute('data-unit')}")


def test_an_uncompressed_dicom_is_drawn_in_the_browser(page, service, use_token, phantom_png, tmp_path) -> None:
    image = tmp_path / "phantom.dcm"
    image.write_bytes(uncompressed_dicom(phantom_png))
    use_token(page, service.tokens["viewer"])
    page.goto("/ui/explain")
    upload(page, image)
    expect(page.locator("#image-line")).to_contain_text("DICOM")
    expect(page.locator("#image-line")).to_contain_text("L CC")
    expect(page.locator("#image-line")).not_to_contain_text("server's CAM overlay")
    assert page.evaluate(CANVAS_MEAN) > 5


def test_a_tiff_is_shown_through_the_servers_overlay(page, service, use_token, phantom_png, tmp_path) -> None:
    # Chromium cannot decode TIFF, so the page asks for ?overlays=png and draws the server's CAM overlay.
    buf = io.BytesIO()
    Image.fromarray(phantom_pixels(phantom_png)).save(buf, format="TIFF")
    image = tmp_path / "phantom.tif"
    image.write_bytes(buf.getvalue())
    use_token(page, service.tokens["viewer"])
    page.goto("/ui/explain")
    upload(page, image)
    expect(page.locator("#image-line")).to_contain_text("server's CAM overlay")
    assert page.evaluate(CANVAS_MEAN) > 5


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("notes.txt", b"these are notes, not a mammogram\n", "not a PNG, TIFF, JPEG or DICOM image"),
        ("broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "corrupt_image"),
    ],
    ids=["text-file", "corrupt-png"],
)
def test_a_failed_upload_says_why(page, service, use_token, tmp_path, name: str, content: bytes, message: str) -> None:
    bad = tmp_path / name
    bad.write_bytes(content)
    use_token(page, service.tokens["viewer"])
    page.goto("/ui/explain")
    upload(page, bad)
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text(f"Upload failed for “{name}”")
    expect(alert).to_contain_text(message)
    expect(page.locator("#result")).to_be_hidden()


def test_an_upload_without_a_token_says_so(page, service, tmp_path, phantom_png) -> None:
    image = tmp_path / "phantom.png"
    image.write_bytes(phantom_png)
    page.goto("/ui/explain")
    upload(page, image)
    expect(page.get_by_role("alert")).to_contain_text("This needs a token")


def best_region(service, png: bytes) -> tuple[list[float], dict[str, float], set[int]]:
    """A rectangle, one layer4 cell in size, that some unit's map matches best: (edges, box, matching units).

    Edges are [left, top, right, bottom] in image pixels (pixel edges at whole numbers), as the page draws.
    """
    with service.client("viewer") as client:
        explained = client.post("/explain", files={"file": ("p.png", png, "image/png")}).json()
        g = explained["cam"]["grid_to_image"]
        rows, cols = explained["cam"]["shape"]
        height, width = explained["image"]["shape"]
        best: tuple[float, list[float], set[int]] = (0.0, [], set())
        for i in range(rows):
            for j in range(cols):
                cy, cx = g["offset"][0] + g["scale"][0] * i + 0.5, g["offset"][1] + g["scale"][1] * j + 0.5
                half_h, half_w = g["scale"][0] / 2, g["scale"][1] / 2
                # One pixel clear of the image's border, where a pointer would leave the drawing surface.
                edges = [
                    max(1, cx - half_w),
                    max(1, cy - half_h),
                    min(width - 1, cx + half_w),
                    min(height - 1, cy + half_h),
                ]
                x0, y0, x1, y1 = (v - 0.5 for v in edges)
                polygon = [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
                found = client.post(
                    "/query/region", files={"file": ("p.png", png, "image/png")}, data={"polygon": json.dumps(polygon)}
                ).json()["units"]
                if found and found[0]["iou"] > best[0]:
                    best = (found[0]["iou"], edges, {u["unit_id"] for u in found if u["iou"] >= 0.25})
    assert best[2], "no cell-sized region of the phantom matches any unit by IoU >= 0.25"
    return best[1], {"height": height, "width": width}, best[2]


def settled_box(page, selector: str) -> dict[str, float]:
    """The element's box once it is in view and has stopped moving: the page lays out the units, maps and
    embedding after the explanation, and a drag aimed at where the surface was a moment ago misses it."""
    element = page.locator(selector)
    element.scroll_into_view_if_needed()
    box = None
    for _ in range(50):
        current = element.bounding_box()
        if current is not None and current == box:
            return current
        box = current
        page.wait_for_timeout(100)
    raise AssertionError(f"{selector} kept moving for 5 s: last box {box}")


def drag_rectangle(page, edges: list[float], size: dict[str, float]) -> None:
    """Drag a rectangle with these image-pixel edges on the drawing surface, which spans the image."""
    box = settled_box(page, "#region-svg")
    sx, sy = box["width"] / size["width"], box["height"] / size["height"]
    page.mouse.move(box["x"] + edges[0] * sx, box["y"] + edges[1] * sy)
    page.mouse.down()
    page.mouse.move(box["x"] + edges[2] * sx, box["y"] + edges[3] * sy, steps=6)
    page.mouse.up()
    expect(page.locator("#region-svg polygon")).to_have_count(1)


def test_region_query_highlights_units_and_labels_them_as_a_group(
    page, service, use_token, phantom_png, tmp_path
) -> None:
    edges, size, expected = best_region(service, phantom_png)
    explain_phantom(page, service, use_token, phantom_png, tmp_path, who="dr_a")

    drag_rectangle(page, edges, size)
    page.get_by_role("button", name="Find units in region").click()

    results = page.locator("#region-rows tr[data-unit]")
    expect(results.first).to_be_visible()
    found = {int(u) for u in results.evaluate_all("rows => rows.map(r => r.dataset.unit)")}
    assert expected <= found, f"the API matched {expected}, the page listed {found}"
    for unit in found:
        card = page.locator(f'#units > li[data-unit="{unit}"]')
        if card.count():
            expect(card).to_have_class(re.compile("match"))

    label = "Grouped finding (web test)"
    page.get_by_label("Short label").fill(label)
    page.get_by_label("BI-RADS category").select_option("Calcification")
    page.get_by_label("Associated with cancer?").select_option("unsure")
    page.get_by_role("button", name="Label selected units").click()
    expect(page.get_by_role("status")).to_contain_text(f"as “{label}”")
    expect(results.first.locator("td").last).to_have_text(label)
    with service.client("viewer") as client:
        for unit in found:
            labels = {a["annotator"]: a["label"] for a in client.get(f"/units/{unit}").json()["annotations"]}
            assert labels.get("dr_a") == label


def test_a_polygon_can_be_drawn_and_cleared_with_the_keyboard(page, service, use_token, phantom_png, tmp_path) -> None:
    explain_phantom(page, service, use_token, phantom_png, tmp_path, who="viewer")
    surface = page.get_by_role("application", name="Region drawing area over the mammogram")

    surface.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Shift+ArrowDown")
    expect(page.locator("#region-svg polygon")).to_have_count(1)
    expect(page.get_by_role("button", name="Find units in region")).to_be_enabled()
    page.keyboard.press("Escape")
    expect(page.locator("#region-svg polygon")).to_have_count(0)

    page.get_by_label("polygon").check()
    box = settled_box(page, "#region-svg")
    for fx, fy in [(0.3, 0.3), (0.7, 0.35), (0.5, 0.7)]:
        page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
    surface.press("Enter")
    expect(page.locator("#region-svg polygon")).to_have_count(1)
    page.get_by_role("button", name="Find units in region").click()
    expect(page.locator("#region-results")).to_be_visible()
    expect(page.locator("#region-summary")).to_contain_text("of the image")


def test_the_explanation_is_read_first_one_sentence_per_named_unit(
    page, service, use_token, phantom_png, tmp_path
) -> None:
    """A unit an expert named under this bundle is explained in words above the image and its maps."""
    with service.client("dr_b") as client:
        top = client.post("/explain", files={"file": ("p.png", phantom_png, "image/png")}, params={"top_k": 8})
        assert top.status_code == 200, top.text
        first = top.json()["units"][0]["unit_id"]
        put = client.put(
            f"/units/{first}",
            json={"label": "Spiculated margin (web test)", "category": "Mass", "cancer_association": "yes"},
        )
        assert put.status_code == 201, put.text
    image = tmp_path / "phantom.png"
    image.write_bytes(phantom_png)
    use_token(page, service.tokens["viewer"])
    page.goto("/ui/explain")
    with page.expect_response(lambda r: "/explain?" in r.url and r.request.method == "POST") as answer:
        upload(page, image)
    block = answer.value.json()["explanation"]

    sentences = page.locator("#explanation-units > li")
    expect(sentences).to_have_count(len(block["units"]))
    assert block["units"][0]["unit_id"] == first and "'Spiculated margin (web test)' — Mass" in block["units"][0]["text"]
    for i, unit in enumerate(block["units"]):
        expect(sentences.nth(i).locator(".sentence")).to_have_text(unit["text"])
    expect(page.locator("#explanation-intro")).to_contain_text("that carry expert labels of this model")
    # First on the page: above the image, the scores and the unit maps.
    top_of = {name: page.locator(name).bounding_box()["y"] for name in ("#explanation", "#image-canvas", "#scores")}
    assert top_of["#explanation"] < top_of["#image-canvas"] and top_of["#explanation"] < top_of["#scores"]
    # Its unit can be shown over the image from the sentence.
    sentences.first.get_by_role("button").click()
    expect(page.get_by_role("combobox", name="Overlay")).to_have_value(f"unit:{first}")


def test_the_label_report_of_the_whole_image_is_drawn_as_bars(page, service, use_token, phantom_png, tmp_path) -> None:
    """With no region drawn, the label report covers the whole image: per label, two bars with the API's means."""
    with service.client("dr_b") as client:
        ranked = [u["unit_id"] for u in client.get("/units").json()["units"]][:3]
        for unit, label in zip(ranked, ["Bar chart label A (web test)", "Bar chart label A (web test)", "Bar B"]):
            put = client.put(f"/units/{unit}", json={"label": label, "category": "Mass", "cancer_association": "yes"})
            assert put.status_code == 201, put.text
    explain_phantom(page, service, use_token, phantom_png, tmp_path, who="viewer")
    expect(page.locator("#region-svg polygon")).to_have_count(0)
    with page.expect_response(lambda r: r.url.endswith("/query/region")) as answer:
        page.get_by_role("button", name="Label report for the whole image").click()
    body = answer.value.json()
    # The polygon the page sent is the whole image: every query pixel is inside.
    assert body["region"]["fraction"] == 1.0
    reports = body["labels"]
    assert {"Bar chart label A (web test)", "Bar B"} <= {r["label"] for r in reports}

    rows = page.get_by_role("list", name="Label report").get_by_role("listitem")
    expect(rows).to_have_count(len(reports))
    expect(page.locator("#region-summary")).to_have_text("Region: the whole image.")
    top = max(r["mean_max_activation"] for r in reports)
    for i, report in enumerate(reports):
        row = rows.nth(i)
        expect(row.locator("strong")).to_have_text(report["label"])
        expect(row.locator(".activation .value")).to_have_text(f"{report['mean_max_activation']:.2f}")
        expect(row.locator(".iou .value")).to_have_text(f"{report['mean_iou']:.3f}")
        widths = row.locator(".bar > span").evaluate_all("spans => spans.map(s => parseFloat(s.style.width))")
        assert widths == pytest.approx(
            [100 * max(0.0, report["mean_max_activation"]) / top, 100 * report["mean_iou"]], abs=0.06
        )
    two = next(i for i, r in enumerate(reports) if r["label"] == "Bar chart label A (web test)")
    expect(rows.nth(two)).to_contain_text("2 units")


def test_the_units_a_region_matched_are_enlarged_and_outlined_in_the_embedding(
    page, service, use_token, phantom_png, tmp_path
) -> None:
    edges, size, _ = best_region(service, phantom_png)
    explain_phantom(page, service, use_token, phantom_png, tmp_path, who="viewer")
    drag_rectangle(page, edges, size)
    with page.expect_response(lambda r: r.url.endswith("/query/region")) as answer:
        page.get_by_role("button", name="Find units in region").click()
    matched = {u["unit_id"] for u in answer.value.json()["units"]}
    assert matched

    with service.client("viewer") as client:
        num_units = len(client.get("/units/embedding").json()["units"])
    scatter = page.locator("#region-scatter svg")
    expect(scatter.locator("circle")).to_have_count(num_units)
    outlined = scatter.locator("circle.matched")
    expect(outlined).to_have_count(len(matched))
    shown = outlined.evaluate_all(
        "cs => cs.map(c => [Number(c.closest('a').dataset.unit), c.getAttribute('r'), c.getAttribute('stroke-width')])"
    )
    assert {unit for unit, _, _ in shown} == matched
    assert all((r, width) == ("10", "3") for _, r, width in shown)
    # Every other point keeps its size: 6 for ranked units, 2.5 for the rest.
    others = scatter.locator("circle:not(.matched)").evaluate_all("cs => [...new Set(cs.map(c => c.getAttribute('r')))]")
    assert set(others) <= {"6", "2.5"}
    expect(page.locator("#region-embedding-hint")).to_contain_text(f"The {len(matched)} matched unit")

    # Beside the results: the region, and the best-matching unit's map over the same region.
    best = answer.value.json()["units"][0]
    expect(page.locator("#region-pair")).to_be_visible()
    expect(page.locator("#region-best-caption")).to_have_text(
        f"Unit {best['unit_id']}'s map over it (best match, IoU {best['iou']:.3f})"
    )
    region, with_map = (page.evaluate(PIXELS, name) for name in ("region-crop", "region-best"))
    assert len(region) == len(with_map) > 0 and max(region) > 0
    assert np.abs(np.array(with_map, dtype=float) - np.array(region, dtype=float)).mean() > 5
