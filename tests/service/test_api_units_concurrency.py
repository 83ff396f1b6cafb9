"""Optimistic concurrency on /units/{id} (ETag, If-Match) and many writers to one unit (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi.testclient import TestClient

from annotations import AnnotationStore

LABEL = {"annotator": "dr-a", "label": "Spiculated mass margin", "category": "Mass", "cancer_association": "yes"}
WRITERS = 8
WRITES_EACH = 10


def assert_error(response: Any, status: int, code: str, field: str | None) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["field"] == field


def versions(client: TestClient, unit_id: int) -> list[dict[str, Any]]:
    return client.get(f"/units/{unit_id}/history").json()["versions"]  # type: ignore[no-any-return]


def test_etag_follows_every_write_and_if_match_guards_it(make_client: Callable[..., Any], database_url: str) -> None:
    with make_client(database_url=database_url) as client:
        first = client.get("/units/11")
        etag = first.headers["etag"]
        assert etag.startswith('"') and etag.endswith('"')
        assert client.get("/units/11").headers["etag"] == etag  # stable while nothing changes
        assert client.get("/units/12").headers["etag"] != etag  # tags are per unit

        written = client.put("/units/11", json=LABEL, headers={"If-Match": etag})
        assert written.status_code == 201, written.text
        new_etag = written.headers["etag"]
        assert new_etag != etag and client.get("/units/11").headers["etag"] == new_etag

        stale = client.put("/units/11", json={**LABEL, "label": "Lost update"}, headers={"If-Match": etag})
        assert_error(stale, 412, "precondition_failed", "If-Match")
        assert new_etag in stale.json()["error"]["message"]
        assert [v["label"] for v in versions(client, 11)] == [LABEL["label"]]

        # Another annotator's label changes the unit too.
        other = client.put("/units/11", json={**LABEL, "annotator": "dr-b"}, headers={"If-Match": new_etag})
        assert other.status_code == 201
        assert_error(
            client.put("/units/11", json=LABEL, headers={"If-Match": new_etag}), 412, "precondition_failed", "If-Match"
        )

        current = client.get("/units/11").headers["etag"]
        assert current == other.headers["etag"]
        for header in (f'"nope", {current}', "*"):
            assert client.put("/units/11", json=LABEL, headers={"If-Match": header}).status_code == 201
        weak = "W/" + client.get("/units/11").headers["etag"]
        assert_error(
            client.put("/units/11", json=LABEL, headers={"If-Match": weak}), 412, "precondition_failed", "If-Match"
        )

        # Without If-Match the write is allowed (require_if_match is off by default).
        assert client.put("/units/11", json=LABEL).status_code == 201
        assert [(v["annotator"], v["version"]) for v in versions(client, 11)] == [
            ("dr-a", 1),
            ("dr-b", 1),
            ("dr-a", 2),
            ("dr-a", 3),
            ("dr-a", 4),
        ]


def test_etag_changes_when_another_bundle_labels_the_unit(make_client: Callable[..., Any], database_url: str) -> None:
    with make_client(database_url=database_url) as client:
        etag = client.get("/units/13").headers["etag"]
        store = AnnotationStore(database_url)
        store.add(unit_id=13, annotator="dr-old", label="Old unit 13", category="Other", bundle_hash="ab" * 32)
        store.close()
        assert client.get("/units/13").headers["etag"] != etag
        assert_error(
            client.put("/units/13", json=LABEL, headers={"If-Match": etag}), 412, "precondition_failed", "If-Match"
        )


def test_require_if_match_refuses_blind_writes(make_client: Callable[..., Any]) -> None:
    with make_client(require_if_match=True) as client:
        assert_error(client.put("/units/14", json=LABEL), 428, "precondition_required", "If-Match")
        assert_error(client.put("/units/99999", json=LABEL), 404, "unknown_unit", "unit_id")
        etag = client.get("/units/14").headers["etag"]
        assert client.put("/units/14", json=LABEL, headers={"If-Match": etag}).status_code == 201
        assert client.post("/units/batch", json={"annotations": [{**LABEL, "unit_id": 15}]}).status_code == 201


def test_many_writers_to_one_unit_lose_no_acknowledged_write(
    make_client: Callable[..., Any], database_url: str
) -> None:
    """8 writers x 10 writes of the same annotator's label to one unit: every 201 is in history, versions 1..80."""
    with make_client(database_url=database_url) as client:
        start = threading.Barrier(WRITERS)

        def writer(index: int) -> list[dict[str, Any]]:
            start.wait()
            acknowledged = []
            for n in range(WRITES_EACH):
                response = client.put("/units/21", json={**LABEL, "label": f"writer {index} write {n}"})
                assert response.status_code == 201, response.text
                acknowledged.append(response.json())
            return acknowledged

        with ThreadPoolExecutor(WRITERS) as pool:
            acknowledged = [record for batch in pool.map(writer, range(WRITERS)) for record in batch]

        history = versions(client, 21)
        total = WRITERS * WRITES_EACH
        assert len(acknowledged) == total
        assert sorted(v["version"] for v in history) == list(range(1, total + 1))
        by_id = {v["id"]: v for v in history}
        for record in acknowledged:  # each acknowledged write is stored exactly as it was acknowledged
            assert by_id[record["id"]] == record
        assert len({r["version"] for r in acknowledged}) == total
        assert [v["id"] for v in history] == sorted(by_id)  # history in write order, oldest first
        assert all(v["current_bundle"] for v in history)


def test_racing_conditional_writers_one_wins_per_etag(make_client: Callable[..., Any], database_url: str) -> None:
    """Writers that read the same ETag and write at once: exactly one 201, the rest 412 with nothing stored."""
    with make_client(database_url=database_url) as client:
        for round_ in range(3):
            etag = client.get("/units/22").headers["etag"]
            start = threading.Barrier(WRITERS)

            def writer(index: int, start: threading.Barrier = start, etag: str = etag, round_: int = round_) -> int:
                start.wait()
                body = {**LABEL, "annotator": f"dr-{index}", "label": f"round {round_}"}
                return client.put("/units/22", json=body, headers={"If-Match": etag}).status_code

            with ThreadPoolExecutor(WRITERS) as pool:
                statuses = sorted(pool.map(writer, range(WRITERS)))
            assert statuses == [201] + [412] * (WRITERS - 1), statuses
            assert len(versions(client, 22)) == round_ + 1
