"""The unit survey page in Chromium: annotating a unit, conflicts (412), keyboard use, token errors."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture then skips these tests, or fails them under CI=true
    expect = None

QUESTION_RECOGNIZABLE = "Do these images show recognizable phenomena?"
QUESTION_CANCER = "Are they associated with breast cancer?"
QUESTION_PHENOMENA = "Is there a single phenomenon or several?"


def top_unit(service, png: bytes) -> int:
    """The most influential unit of the phantom mammogram."""
    with service.client("viewer") as client:
        response = client.post("/explain", files={"file": ("phantom.png", png, "image/png")})
    response.raise_for_status()
    return int(response.json()["units"][0]["unit_id"])


def ranked_units(service) -> list[int]:
    with service.client("viewer") as client:
        return [u["unit_id"] for u in client.get("/units").json()["units"]]


def answer_survey(page, *, label: str, category: str, description: str) -> None:
    page.get_by_role("group", name=QUESTION_RECOGNIZABLE).get_by_label("Yes").check()
    page.get_by_role("group", name=QUESTION_CANCER).get_by_label("Yes").check()
    page.get_by_role("group", name=QUESTION_PHENOMENA).get_by_label("A single phenomenon").check()
    page.get_by_label("Describe each phenomenon").fill(description)
    page.get_by_label("BI-RADS lexicon category").select_option(category)
    page.get_by_label("Short label").fill(label)


def test_annotating_a_unit_shows_in_explain_and_in_the_viewer(
    page, service, sign_in, phantom_png: bytes, tmp_path: Path
) -> None:
    unit = top_unit(service, phantom_png)
    label = "Spiculated margin (web test)"

    # The survey, signed in through the header as the user would; the first load needed the token.
    page.goto(f"/ui/units/{unit}")
    expect(page.get_by_role("alert")).to_contain_text("needs a token")
    sign_in(page, service.tokens["dr_a"])
    expect(page.get_by_role("heading", name=f"Unit {unit}", exact=True)).to_be_visible()
    expect(page.locator("#progress")).to_have_text(re.compile(r"^\d+ of \d+ labelled"))

    # The top patches are masked images; focusing one shows its mammogram with the patch outlined.
    first_patch = page.locator("#patch-grid button").first
    expect(first_patch.locator("img")).to_have_attribute("src", re.compile("^blob:"))
    first_patch.focus()
    expect(page.locator("#context-figure")).to_be_visible()
    expect(page.locator("#context-svg rect")).to_have_count(1)
    expect(page.locator("#context-img")).to_have_attribute("alt", re.compile("patch is outlined"))

    answer_survey(page, label=label, category="Mass", description="Radiating lines at the edge of a mass.")
    page.get_by_label("Short label").press("Control+Enter")
    expect(page.get_by_role("status")).to_contain_text(f"“{label}” is version 1 of dr_a's label")
    expect(page.locator("#labels")).to_contain_text(label)
    expect(page.locator("#labels")).to_contain_text("dr_a (you)")

    with service.client("dr_a") as client:
        stored = client.get(f"/units/{unit}").json()["annotations"]
        mine = next(a for a in stored if a["annotator"] == "dr_a")
        assert (mine["label"], mine["category"], mine["cancer_association"]) == (label, "Mass", "yes")
        assert (mine["recognizable"], mine["phenomena"]) == (True, "single")
        explained = client.post("/explain", files={"file": ("phantom.png", phantom_png, "image/png")}).json()
    labels = {a["label"] for u in explained["units"] if u["unit_id"] == unit for a in u["annotations"]}
    assert label in labels

    # The viewer, in the same tab (the token is kept for the tab), shows the label on the unit.
    image = tmp_path / "phantom.png"
    image.write_bytes(phantom_png)
    page.get_by_role("link", name="Explain a mammogram").click()
    page.get_by_label("Mammogram (DICOM, PNG, JPEG or TIFF)").set_input_files(image)
    page.get_by_role("button", name="Explain", exact=True).click()
    card = page.locator(f'#units li[data-unit="{unit}"]')
    expect(card).to_contain_text(label)
    expect(card).to_contain_text("expert label")


def unlabelled_unit(service) -> int:
    """A ranked unit no expert has labelled yet (the last one, away from the units other tests label)."""
    with service.client("viewer") as client:
        units = client.get("/units").json()["units"]
    return next(u["unit_id"] for u in reversed(units) if not any(a["source"] == "expert" for a in u["annotations"]))


def test_a_conflict_shows_the_other_version_and_keeps_the_typed_text(page, service, use_token) -> None:
    unit = unlabelled_unit(service)
    use_token(page, service.tokens["dr_a"])
    page.goto(f"/ui/units/{unit}")
    expect(page.get_by_role("heading", name=f"Unit {unit}", exact=True)).to_be_visible()
    answer_survey(page, label="Mine (web test)", category="Calcification", description="My long description.")

    # Someone else labels the unit after the page read it.
    with service.client("dr_b") as client:
        client.put(
            f"/units/{unit}", json={"label": "Theirs (web test)", "category": "Mass", "cancer_association": "no"}
        ).raise_for_status()

    page.get_by_role("button", name=re.compile("^Save")).click()
    conflict = page.locator("#conflict")
    expect(conflict).to_be_visible()
    expect(conflict).to_contain_text("Theirs (web test)")
    expect(page.get_by_role("alert")).to_contain_text("412")
    expect(page.get_by_label("Short label")).to_have_value("Mine (web test)")
    expect(page.get_by_label("Describe each phenomenon")).to_have_value("My long description.")

    page.get_by_role("button", name="Save mine on top").click()
    expect(page.get_by_role("status")).to_contain_text("“Mine (web test)” is version 1 of dr_a's label")
    expect(conflict).to_be_hidden()
    with service.client("dr_a") as client:
        latest = {a["annotator"]: a["label"] for a in client.get(f"/units/{unit}").json()["annotations"]}
    assert latest["dr_a"] == "Mine (web test)"
    assert latest["dr_b"] == "Theirs (web test)"


def test_keyboard_moves_between_units_and_drafts_survive(page, service, use_token) -> None:
    units = ranked_units(service)
    use_token(page, service.tokens["dr_a"])
    page.goto(f"/ui/units/{units[2]}")
    expect(page.get_by_role("heading", name=f"Unit {units[2]}", exact=True)).to_be_visible()
    page.get_by_label("Short label").fill("Half-typed")

    # n/p act only outside text fields, so typing them is safe.
    page.get_by_label("Short label").press("n")
    expect(page.get_by_label("Short label")).to_have_value("Half-typedn")
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("n")
    expect(page).to_have_url(re.compile(rf"/ui/units/{units[3]}$"))
    expect(page.get_by_role("heading", name=f"Unit {units[3]}", exact=True)).to_be_visible()
    page.keyboard.press("p")
    expect(page).to_have_url(re.compile(rf"/ui/units/{units[2]}$"))
    expect(page.get_by_label("Short label")).to_have_value("Half-typedn")
    expect(page.locator("#draft-state")).to_contain_text("restored")

    # A missing answer is named and focused, and nothing is sent.
    page.get_by_label("Short label").press("Control+Enter")
    expect(page.get_by_role("alert")).to_contain_text("Choose a BI-RADS lexicon category")
    expect(page.get_by_label("BI-RADS lexicon category")).to_be_focused()


def test_the_survey_without_a_unit_opens_the_first_unlabelled_one(page, service, use_token) -> None:
    use_token(page, service.tokens["viewer"])
    page.goto("/ui/survey")
    expect(page).to_have_url(re.compile(r"/ui/units/\d+$"))
    expect(page.get_by_role("heading", name=re.compile(r"^Unit \d+$"))).to_be_visible()


def test_invalid_and_too_weak_tokens_are_explained(page, service, use_token, sign_in) -> None:
    unit = ranked_units(service)[4]
    use_token(page, "not-a-valid-token")
    page.goto(f"/ui/units/{unit}")
    expect(page.get_by_role("alert")).to_contain_text("Your token was refused (expired or invalid)")
    expect(page.get_by_label("Bearer token")).to_be_focused()

    # A reader may look but not label.
    sign_in(page, service.tokens["viewer"])
    expect(page.get_by_role("heading", name=f"Unit {unit}", exact=True)).to_be_visible()
    answer_survey(page, label="Not allowed", category="Other", description="")
    page.get_by_role("button", name=re.compile("^Save")).click()
    expect(page.get_by_role("alert")).to_contain_text("Your token may not do this")
    expect(page.get_by_label("Short label")).to_have_value("Not allowed")
    with httpx.Client(base_url=service.url, headers=service.auth("viewer")) as client:
        assert not [a for a in client.get(f"/units/{unit}").json()["annotations"] if a["label"] == "Not allowed"]


def test_a_unit_outside_the_ranked_set_shows_its_drawn_patches_and_can_be_labelled(page, service, use_token) -> None:
    ranked = set(ranked_units(service))
    with service.client("viewer") as client:
        num_units = len(client.get("/units/embedding").json()["units"])
        unit = next(k for k in range(num_units) if k not in ranked)
        patches = client.get(f"/units/{unit}/visualisation").json()["patches"]
    use_token(page, service.tokens["dr_a"])
    page.goto(f"/ui/units/{unit}")
    expect(page.locator("#unit-line")).to_have_text("Not among the ranked units of any class.")
    expect(page.locator("#patch-source")).to_contain_text(
        f"Unit {unit} is not among the {len(ranked)} ranked units: the model bundle lists its top hold-out patches"
    )
    expect(page.locator("#patch-grid button")).to_have_count(len(patches))
    expect(page.get_by_role("alert")).to_have_count(0)
    label = "Unranked unit label (web test)"
    answer_survey(page, label=label, category="Other", description="Seen through a region query.")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_contain_text(f"“{label}” is version 1 of dr_a's label for unit {unit}")
