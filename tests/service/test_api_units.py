"""/units: rankings from the bundle, labels from the store (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from annotations import AnnotationStore
from deepminer.bundle import load_bundle

EXPERT = {"annotator": "dr-a", "label": "Spiculated mass margin", "category": "Mass", "cancer_association": "yes"}


def rankings(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "rankings.json").read_text())


def assert_error(response: Any, status: int, code: str, field: str | None) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["field"] == field


def test_list_units_reports_the_bundle_ranking(client: TestClient, tiny_bundle: Path) -> None:
    body = client.get("/units").json()
    ranking = rankings(tiny_bundle)
    bundle = load_bundle(tiny_bundle)
    assert body["bundle_hash"] == bundle.hash and body["model_id"] == bundle.id
    assert body["classes"] == bundle.classes and body["num_units"] == bundle.num_units
    assert body["top_per_image"] == ranking["top_per_image"] and body["num_images"] == ranking["num_images"]
    expected: dict[int, dict[str, dict[str, Any]]] = {}
    for name, entry in ranking["per_class"].items():
        assert body["coverage"][name]["coverage"] == pytest.approx(entry["coverage"])
        assert body["coverage"][name]["slots_total"] == entry["slots_total"]
        for unit in entry["units"]:
            expected.setdefault(unit["unit_id"], {})[name] = unit
    assert sorted(u["unit_id"] for u in body["units"]) == sorted(expected)
    for unit in body["units"]:
        by_class = expected[unit["unit_id"]]
        assert unit["ranks"] == {c: e["rank"] for c, e in by_class.items()}
        assert unit["counts"] == {c: e["count"] for c, e in by_class.items()}
        assert unit["threshold"] == pytest.approx(ranking["unit_thresholds"][unit["unit_id"]])
    best = [min(u["ranks"].values()) for u in body["units"]]
    assert best == sorted(best)


def test_one_unit_ranked_or_not(client: TestClient, tiny_bundle: Path) -> None:
    ranking = rankings(tiny_bundle)
    num_units = load_bundle(tiny_bundle).num_units
    ranked = {u["unit_id"] for entry in ranking["per_class"].values() for u in entry["units"]}
    unranked = next(k for k in range(num_units) if k not in ranked)
    body = client.get(f"/units/{unranked}").json()
    assert body == {
        "unit_id": unranked,
        "threshold": pytest.approx(ranking["unit_thresholds"][unranked]),
        "ranks": {},
        "counts": {},
        "mean_influence": {},
        "annotations": [],
    }
    top = next(iter(ranking["per_class"].values()))["units"][0]
    assert client.get(f"/units/{top['unit_id']}").json()["counts"] != {}
    assert client.get(f"/units/{num_units - 1}").status_code == 200


@pytest.mark.parametrize("unit_id", ["-1", "K", "100000"])
def test_unknown_unit_is_404_with_the_valid_range(client: TestClient, tiny_bundle: Path, unit_id: str) -> None:
    num_units = load_bundle(tiny_bundle).num_units
    unit_id = str(num_units) if unit_id == "K" else unit_id
    for response in (
        client.get(f"/units/{unit_id}"),
        client.get(f"/units/{unit_id}/history"),
        client.put(f"/units/{unit_id}", json=EXPERT),
    ):
        assert_error(response, 404, "unknown_unit", "unit_id")
        assert f"0 to {num_units - 1}" in response.json()["error"]["message"]


def test_non_integer_unit_id_names_the_field(client: TestClient) -> None:
    assert_error(client.get("/units/seven"), 422, "validation_error", "unit_id")
    assert_error(client.get("/units/1.5"), 422, "validation_error", "unit_id")


def test_annotations_are_versioned_and_listed(
    make_client: Callable[..., Any], database_url: str, tiny_bundle: Path
) -> None:
    bundle_hash = load_bundle(tiny_bundle).hash
    with make_client(database_url=database_url) as client:
        first = client.put("/units/7", json=EXPERT)
        assert first.status_code == 201, first.text
        record = first.json()
        assert record["version"] == 1 and record["unit_id"] == 7 and record["source"] == "expert"
        assert record["bundle_hash"] == bundle_hash and record["label"] == EXPERT["label"]

        second = client.put(
            "/units/7",
            json={
                **EXPERT,
                "label": "Circumscribed mass",
                "recognizable": True,
                "phenomena": "single",
                "description": "smooth edge",
            },
        ).json()
        assert second["version"] == 2 and second["recognizable"] is True and second["phenomena"] == "single"
        other = client.put("/units/7", json={**EXPERT, "annotator": "dr-b", "cancer_association": "unsure"}).json()
        assert other["version"] == 1

        unit = client.get("/units/7").json()
        assert [(a["annotator"], a["version"], a["label"]) for a in unit["annotations"]] == [
            ("dr-a", 2, "Circumscribed mass"),
            ("dr-b", 1, EXPERT["label"]),
        ]
        history = client.get("/units/7/history").json()
        assert history["unit_id"] == 7
        assert [(v["annotator"], v["version"]) for v in history["versions"]] == [("dr-a", 1), ("dr-a", 2), ("dr-b", 1)]
        assert client.get("/units/8/history").json() == {"unit_id": 8, "versions": []}


def test_labels_of_another_bundle_are_shown_flagged(make_client: Callable[..., Any], database_url: str) -> None:
    store = AnnotationStore(database_url)
    store.init_schema()
    store.add(unit_id=3, annotator="dr-old", label="Old model's unit 3", category="Other", bundle_hash="ab" * 32)
    store.close()
    with make_client(database_url=database_url) as client:
        shown = client.get("/units/3").json()["annotations"]
        assert [(a["annotator"], a["current_bundle"]) for a in shown] == [("dr-old", False)]
        assert [v["annotator"] for v in client.get("/units/3/history").json()["versions"]] == ["dr-old"]


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({k: v for k, v in EXPERT.items() if k != "label"}, "invalid_annotation", "label"),
        ({**EXPERT, "label": ""}, "invalid_annotation", "label"),
        ({**EXPERT, "label": "", "recognizable": True}, "invalid_annotation", "label"),
        ({**EXPERT, "label": "   "}, "invalid_annotation", "label"),
        ({**EXPERT, "annotator": " "}, "invalid_annotation", "annotator"),
        ({**EXPERT, "category": "Tumour"}, "validation_error", "category"),
        ({**EXPERT, "cancer_association": "maybe"}, "validation_error", "cancer_association"),
        ({**EXPERT, "recognizable": "yes"}, "validation_error", "recognizable"),
        ({**EXPERT, "recognizable": 1}, "validation_error", "recognizable"),
        ({**EXPERT, "phenomena": "many"}, "validation_error", "phenomena"),
        ({**EXPERT, "label": "x" * 121}, "validation_error", "label"),
        ({**EXPERT, "unit_id": 9}, "validation_error", "unit_id"),
        ({**EXPERT, "bundle_hash": "ab" * 32}, "validation_error", "bundle_hash"),
        ([EXPERT], "validation_error", "body"),
    ],
)
def test_malformed_annotation_names_the_field(
    make_client: Callable[..., Any], database_url: str, body: Any, code: str, field: str
) -> None:
    with make_client(database_url=database_url) as client:
        assert_error(client.put("/units/5", json=body), 422, code, field)
        assert client.get("/units/5/history").json()["versions"] == []
        assert client.put("/units/5", json=EXPERT).status_code == 201


def test_body_that_is_not_json(client: TestClient) -> None:
    response = client.put("/units/5", content=b"{label: oops", headers={"Content-Type": "application/json"})
    assert_error(response, 422, "validation_error", "body")


def test_label_of_a_top_unit_appears_in_explain(
    make_client: Callable[..., Any], database_url: str, phantom_png: bytes
) -> None:
    files = {"file": ("mammogram.png", phantom_png, "image/png")}
    with make_client(database_url=database_url) as client:
        units = client.post("/explain", files=files).json()["units"]
        target = units[1]["unit_id"]
        assert all(u["annotations"] == [] for u in units if u["unit_id"] == target)
        client.put(f"/units/{target}", json=EXPERT)
        client.put(f"/units/{target}", json={**EXPERT, "label": "Edge of a circumscribed mass"})

        explained = {u["unit_id"]: u for u in client.post("/explain", files=files).json()["units"]}
        labels = explained[target]["annotations"]
        assert [(a["annotator"], a["version"], a["label"]) for a in labels] == [
            ("dr-a", 2, "Edge of a circumscribed mass")
        ]
        assert all(u["annotations"] == [] for k, u in explained.items() if k != target)


def test_not_recognisable_needs_no_label_and_never_names_an_image(
    make_client: Callable[..., Any], database_url: str, phantom_png: bytes
) -> None:
    files = {"file": ("mammogram.png", phantom_png, "image/png")}
    nothing = {"annotator": "dr-b", "recognizable": False, "category": "Other", "cancer_association": "unsure"}
    with make_client(database_url=database_url) as client:
        target = client.post("/explain", files=files).json()["units"][0]["unit_id"]
        saved = client.put(f"/units/{target}", json=nothing)
        assert saved.status_code == 201, saved.text
        assert saved.json()["label"] == "" and saved.json()["recognizable"] is False
        client.put(f"/units/{target}", json={**EXPERT, "recognizable": True})

        # the survey and /units show both answers ...
        shown = client.get(f"/units/{target}").json()["annotations"]
        assert sorted((a["annotator"], a["label"]) for a in shown) == [("dr-a", EXPERT["label"]), ("dr-b", "")]
        # ... but only the named one explains the image
        explained = {u["unit_id"]: u for u in client.post("/explain", files=files).json()["units"]}
        assert [(a["annotator"], a["label"]) for a in explained[target]["annotations"]] == [("dr-a", EXPERT["label"])]
        # and an annotator whose latest answer is "not recognisable" names nothing any more
        client.put(f"/units/{target}", json={**nothing, "annotator": "dr-a"})
        explained = {u["unit_id"]: u for u in client.post("/explain", files=files).json()["units"]}
        assert explained[target]["annotations"] == []


def test_label_vocabulary_lists_each_label_with_its_category_and_units(
    make_client: Callable[..., Any], database_url: str
) -> None:
    with make_client(database_url=database_url) as client:
        before = {(t["label"], t["category"]) for t in client.get("/units/labels").json()["labels"]}
        for unit_id, annotator in ((3, "dr-a"), (4, "dr-b")):
            assert client.put(f"/units/{unit_id}", json={**EXPERT, "annotator": annotator}).status_code == 201
        unsure = {"annotator": "dr-c", "recognizable": False, "category": "Other", "cancer_association": "unsure"}
        assert client.put("/units/5", json=unsure).status_code == 201
        terms = client.get("/units/labels").json()["labels"]
    term = next(t for t in terms if t["label"] == EXPERT["label"])
    assert term == {"label": EXPERT["label"], "category": "Mass", "unit_ids": [3, 4], "current_bundle": True}
    # A "not recognisable" answer names nothing to reuse; nothing else was added.
    assert {(t["label"], t["category"]) for t in terms} == before | {(EXPERT["label"], "Mass")}
