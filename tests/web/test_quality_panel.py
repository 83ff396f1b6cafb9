"""The overview's "How good are these explanations?" panel in Chromium, on the tiny bundle's real report."""

from __future__ import annotations

import json
import re

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture then skips these tests, or fails them under CI=true
    expect = None

PANEL = "How good are these explanations?"


def test_the_overview_opens_with_the_bundles_quality_figures(page, service, use_token) -> None:
    with service.client("viewer") as client:
        report = client.get("/quality").json()
        classes = client.get("/units").json()["classes"]
    use_token(page, service.tokens["viewer"])
    page.goto("/ui/")
    panel = page.get_by_role("region", name=PANEL)
    expect(panel).to_be_visible()

    expect(panel.locator("#quality-source")).to_contain_text(
        f"the test split of manifest.csv: {report['images']} mammograms, {report['lesion_images']} with a lesion"
    )
    game = report["pointing_game"]
    pointing = panel.locator('[data-figure="pointing_game"]')
    expect(pointing).to_contain_text(f"{100 * game['hit_rate']:.0f}% of {game['images']} lesion images")
    expect(pointing).to_contain_text(f"chance {100 * game['chance_rate']:.0f}%")
    expect(pointing).to_contain_text(f"tolerance {game['tolerance_image_px']:.1f} image px")
    lean = game["peak_offset_input_px"]
    expect(pointing).to_contain_text(f"peak off the lesion centre by {lean['down']:+.1f} down, {lean['right']:+.1f} right")
    background = panel.locator('[data-figure="background"]')
    for name, value in report["background"]["max_probability"].items():
        expect(background).to_contain_text(f"{name} {value:.3f}")

    auc = panel.locator('table[data-table="auc"] tbody tr')
    expect(auc).to_have_count(len(classes))
    among = report["auc"]["score_among_lesion_images"]  # lesion classes only: normal's cell shows a dash
    for row, name in enumerate(report["auc"]["score"]):
        value = among.get(name)
        expect(auc.nth(row).locator("td").nth(2)).to_have_text("—" if value is None else f"{value:.3f}")
    categories = panel.locator('table[data-table="per_category"] tbody tr')
    expect(categories).to_have_count(len(report["per_category"]))
    for row, tally in enumerate(report["per_category"].values()):
        expect(categories.nth(row).locator("td").nth(3)).to_have_text(f"{100 * tally['predicted_as_pathology']:.0f}%")

    bars = panel.locator('table[data-table="bars"] tbody tr')
    expect(bars).to_have_count(len(report["bars"]))
    for row, bar in enumerate(report["bars"].values()):
        expect(bars.nth(row).locator("td").nth(1)).to_have_text(bar["bar"])
        expect(bars.nth(row).locator(".badge")).to_have_text("pass" if bar["pass"] else "fail")

    worst = panel.get_by_role("img", name=re.compile("^Missed lesion images"))
    expect(worst).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=worst.element_handle())
    # At the top: above the ranked units.
    assert panel.bounding_box()["y"] < page.locator("#class-tables").bounding_box()["y"]


def test_a_bundle_without_a_report_gets_one_line_saying_how_to_make_one(page, service, use_token) -> None:
    # The service answers this for a bundle without quality/quality.json (tests/service/test_api_quality.py);
    # here the tab sees that answer, as the page under test must handle it.
    error = {"error": {"code": "no_quality_report", "message": "bundle tiny@x has no report", "field": None}}
    page.route(
        "**/quality",
        lambda route: route.fulfill(status=404, content_type="application/json", body=json.dumps(error)),
    )
    use_token(page, service.tokens["viewer"])
    page.goto("/ui/")
    panel = page.get_by_role("region", name=PANEL)
    expect(panel.locator(".quality-line")).to_have_text(
        "This bundle has no explanation-quality report; make one with "
        "python -m training quality --bundle DIR --manifest CSV on a manifest with lesion masks."
    )
    expect(panel.locator("table")).to_have_count(0)
    expect(page.locator('table[data-class="normal"]')).to_be_visible()  # the rest of the page is unaffected
