"""One vocabulary of labels in Chromium: the survey and the group form offer the labels units carry, with category."""

from __future__ import annotations

from pathlib import Path

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture then skips these tests, or fails them under CI=true
    expect = None

from tests.web.test_explain_page import explain_phantom
from tests.web.test_survey_page import ranked_units

TERM = "Vocabulary term (web test)"
CATEGORY = "Architectural distortion"


def offer(service, term: str = TERM) -> tuple[int, int]:
    """Label the first ranked unit with ``term`` as dr_b; return it and another ranked unit for dr_a to label."""
    first, second = ranked_units(service)[:2]
    with service.client("dr_b") as client:
        put = client.put(f"/units/{first}", json={"label": term, "category": CATEGORY, "cancer_association": "unsure"})
        assert put.status_code == 201, put.text
    return first, second


def test_the_survey_offers_existing_labels_and_saves_a_chosen_one(page, service, use_token) -> None:
    first, unit = offer(service)
    use_token(page, service.tokens["dr_a"])
    page.goto(f"/ui/units/{unit}")
    label = page.get_by_label("Short label")
    suggestion = page.locator(f'#{label.get_attribute("id")}-suggestions option[value="{TERM}"]')
    expect(suggestion).to_have_count(1)
    expect(suggestion).to_have_attribute("label", f"{CATEGORY} · 1 unit")

    page.get_by_role("group", name="Do these images show recognizable phenomena?").get_by_label("Yes").check()
    page.get_by_role("group", name="Are they associated with breast cancer?").get_by_label("Unsure").check()
    # Choosing a suggestion puts its text in the field (an input event), which also chooses its category.
    label.fill(TERM)
    expect(page.get_by_label("BI-RADS lexicon category")).to_have_value(CATEGORY)
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_contain_text(f"“{TERM}” is version 1 of dr_a's label for unit {unit}")
    with service.client("viewer") as client:
        mine = next(a for a in client.get(f"/units/{unit}").json()["annotations"] if a["annotator"] == "dr_a")
        terms = client.get("/units/labels").json()["labels"]
    assert (mine["label"], mine["category"]) == (TERM, CATEGORY)
    assert next(t for t in terms if t["label"] == TERM)["unit_ids"] == sorted([first, unit])
    # The list is re-read after the save: the term now counts both units.
    expect(suggestion).to_have_attribute("label", f"{CATEGORY} · 2 units")

    # A new label is still accepted as typed, and leaves the chosen category alone.
    label.fill("A brand-new label (web test)")
    expect(page.get_by_label("BI-RADS lexicon category")).to_have_value(CATEGORY)


def test_the_group_form_offers_existing_labels(page, service, use_token, phantom_png: bytes, tmp_path: Path) -> None:
    term = "Group vocabulary term (web test)"
    offer(service, term)
    explain_phantom(page, service, use_token, phantom_png, tmp_path, who="dr_a")
    page.get_by_role("button", name="Label report for the whole image").click()
    expect(page.locator("#group-form")).to_be_visible()
    expect(page.locator(f'#group-label-suggestions option[value="{term}"]')).to_have_attribute(
        "label", f"{CATEGORY} · 1 unit"
    )
    page.locator("#group-label").fill(term)
    expect(page.locator("#group-category")).to_have_value(CATEGORY)
