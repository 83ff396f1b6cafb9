"""Batch labelling (all or nothing) and bundle binding (other bundles' labels flagged), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from annotations import AnnotationStore
from deepminer.bundle import load_bundle

LABEL = {"annotator": "dr-a", "label": "Fine pleomorphic calcifications", "category": "Calcification"}
OLD_BUNDLE = "ab" * 32


def assert_error(response: Any, status: int, code: str, field: str | None) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["field"] == field


def test_batch_labels_a_group_of_units_at_once(make_client: Callable[..., Any], database_url: str) -> None:
    items = [{**LABEL, "unit_id": u, "cancer_association": "yes"} for u in (30, 31, 32)]
    items.append({**LABEL, "unit_id": 30, "cancer_association": "yes", "label": "Pleomorphic calcifications"})
    with make_client(database_url=database_url) as client:
        response = client.post("/units/batch", json={"annotations": items})
        assert response.status_code == 201, response.text
        stored = response.json()["annotations"]
        assert [(a["unit_id"], a["version"], a["label"]) for a in stored] == [
            (30, 1, LABEL["label"]),
            (31, 1, LABEL["label"]),
            (32, 1, LABEL["label"]),
            (30, 2, "Pleomorphic calcifications"),
        ]
        assert len({a["created_at"] for a in stored}) == 1 and all(a["current_bundle"] for a in stored)
        assert [a["label"] for a in client.get("/units/30").json()["annotations"]] == ["Pleomorphic calcifications"]
        assert [v["version"] for v in client.get("/units/30/history").json()["versions"]] == [1, 2]


@pytest.mark.parametrize(
    ("bad", "code", "field"),
    [
        ({"label": "   "}, "invalid_annotation", "annotations.2.label"),
        ({"label": ""}, "invalid_annotation", "annotations.2.label"),
        ({"label": "", "recognizable": True}, "invalid_annotation", "annotations.2.label"),
        ({"category": "Tumour"}, "validation_error", "annotations.2.category"),
        ({"unit_id": 99999}, "invalid_parameter", "annotations.2.unit_id"),
        ({"unit_id": -1}, "invalid_parameter", "annotations.2.unit_id"),
        ({"unit_id": "7"}, "validation_error", "annotations.2.unit_id"),
        ({"bundle_hash": OLD_BUNDLE}, "validation_error", "annotations.2.bundle_hash"),
        ({"annotator": None}, "invalid_annotation", "annotations.2.annotator"),
    ],
)
def test_a_bad_item_stores_nothing_and_is_named(
    make_client: Callable[..., Any], database_url: str, bad: dict[str, Any], code: str, field: str
) -> None:
    items = [{**LABEL, "unit_id": u, "cancer_association": "no"} for u in (40, 41, 42)]
    items[2].update(bad)
    if bad.get("annotator", "") is None:
        del items[2]["annotator"]
    with make_client(database_url=database_url) as client:
        assert_error(client.post("/units/batch", json={"annotations": items}), 422, code, field)
        for unit_id in (40, 41):
            assert client.get(f"/units/{unit_id}/history").json()["versions"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"annotations": []}, "annotations"),
        ({}, "annotations"),
        ([LABEL], "body"),
        ({"annotations": [], "x": 1}, "annotations"),
    ],
)
def test_malformed_batch_bodies(make_client: Callable[..., Any], body: Any, field: str) -> None:
    with make_client() as client:
        assert_error(client.post("/units/batch", json=body), 422, "validation_error", field)


def test_other_bundle_labels_are_flagged_not_hidden(
    make_client: Callable[..., Any], database_url: str, tiny_bundle: Path, phantom_png: bytes
) -> None:
    current = load_bundle(tiny_bundle).hash
    with make_client(database_url=database_url) as client:
        files = {"file": ("mammogram.png", phantom_png, "image/png")}
        top = client.post("/explain", files=files).json()["units"][0]["unit_id"]
        ranked = client.get("/units").json()["units"][0]["unit_id"]
        store = AnnotationStore(database_url)
        for unit_id in {top, ranked}:
            store.add(unit_id=unit_id, annotator="dr-old", label="Old unit", category="Other", bundle_hash=OLD_BUNDLE)
            client.put(f"/units/{unit_id}", json={**LABEL, "cancer_association": "unsure"})
        store.close()

        def flags(annotations: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
            return [(a["annotator"], a["bundle_hash"], a["current_bundle"]) for a in annotations]

        expected = [("dr-old", OLD_BUNDLE, False), ("dr-a", current, True)]
        assert flags(client.get(f"/units/{top}").json()["annotations"]) == expected
        assert flags(client.get(f"/units/{top}/history").json()["versions"]) == expected
        explained = {u["unit_id"]: u for u in client.post("/explain", files=files).json()["units"]}
        assert flags(explained[top]["annotations"]) == expected
        listed = {u["unit_id"]: u for u in client.get("/units").json()["units"]}
        assert flags(listed[ranked]["annotations"]) == expected
        embedded = client.get("/units/embedding").json()["units"][top]
        assert flags(embedded["annotations"]) == expected
