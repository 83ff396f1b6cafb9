"""Hostile text in label writes: a named 422 or a 201 that reads back as stored, never a 5xx, on SQLite and PostgreSQL.

The property tests send arbitrary Unicode (control characters, lone surrogates,
combining marks, text beyond the limits) as JSON escapes, as any client may.
"""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from service.auth import Principal, TokenSpec, annotator_for, hash_token
from service.main import create_app
from service.settings import Settings

LABEL = {"annotator": "dr_a", "label": "Spiculated mass margin", "category": "Mass", "cancer_association": "yes"}
TEXT_FIELDS = ("annotator", "label", "description")
# Tab and newline are the only C0 control characters a label may hold.
REFUSED = {chr(c) for c in range(0x20)} - {"\t", "\n"}

# Text a person might type in any script (combining marks, CR LF, tabs, emoji, right-to-left marks), or text
# of any code point whatever (control characters and lone surrogates made common): each half the time.
TYPED = st.lists(
    st.one_of(st.characters(exclude_categories=("Cc", "Cs")), st.sampled_from(["\r\n", "\n", "\t", "\u0301", " "])),
    max_size=130,
).map("".join)
ANYTHING = st.text(
    st.one_of(st.characters(exclude_categories=()), st.sampled_from(["\x00", "\r", "\x1b", "\ud800", "\udfff"])),
    max_size=130,
)
ANY_TEXT = st.one_of(TYPED, ANYTHING)
ITEM = st.fixed_dictionaries(
    {"unit_id": st.integers(0, 511), "annotator": ANY_TEXT, "label": ANY_TEXT, "description": ANY_TEXT}
)
# A batch is stored only when all of its items are valid, which a batch of ITEMs seldom is (each of its up to nine
# texts is arbitrary half the time). Half the batches are typed text only, so both answers stay common whatever
# examples Hypothesis's release draws.
BATCH = st.one_of(
    st.lists(st.fixed_dictionaries({"unit_id": st.integers(0, 511), **{f: TYPED for f in TEXT_FIELDS}}),
             min_size=1, max_size=3),
    st.lists(ITEM, min_size=1, max_size=3),
)
PROPERTY_SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)


def send(client: TestClient, method: str, url: str, body: Any) -> Any:
    """``body`` as ASCII JSON: lone surrogates travel as ``\\udXXX`` escapes, as a client may send them."""
    return client.request(method, url, content=json.dumps(body), headers={"content-type": "application/json"})


def as_stored(value: str) -> str:
    return unicodedata.normalize("NFC", value.replace("\r\n", "\n")).strip()


def check_answer(client: TestClient, response: Any, items: list[dict[str, Any]], before: dict[int, int]) -> int:
    """A 201 stored exactly the normalised text and reads back the same; a 422 names a field and stored nothing."""
    assert response.status_code in (201, 422), response.text
    if response.status_code == 422:
        error = response.json()["error"]
        assert error["code"] in ("validation_error", "invalid_annotation") and error["field"], error
        for unit_id, count in before.items():
            assert len(client.get(f"/units/{unit_id}/history").json()["versions"]) == count
        return 422
    answered = response.json()
    stored = answered.get("annotations", [answered])
    assert len(stored) == len(items)
    history = {
        v["id"]: v for unit_id in before for v in client.get(f"/units/{unit_id}/history").json()["versions"]
    }
    for item, record in zip(items, stored, strict=True):
        assert history[record["id"]] == record  # reads back identically
        for field in TEXT_FIELDS:
            assert record[field] == as_stored(item[field])
            assert unicodedata.is_normalized("NFC", record[field]) and not REFUSED & set(record[field])
    return 201


def test_arbitrary_text_to_put_units(make_client: Callable[..., Any], database_url: str) -> None:
    answers: Counter[int] = Counter()
    with make_client(database_url=database_url) as client:

        @PROPERTY_SETTINGS
        @given(item=ITEM)
        def put(item: dict[str, Any]) -> None:
            unit_id = item["unit_id"]
            before = {unit_id: len(client.get(f"/units/{unit_id}/history").json()["versions"])}
            body = {**LABEL, **{field: item[field] for field in TEXT_FIELDS}}
            answers[check_answer(client, send(client, "PUT", f"/units/{unit_id}", body), [item], before)] += 1

        put()
    assert answers[201] >= 5 and answers[422] >= 5, answers  # both sides of the property were exercised


def test_arbitrary_text_to_post_units_batch(make_client: Callable[..., Any], database_url: str) -> None:
    answers: Counter[int] = Counter()
    with make_client(database_url=database_url) as client:

        @PROPERTY_SETTINGS
        @given(items=BATCH)
        def post(items: list[dict[str, Any]]) -> None:
            before = {i["unit_id"]: len(client.get(f"/units/{i['unit_id']}/history").json()["versions"]) for i in items}
            body = {"annotations": [{**LABEL, **item} for item in items]}
            answers[check_answer(client, send(client, "POST", "/units/batch", body), items, before)] += 1

        post()
    assert answers[201] >= 5 and answers[422] >= 5, answers


# -- the named refusals ---------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"), [("label", "Mass\x00"), ("description", "a\x07b"), ("annotator", "dr\x1ba")]
)
def test_put_with_a_control_character_is_422_naming_the_field(
    make_client: Callable[..., Any], database_url: str, field: str, value: str
) -> None:
    with make_client(database_url=database_url) as client:
        response = client.put("/units/3", json={**LABEL, field: value})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "invalid_annotation"
        assert response.json()["error"]["field"] == field
        assert "of the control characters only tab and newline are allowed" in response.json()["error"]["message"]
        assert client.get("/units/3/history").json()["versions"] == []


def test_batch_with_nul_is_422_naming_the_item_and_stores_nothing(
    make_client: Callable[..., Any], database_url: str
) -> None:
    items = [{**LABEL, "unit_id": 5}, {**LABEL, "unit_id": 6, "description": "one\x00two"}]
    with make_client(database_url=database_url) as client:
        response = client.post("/units/batch", json={"annotations": items})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == "annotations.1.description"
        assert client.get("/units/5/history").json()["versions"] == []


def test_the_length_limit_counts_characters_after_nfc(make_client: Callable[..., Any]) -> None:
    with make_client() as client:
        decomposed = client.put("/units/8", json={**LABEL, "label": "e\u0301" * 120})  # 240 code points, 120 é
        assert decomposed.status_code == 201, decomposed.text
        assert decomposed.json()["label"] == "\u00e9" * 120
        too_long = client.put("/units/8", json={**LABEL, "label": "\u00e9" * 121})
        assert too_long.status_code == 422 and too_long.json()["error"]["field"] == "label"


def test_token_names_are_checked_and_compared_as_stored() -> None:
    spec = {"role": "annotator", "sha256": hash_token("annotator-token-0123456789abcdef")}
    assert TokenSpec(name="Dr A\u030asen", **spec).name == "Dr \u00c5sen"
    with pytest.raises(ValidationError, match="U\\+0000 at character 3"):
        TokenSpec(name="dr\x00a", **spec)
    expert = Principal(name="Dr \u00c5sen", role="annotator")
    assert annotator_for(expert, "Dr A\u030asen") == "Dr A\u030asen"  # the same name, spelled decomposed


def test_a_value_postgresql_refuses_is_422_not_500(
    tiny_bundle: Path, tmp_path: Path, postgres_admin: tuple[str, Any]
) -> None:
    """A value that passes the store's checks but not the database (psycopg's DataError) is still a named 422."""
    base_url, _ = postgres_admin
    app = create_app(Settings(bundle=tiny_bundle, database_url=f"sqlite:///{tmp_path / 'labels.db'}"))
    engine = create_engine(make_url(base_url).set(drivername="postgresql+psycopg"))

    @app.get("/test-only/store-refuses", tags=["test"])
    def store_refuses() -> None:
        with engine.connect() as conn:  # psycopg refuses NUL in text before it reaches the server
            conn.execute(text("SELECT :value"), {"value": "Mass\x00"})

    try:
        with TestClient(app) as client:
            response = client.get("/test-only/store-refuses")
    finally:
        engine.dispose()
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_annotation"
    assert "cannot contain NUL" in response.json()["error"]["message"]
