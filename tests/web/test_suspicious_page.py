"""The suspicious patches page in Chromium: thumbnails by probability, class filter, preview, one-click region query."""

from __future__ import annotations

import json
import shutil
from typing import Any

from deepminer.bundle import META_FILE, SUSPICIOUS_DIR, finalise_bundle
from tests.web.conftest import open_page, run_service

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture then skips these tests, or fails them under CI=true
    expect = None

# Mean brightness of a canvas, by id or by element: > 0 once a picture is drawn on it.
CANVAS_MEAN = """(c) => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let s = 0;
  for (let i = 0; i < d.length; i += 4) s += d[i] + d[i + 1] + d[i + 2];
  return s / (3 * d.length / 4);
}"""
# Pixels of the preview that are the outline's yellow (#ffd400): the patch drawn in its mammogram.
YELLOW = """(c) => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] > 240 && d[i + 1] > 190 && d[i + 1] < 230 && d[i + 2] < 40) n++;
  return n;
}"""


def matching_patch(service: Any) -> tuple[dict[str, Any], int]:
    """The most probable malignant patch whose region some unit's map matches, and its best unit (asked of the API)."""
    with service.client("viewer") as client:
        patches = client.get("/suspicious-patches", params={"class": "malignant"}).json()["patches"]
        for patch in patches:
            png = client.get(patch["image"]["url"]).content
            b = patch["context_box"]
            x0, y0, x1, y1 = b["left"] - 0.5, b["top"] - 0.5, b["left"] + b["width"] - 0.5, b["top"] + b["height"] - 0.5
            polygon = [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
            found = client.post(
                "/query/region", files={"file": ("p.png", png, "image/png")}, data={"polygon": json.dumps(polygon)}
            ).json()["units"]
            if found:
                return patch, found[0]["unit_id"]
    raise AssertionError("no malignant suspicious patch's region matches any unit by IoU >= 0.2")


def test_thumbnails_by_probability_filtered_by_class_and_shown_in_their_mammogram(page, service, use_token) -> None:
    with service.client("viewer") as client:
        every = client.get("/suspicious-patches").json()
    use_token(page, service.tokens["viewer"])
    page.goto("/ui/suspicious")
    expect(page.locator('nav a[aria-current="page"]')).to_have_text("Suspicious patches")
    links = page.locator("#patches a[data-patch]")
    expect(links).to_have_count(len(every["patches"]))
    assert links.evaluate_all("as => as.map(a => a.dataset.patch)") == [p["id"] for p in every["patches"]]
    shown = [float(v) for v in links.evaluate_all("as => as.map(a => a.dataset.probability)")]
    assert shown == sorted(shown, reverse=True)
    expect(page.locator("#status")).to_have_text(f"{len(every['patches'])} patches, most probable first.")

    # Filter by class: only that class's patches, by rank.
    for name in every["classes"]:
        page.get_by_role("radio", name=name, exact=True).check()
        ids = [p["id"] for p in every["patches"] if p["class"] == name]
        expect(links).to_have_count(len(ids))
        expect(links.first).to_have_attribute("data-patch", f"{name}-1")
        assert links.evaluate_all("as => as.map(a => a.dataset.patch)") == ids
    page.get_by_role("radio", name="malignant", exact=True).check()
    expect(links.first).to_have_attribute("data-patch", "malignant-1")

    # Each thumbnail is cut from its mammogram.
    page.wait_for_function(
        f"() => [...document.querySelectorAll('#patches canvas')].every(c => ({CANVAS_MEAN})(c) > 0)"
    )

    # Pointing at a patch outlines it in its mammogram; focusing another (keyboard) shows that one.
    first = next(p for p in every["patches"] if p["id"] == "malignant-1")
    expect(page.locator("#preview")).to_be_hidden()
    links.first.hover()
    canvas = page.locator("#preview-canvas")
    expect(canvas).to_have_attribute("data-patch", "malignant-1")
    expect(page.locator("#preview-caption")).to_contain_text(
        f"malignant #1, probability {100 * first['probability']:.1f}%, image {first['image_id']}"
    )
    assert canvas.evaluate(CANVAS_MEAN) > 0 and canvas.evaluate(YELLOW) > 0
    expect(page.get_by_role("link", name="Run the region query on this patch")).to_have_attribute(
        "href", "/ui/explain?suspicious=malignant-1"
    )
    if links.count() > 1:
        links.nth(1).focus()
        expect(canvas).to_have_attribute("data-patch", "malignant-2")
    assert not page.locator("#alert").is_visible()


def test_one_click_on_a_patch_runs_its_region_query_with_enlarged_points_and_label_bars(
    page, service, use_token
) -> None:
    patch, best = matching_patch(service)
    label = "Suspicious patch label (web test)"
    with service.client("dr_a") as client:
        put = client.put(f"/units/{best}", json={"label": label, "category": "Mass", "cancer_association": "yes"})
        assert put.status_code == 201, put.text
    use_token(page, service.tokens["viewer"])
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto("/ui/suspicious")
    page.get_by_role("radio", name="malignant", exact=True).check()
    link = page.locator(f'#patches a[data-patch="{patch["id"]}"]')
    expect(link).to_be_visible()
    with page.expect_response(lambda r: r.url.endswith("/query/region"), timeout=60_000) as answer:
        link.click()
    page.wait_for_url(f"**/ui/explain?suspicious={patch['id']}")
    assert answer.value.status == 200
    body = answer.value.json()
    matched = {u["unit_id"] for u in body["units"]}
    assert matched

    # The patch's mammogram is explained for the patch's class, with the patch as the region.
    expect(page.locator("#suspicious-line")).to_contain_text(f"malignant #{patch['rank']}")
    expect(page.locator("#class-name")).to_have_value("malignant")
    assert any("/explain?" in url and "class_name=malignant" in url for url in requests)
    b = patch["context_box"]
    corners = [
        (b["left"], b["top"]),
        (b["left"] + b["width"], b["top"]),
        (b["left"] + b["width"], b["top"] + b["height"]),
        (b["left"], b["top"] + b["height"]),
    ]
    expect(page.locator("#region-svg polygon")).to_have_attribute(
        "points", " ".join(f"{x:.2f},{y:.2f}" for x, y in corners)
    )
    height, width = patch["image"]["shape"]
    assert abs(body["region"]["fraction"] - b["width"] * b["height"] / (width * height)) < 0.05

    # The results: matched rows, the matched units enlarged and outlined in the embedding, the label bars.
    expect(page.locator("#region-results")).to_be_visible()
    expect(page.locator("#region-rows tr[data-unit]")).to_have_count(len(matched))
    outlined = page.locator("#region-scatter svg circle.matched")
    expect(outlined).to_have_count(len(matched))
    shown = outlined.evaluate_all("cs => cs.map(c => [Number(c.closest('a').dataset.unit), c.getAttribute('r')])")
    assert {unit for unit, _ in shown} == matched and all(r == "10" for _, r in shown)
    expect(page.locator("#label-bars > li")).to_have_count(len(body["labels"]))
    report = next(r for r in body["labels"] if r["label"] == label)
    assert best in report["unit_ids"] and report["mean_iou"] > 0
    row = page.locator("#label-bars > li").filter(has=page.locator("strong", has_text=label))
    expect(row.locator(".label-bar.iou .value")).to_have_text(f"{report['mean_iou']:.3f}")
    width = row.locator(".label-bar.iou .bar > span").evaluate("s => parseFloat(s.style.width)")
    assert abs(width - 100 * report["mean_iou"]) < 0.1
    assert not page.locator("#alert").is_visible()


def test_an_unknown_patch_id_is_named(page, service, use_token) -> None:
    use_token(page, service.tokens["viewer"])
    page.goto("/ui/explain?suspicious=malignant-9999")
    expect(page.get_by_role("alert")).to_contain_text("lists no suspicious patch “malignant-9999”")
    expect(page.locator("#result")).to_be_hidden()


def test_a_bundle_without_suspicious_patches_says_so(browser, tiny_bundle, tmp_path, request, use_token) -> None:
    older = tmp_path / "older"
    shutil.copytree(tiny_bundle, older)
    shutil.rmtree(older / SUSPICIOUS_DIR)
    meta = json.loads((older / META_FILE).read_text())
    meta.pop("files")
    meta.pop("suspicious_patches")
    finalise_bundle(older, meta)
    with run_service(older, tmp_path / "service") as service, open_page(browser, service, request) as page:
        use_token(page, service.tokens["viewer"])
        page.goto("/ui/suspicious")
        expect(page.locator("#intro")).to_have_text(
            "This model bundle records no suspicious patches: it was built before they were added. "
            "Rebuild it to list them."
        )
        expect(page.locator("#patches a")).to_have_count(0)
        assert not page.locator("#alert").is_visible()
