"""The overview page in Chromium, and what every page owes: labels, landmarks, focus order, fitting a laptop screen."""

from __future__ import annotations

import re

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture then skips these tests, or fails them under CI=true
    expect = None


def test_overview_lists_ranked_units_and_the_embedding_opens_a_survey(page, service, sign_in) -> None:
    page.goto("/ui/")
    expect(page.get_by_role("alert")).to_contain_text("needs a token")
    sign_in(page, service.tokens["viewer"])

    with service.client("viewer") as client:
        overview = client.get("/units").json()
    for name in overview["classes"]:
        table = page.locator(f'table[data-class="{name}"]')
        ranked = [u for u in overview["units"] if name in u["ranks"]]
        expect(table.locator("tbody tr")).to_have_count(len(ranked))
        expect(page.get_by_role("heading", name=re.compile(f"^{name} coverage"))).to_contain_text(
            f"{100 * overview['coverage'][name]['coverage']:.2f}%"
        )
    expect(page.locator("#model-line")).to_contain_text(f"of {len(overview['units'])} ranked units labelled")

    points = page.locator("#scatter svg a[data-unit]")
    expect(points).to_have_count(len(overview["units"]))
    page.get_by_label("Colour by").select_option("status")
    expect(page.locator("#legend li")).to_have_count(3)
    unit = points.first.get_attribute("data-unit")
    points.first.click()
    expect(page).to_have_url(re.compile(rf"/ui/units/{unit}$"))
    expect(page.get_by_role("heading", name=f"Unit {unit}", exact=True)).to_be_visible()


# Every control named (label, aria-label or aria-labelledby), as assistive technology needs.
UNLABELLED_CONTROLS = """() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter(e => e.type !== 'hidden' && e.getClientRects().length)
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.getAttribute('aria-labelledby')
               && !(e.tagName === 'BUTTON' && e.textContent.trim()))
  .map(e => e.outerHTML.slice(0, 120))"""


@pytest.mark.parametrize("path", ["/ui/", "/ui/units/{unit}", "/ui/explain"], ids=["overview", "survey", "explain"])
def test_pages_are_accessible_and_fit_a_laptop_screen(page, service, use_token, path: str) -> None:
    with service.client("viewer") as client:
        unit = client.get("/units").json()["units"][0]["unit_id"]
    use_token(page, service.tokens["viewer"])
    page.goto(path.format(unit=unit))
    page.wait_for_load_state("networkidle")
    # The first Tab reaches the skip link, which leads to the content.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()

    page.locator("#session summary").click()  # the sign-in form's fields count too

    assert page.locator("html").get_attribute("lang") == "en"
    expect(page.get_by_role("main")).to_have_count(1)
    expect(page.get_by_role("heading", level=1)).to_have_count(1)
    assert page.evaluate(UNLABELLED_CONTROLS) == []
    # No sideways scrolling at 1280×720.
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
