"""Top patches of a unit outside the ranked set in Chromium: reached from a region query, drawn on demand, and
listed in words when the service cannot read the hold-out images."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import Service, open_page, run_service
from tests.web.test_explain_page import drag_rectangle, explain_phantom

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture then skips these tests, or fails them under CI=true
    expect = None


def ranked_units(service: Service) -> set[int]:
    with service.client("viewer") as client:
        return {u["unit_id"] for u in client.get("/units").json()["units"]}


def region_matching_an_unranked_unit(service: Service, png: bytes) -> tuple[list[float], dict[str, float], int]:
    """A rectangle one layer4 cell in size whose region query matches a unit outside the ranked set: (edges, size,
    unit), edges [left, top, right, bottom] in image pixels as the page draws them."""
    ranked = ranked_units(service)
    with service.client("viewer") as client:
        explained = client.post("/explain", files={"file": ("p.png", png, "image/png")}).json()
        g = explained["cam"]["grid_to_image"]
        rows, cols = explained["cam"]["shape"]
        height, width = explained["image"]["shape"]
        for i in range(rows):
            for j in range(cols):
                cy, cx = g["offset"][0] + g["scale"][0] * i + 0.5, g["offset"][1] + g["scale"][1] * j + 0.5
                half_h, half_w = g["scale"][0] / 2, g["scale"][1] / 2
                edges = [max(1, cx - half_w), max(1, cy - half_h), min(width - 1, cx + half_w),
                         min(height - 1, cy + half_h)]  # fmt: skip
                x0, y0, x1, y1 = (v - 0.5 for v in edges)
                polygon = [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
                found = client.post(
                    "/query/region", files={"file": ("p.png", png, "image/png")}, data={"polygon": json.dumps(polygon)}
                ).json()["units"]
                # well above the page's 0.2, so the page's own rasterising of the dragged box matches it too
                unranked = [u["unit_id"] for u in found if u["unit_id"] not in ranked and u["iou"] >= 0.3]
                if unranked:
                    return edges, {"height": height, "width": width}, unranked[0]
    raise AssertionError("no cell-sized region of the phantom matches a unit outside the ranked set")


def test_an_unranked_unit_from_a_region_query_shows_its_top_patches(
    page: Any, service: Service, use_token: Any, phantom_png: bytes, tmp_path: Path
) -> None:
    edges, size, unit = region_matching_an_unranked_unit(service, phantom_png)
    with service.client("viewer") as client:
        served = client.get(f"/units/{unit}/visualisation").json()
    assert served["source"] == "rendered" and served["images_available"] and served["patches"]

    explain_phantom(page, service, use_token, phantom_png, tmp_path, who="dr_a")
    drag_rectangle(page, edges, size)
    page.get_by_role("button", name="Find units in region").click()
    row = page.locator(f'#region-rows tr[data-unit="{unit}"]')
    expect(row).to_be_visible()
    row.get_by_role("link", name=f"unit {unit}").click()

    expect(page).to_have_url(f"{service.url}/ui/units/{unit}")
    expect(page.locator("#unit-line")).to_have_text("Not among the ranked units of any class.")
    expect(page.locator("#patch-source")).to_have_text(
        f"Unit {unit} is not among the {len(ranked_units(service))} ranked units: the model bundle lists its top "
        "hold-out patches, and the service drew them now from the hold-out mammograms."
    )
    buttons = page.locator("#patch-grid button")
    expect(buttons).to_have_count(len(served["patches"]))
    expect(page.locator("#patch-count")).to_have_text(
        f"{len(served['patches'])} patches, best first; the grid scrolls."
    )
    # every masked patch image arrives from the service and decodes
    images = page.locator("#patch-grid img")
    page.wait_for_function(
        "n => [...document.querySelectorAll('#patch-grid img')].filter(i => i.complete && i.naturalWidth > 0).length"
        " === n",
        arg=len(served["patches"]),
    )
    assert images.count() == len(served["patches"])
    first = served["patches"][0]
    buttons.first.hover()
    expect(page.locator("#context-figure")).to_be_visible()
    expect(page.locator("#context-caption")).to_contain_text(f"Patch 1 comes from mammogram {first['image_id']}")
    expect(page.get_by_role("alert")).to_have_count(0)
    # showing the plain patches swaps every image for its unmasked PNG
    with page.expect_response(lambda r: r.url.endswith(f"/units/{unit}/visualisation/1/patch")) as plain:
        page.get_by_label("show unmasked").check()
    assert plain.value.status == 200 and plain.value.headers["content-type"] == "image/png"


@pytest.fixture(scope="module")
def service_without_images(web_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The service where the hold-out images are not: DEEPMINER_HOLDOUT_IMAGES_DIR names an empty folder."""
    root = tmp_path_factory.mktemp("web-service-no-images")
    (root / "no-images").mkdir()
    with run_service(web_bundle, root, holdout_images_dir=str(root / "no-images")) as started:
        yield started


def test_without_the_hold_out_images_the_survey_lists_the_patches_in_words(
    browser: Any, service_without_images: Service, use_token: Any, request: pytest.FixtureRequest
) -> None:
    service = service_without_images
    ranked = ranked_units(service)
    with service.client("viewer") as client:
        unit = next(k for k in range(len(client.get("/units/embedding").json()["units"])) if k not in ranked)
        served = client.get(f"/units/{unit}/visualisation").json()
    assert served["images_available"] is False
    with open_page(browser, service, request) as page:
        use_token(page, service.tokens["dr_a"])
        # a ranked unit's patches are in the bundle and still show
        page.goto(f"/ui/units/{min(ranked)}")
        expect(page.locator("#patch-grid button").first).to_be_visible()
        expect(page.locator("#patch-source")).to_be_hidden()
        page.goto(f"/ui/units/{unit}")
        note = page.locator("#patch-source")
        expect(note).to_contain_text(f"Unit {unit} is not among the {len(ranked)} ranked units")
        expect(note).to_contain_text(
            f"The hold-out images of {len(served['patches'])} of its {len(served['patches'])} patches are not "
            "available to the service, so those are listed by mammogram, place and activation only."
        )
        expect(note).to_contain_text("not found")
        expect(note).to_contain_text("DEEPMINER_HOLDOUT_IMAGES_DIR")
        items = page.locator("#patch-grid li.no-image")
        expect(items).to_have_count(len(served["patches"]))
        expect(page.locator("#patch-grid img")).to_have_count(0)
        first = served["patches"][0]
        box = first["box"]
        expect(items.first).to_have_text(
            f"#1 · {first['activation']:.2f} Image not available: mammogram {first['image_id']}, row {box['top']}, "
            f"column {box['left']}, side {box['side']} px."
        )
        expect(page.get_by_role("alert")).to_have_count(0)
