"""The paper's explanation: up to five labelled units among the top eight, one sentence each.

First the rule on hand-made records (:func:`service.explanation.build_explanation`),
then through ``POST /explain`` on the tiny bundle with labels of every kind
written into the real store: an expert's under this bundle (the only kind that
counts by default), one made under another bundle, an answer "not recognisable",
and automatic labels with ``DEEPMINER_EXPLAIN_AUTOMATIC_LABELS`` off and on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient

from annotations import AnnotationRecord, NewAnnotation
from service.explanation import CONSIDERED_UNITS, MAX_NAMED_UNITS, build_explanation, unit_sentence

CURRENT = "c" * 64
OTHER = "0" * 64
_ids = iter(range(1, 10_000))


def record(
    unit_id: int,
    label: str = "Spiculated mass margin",
    *,
    annotator: str = "dr_a",
    category: str = "Mass",
    cancer_association: str = "yes",
    bundle_hash: str = CURRENT,
    source: str = "expert",
    recognizable: bool | None = True,
) -> AnnotationRecord:
    return AnnotationRecord(
        id=next(_ids), unit_id=unit_id, annotator=annotator, source=source, version=1, label=label,
        category=category, cancer_association=cancer_association, recognizable=recognizable, phenomena=None,
        description="", bundle_hash=bundle_hash, created_at=datetime(2024, 5, 1, tzinfo=timezone.utc),
    )


@dataclass(frozen=True)
class Ranked:
    unit_id: int
    rank: int
    influence: float
    max_activation: float
    weight: float
    annotations: tuple[AnnotationRecord, ...]


def ranking(labels: dict[int, list[AnnotationRecord]], n: int = 12) -> list[Ranked]:
    """``n`` units, unit ``100 + r`` at rank ``r``, influence falling from ``n``; labels by rank."""
    return [
        Ranked(unit_id=100 + r, rank=r, influence=float(n - r + 1), max_activation=2.0, weight=(n - r + 1) / 2.0,
               annotations=tuple(labels.get(r, [])))
        for r in range(1, n + 1)
    ]


# -- the rule -------------------------------------------------------------------------


def test_only_recognisable_labels_of_this_bundle_count_and_expert_ones_by_default() -> None:
    labels = {
        1: [record(101, annotator="dr_a"), record(101, "spiculated MASS margin", annotator="dr_b")],
        2: [record(102, "Old model's mass", bundle_hash=OTHER)],  # (b) another bundle
        3: [record(103, "", recognizable=False, category="Other", cancer_association="unsure")],  # (c)
        4: [record(104, "Round mass", annotator="auto:concept-iou", source="automatic")],  # (d)
        5: [record(105, "Vascular calcifications", category="Calcification", cancer_association="no")],
    }
    block = build_explanation(ranking(labels), bundle_hash=CURRENT)
    assert block.sources == ("expert",) and block.considered == CONSIDERED_UNITS == 8
    assert [u.unit_id for u in block.units] == [101, 105]
    first = block.units[0]
    assert (first.rank, first.experts, len(first.labels)) == (1, 2, 1)
    assert first.labels[0].annotators == 2 and first.labels[0].label == "Spiculated mass margin"
    assert first.text == (
        "Unit 101 (influence 12, rank 1): 'Spiculated mass margin' — Mass; associated with cancer (2 of 2 experts)"
    )
    assert block.units[1].text == (
        "Unit 105 (influence 8, rank 5): 'Vascular calcifications' — Calcification; not associated with cancer "
        "(1 of 1 expert)"
    )

    widened = build_explanation(ranking(labels), bundle_hash=CURRENT, include_automatic=True)
    assert widened.sources == ("expert", "automatic")
    assert [u.unit_id for u in widened.units] == [101, 104, 105]
    automatic = widened.units[1]
    assert automatic.experts == 0 and automatic.labels[0].automatic
    assert automatic.text == (
        "Unit 104 (influence 9, rank 4): 'Round mass' — Mass; associated with cancer (automatic label)"
    )


def test_at_most_five_units_all_among_the_top_eight_in_order_of_influence() -> None:
    labels = {r: [record(100 + r, f"label {r}")] for r in (2, 3, 5, 6, 7, 8, 9, 10)}
    block = build_explanation(ranking(labels), bundle_hash=CURRENT)
    assert len(block.units) == MAX_NAMED_UNITS == 5
    assert [u.rank for u in block.units] == [2, 3, 5, 6, 7]
    influences = [u.influence for u in block.units]
    assert influences == sorted(influences, reverse=True)

    beyond = {r: [record(100 + r, f"label {r}")] for r in (9, 10, 11)}
    assert build_explanation(ranking(beyond), bundle_hash=CURRENT).units == ()
    # A layer smaller than eight units: all of it is considered.
    small = build_explanation(ranking({2: [record(102)]}, n=3), bundle_hash=CURRENT)
    assert small.considered == 3 and [u.unit_id for u in small.units] == [102]


def test_expert_labels_come_before_automatic_ones_and_differing_labels_are_kept_apart() -> None:
    labels = {
        1: [
            record(101, "Round mass", annotator="auto:concept-iou", source="automatic"),
            record(101, "Mass edge", annotator="dr_a"),
            record(101, "Mass edge", annotator="dr_b", cancer_association="unsure"),
        ]
    }
    (unit,) = build_explanation(ranking(labels), bundle_hash=CURRENT, include_automatic=True).units
    assert [(lab.label, lab.cancer_association, lab.automatic) for lab in unit.labels] == [
        ("Mass edge", "yes", False), ("Mass edge", "unsure", False), ("Round mass", "yes", True),
    ]
    assert unit.text == (
        "Unit 101 (influence 12, rank 1): 'Mass edge' — Mass; associated with cancer (1 of 2 experts) / "
        "'Mass edge' — Mass; association with cancer unsure (1 of 2 experts) / "
        "'Round mass' — Mass; associated with cancer (automatic label)"
    )


def test_refuses_units_out_of_rank_order_and_sentences_without_labels() -> None:
    shuffled = list(reversed(ranking({})))
    with pytest.raises(ValueError, match=r"increasing rank order; got ranks \[12, 11"):
        build_explanation(shuffled, bundle_hash=CURRENT)
    with pytest.raises(ValueError, match="unit 7 got none"):
        unit_sentence(7, 1, 1.0, [], experts=0)


# -- through /explain on the tiny bundle ------------------------------------------------


def explain(client: TestClient, png: bytes, **params: Any) -> dict[str, Any]:
    response = client.post("/explain", files={"file": ("m.png", png, "image/png")}, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def put(client: TestClient, unit_id: int, **body: Any) -> None:
    response = client.put(f"/units/{unit_id}", json={"category": "Mass", "cancer_association": "yes", **body})
    assert response.status_code == 201, response.text


def write_labels(client: TestClient, top: list[int]) -> None:
    """Labels on the explained class's top units (by rank r = index + 1), of every kind."""
    state: Any = client.app.state  # type: ignore[attr-defined]
    current = state.bundle.hash
    put(client, top[0], annotator="dr_a", label="Spiculated mass margin")  # (a)
    put(client, top[0], annotator="dr_b", label="Spiculated mass margin")
    state.store.add_many([  # (b) the same unit id under another bundle
        NewAnnotation(unit_id=top[1], annotator="dr_a", label="Other model's mass", category="Mass", bundle_hash=OTHER)
    ])
    put(client, top[2], annotator="dr_a", label="Calcification cluster", category="Calcification")
    put(client, top[2], annotator="dr_a", label="", recognizable=False)  # (c) the latest answer: not recognisable
    state.store.add_many([  # (d)
        NewAnnotation(unit_id=top[3], annotator="auto:test", label="Round mass", category="Mass",
                      cancer_association="yes", bundle_hash=current, source="automatic")
    ])
    for r in (5, 6, 7, 8, 9):  # four more expert-labelled units in the top eight, and the ninth
        put(client, top[r - 1], annotator="dr_c", label=f"Finding {r}", cancer_association="no")


@pytest.mark.parametrize("automatic", [False, True], ids=["expert-only", "automatic-admitted"])
def test_explain_names_labelled_units_among_the_top_eight(
    make_client: Any, database_url: str, phantom_png: bytes, automatic: bool
) -> None:
    with make_client(
        database_url=database_url, seed_automatic_labels=False, explain_automatic_labels=automatic
    ) as client:
        before = explain(client, phantom_png, top_k=12)
        top = [u["unit_id"] for u in before["units"]]
        assert before["explanation"]["units"] == []
        write_labels(client, top)
        body = explain(client, phantom_png, top_k=3)  # fewer than eight returned: the top eight still count

    block = body["explanation"]
    assert len(body["units"]) == 3
    assert block["considered"] == 8 and block["max_units"] == 5
    assert block["sources"] == (["expert", "automatic"] if automatic else ["expert"])
    expected_ranks = [1, 4, 5, 6, 7] if automatic else [1, 5, 6, 7, 8]
    assert [u["rank"] for u in block["units"]] == expected_ranks
    assert [u["unit_id"] for u in block["units"]] == [top[r - 1] for r in expected_ranks]
    influence = {u["unit_id"]: u["influence"] for u in before["units"]}
    for unit in block["units"]:
        assert unit["influence"] == pytest.approx(influence[unit["unit_id"]], rel=1e-6)
    first = block["units"][0]
    assert first["labels"] == [
        {"label": "Spiculated mass margin", "category": "Mass", "cancer_association": "yes", "annotators": 2,
         "automatic": False}
    ]
    assert first["text"] == (
        f"Unit {top[0]} (influence {first['influence']:.3g}, rank 1): 'Spiculated mass margin' — Mass; "
        "associated with cancer (2 of 2 experts)"
    )
    named = " ".join(u["text"] for u in block["units"])
    assert "Other model's mass" not in named and "Calcification cluster" not in named
    if automatic:
        assert block["units"][1]["labels"][0]["automatic"] is True
        assert block["units"][1]["text"].endswith("'Round mass' — Mass; associated with cancer (automatic label)")
    else:
        assert "Round mass" not in named and not any(lab["automatic"] for u in block["units"] for lab in u["labels"])
    # The raw top-k still shows what was found, flagged: another bundle's label is there, but not current.
    assert [a["current_bundle"] for a in body["units"][1]["annotations"]] == [False]
    assert body["units"][2]["annotations"] == []


def test_the_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.settings import Settings

    assert Settings().explain_automatic_labels is False
    monkeypatch.setenv("DEEPMINER_EXPLAIN_AUTOMATIC_LABELS", "true")
    assert Settings().explain_automatic_labels is True
