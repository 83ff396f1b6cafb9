"""``POST /dicomweb/explain`` against a local DICOMweb server: the contract, and every failure as JSON, never a 500."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Any

import pydicom
import pytest

from service.pacs.results import encode

FakePacs = Any  # tests/pacs/conftest.py
ClientFactory = Callable[..., Any]


def body(uids: tuple[str, str, str], **extra: Any) -> dict[str, Any]:
    return {"study_uid": uids[0], "series_uid": uids[1], "sop_uid": uids[2], **extra}


def assert_error(response: Any, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    if field is not None:
        assert error["field"] == field
    return error


def test_explains_by_uids_and_stores_three_results_in_the_study(
    make_client: ClientFactory, fake_pacs: FakePacs, mammogram: bytes
) -> None:
    uids = fake_pacs.add(mammogram)
    with make_client(dicomweb_url=fake_pacs.url) as client:
        response = client.post("/dicomweb/explain", json=body(uids, store_results=True, top_k=3))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["study_uid"], answer["series_uid"], answer["sop_uid"]) == uids
    assert set(answer["scores"]) == set(answer["classifier_probabilities"]) == {"normal", "benign", "malignant"}
    assert sum(answer["classifier_probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert answer["score_rule"] == "breast_peak"
    assert answer["predicted_class"] == max(answer["scores"], key=answer["scores"].get) == answer["explained_class"]
    assert [u["rank"] for u in answer["units"]] == [1, 2, 3]
    assert answer["model"]["id"].endswith(answer["model"]["hash"][:12])
    assert {"retrieve", "inference", "dicom", "store", "total"} <= answer["timings_ms"].keys()
    kinds = {s["kind"]: s for s in answer["stored"]}
    assert kinds.keys() == {"sr", "secondary_capture", "presentation_state"}
    assert [path for method, path, _ in fake_pacs.requests if method == "POST"] == [f"/dicom-web/studies/{uids[0]}"]
    # Then the study is searched, so that no result is reported stored that the PACS did not keep.
    assert fake_pacs.requests[-1][:2] == ("GET", f"/dicom-web/studies/{uids[0]}/instances")
    for stored in answer["stored"]:
        ds = pydicom.dcmread(io.BytesIO(fake_pacs.instances[stored["sop_instance_uid"]]))
        assert ds.StudyInstanceUID == uids[0]
        assert ds.SeriesInstanceUID == stored["series_instance_uid"] != uids[1]
        assert ds.SOPClassUID == stored["sop_class_uid"]
        assert stored["retrieve_url"] == f"{fake_pacs.url}/studies/{uids[0]}"


def test_results_the_pacs_acknowledged_but_did_not_keep_are_not_reported_stored(
    make_client: ClientFactory, fake_pacs: FakePacs, mammogram: bytes
) -> None:
    uids = fake_pacs.add(mammogram)
    fake_pacs.drop_stored = True
    with make_client(dicomweb_url=fake_pacs.url) as client:
        response = client.post("/dicomweb/explain", json=body(uids, store_results=True))
    error = assert_error(response, 502, "pacs_store_failed")
    assert "lacks sr, secondary_capture, presentation_state" in error["message"]
    assert "stored" not in response.json()


def test_store_results_false_only_explains(make_client: ClientFactory, fake_pacs: FakePacs, mammogram: bytes) -> None:
    uids = fake_pacs.add(mammogram)
    with make_client(dicomweb_url=fake_pacs.url) as client:
        response = client.post("/dicomweb/explain", json=body(uids, store_results=False, class_name="malignant"))
    assert response.status_code == 200, response.text
    assert response.json()["stored"] == [] and response.json()["explained_class"] == "malignant"
    assert fake_pacs.count("POST") == 0


def test_storing_defaults_to_the_setting(make_client: ClientFactory, fake_pacs: FakePacs, mammogram: bytes) -> None:
    uids = fake_pacs.add(mammogram)
    with make_client(dicomweb_url=fake_pacs.url, dicomweb_store_results=False) as client:
        assert client.post("/dicomweb/explain", json=body(uids)).json()["stored"] == []
    with make_client(dicomweb_url=fake_pacs.url) as client:
        assert len(client.post("/dicomweb/explain", json=body(uids)).json()["stored"]) == 3


def test_missing_instance_is_404_instance_not_found(make_client: ClientFactory, fake_pacs: FakePacs) -> None:
    with make_client(dicomweb_url=fake_pacs.url) as client:
        response = client.post("/dicomweb/explain", json=body(("1.2.3", "1.2.4", "1.2.5")))
    assert "1.2.5" in assert_error(response, 404, "instance_not_found", "sop_uid")["message"]


def test_pacs_down_is_502_pacs_unavailable(make_client: ClientFactory, closed_port_url: str) -> None:
    with make_client(dicomweb_url=closed_port_url, dicomweb_retries=1) as client:
        response = client.post("/dicomweb/explain", json=body(("1.2.3", "1.2.4", "1.2.5")))
    assert_error(response, 502, "pacs_unavailable")
    assert response.headers["Retry-After"] == "5"


def test_pacs_failing_after_the_retries_is_502(
    make_client: ClientFactory, fake_pacs: FakePacs, mammogram: bytes
) -> None:
    uids = fake_pacs.add(mammogram)
    fake_pacs.fail_next(500, 500, 500)
    with make_client(dicomweb_url=fake_pacs.url, dicomweb_retries=2) as client:
        response = client.post("/dicomweb/explain", json=body(uids))
    assert "on each of 3 tries" in assert_error(response, 502, "pacs_unavailable")["message"]
    assert fake_pacs.count("GET") == 3


def test_a_transient_failure_is_retried_transparently(
    make_client: ClientFactory, fake_pacs: FakePacs, mammogram: bytes
) -> None:
    uids = fake_pacs.add(mammogram)
    fake_pacs.fail_next(503, 429)
    with make_client(dicomweb_url=fake_pacs.url, dicomweb_retries=2) as client:
        response = client.post("/dicomweb/explain", json=body(uids, store_results=False))
    assert response.status_code == 200, response.text


def test_slow_pacs_is_504_pacs_timeout(make_client: ClientFactory, fake_pacs: FakePacs, mammogram: bytes) -> None:
    uids = fake_pacs.add(mammogram)
    fake_pacs.hang_s = 0.6
    fake_pacs.fail_next("hang", "hang")
    with make_client(dicomweb_url=fake_pacs.url, dicomweb_timeout_s=0.2, dicomweb_retries=1) as client:
        response = client.post("/dicomweb/explain", json=body(uids))
    assert_error(response, 504, "pacs_timeout")


def test_refused_store_is_502_pacs_store_failed(
    make_client: ClientFactory, fake_pacs: FakePacs, mammogram: bytes
) -> None:
    uids = fake_pacs.add(mammogram)
    fake_pacs.refuse_store = True
    with make_client(dicomweb_url=fake_pacs.url) as client:
        response = client.post("/dicomweb/explain", json=body(uids, store_results=True))
    assert "refused 3 of 3 results" in assert_error(response, 502, "pacs_store_failed")["message"]


def test_an_instance_other_than_the_one_asked_for_is_refused(
    make_client: ClientFactory, fake_pacs: FakePacs, new_mammogram: Callable[..., bytes]
) -> None:
    study, series, sop = fake_pacs.add(new_mammogram())
    fake_pacs.instances[sop] = new_mammogram()  # a PACS that files another patient's image under these UIDs
    fake_pacs.check_uids = False
    with make_client(dicomweb_url=fake_pacs.url) as client:
        response = client.post("/dicomweb/explain", json=body((study, series, sop), store_results=True))
    message = assert_error(response, 502, "pacs_unavailable")["message"]
    assert "Study Instance UID and Series Instance UID and SOP Instance UID differ" in message
    assert fake_pacs.count("POST") == 0  # nothing is written into the study asked for


def test_an_instance_without_pixels_is_422_no_pixel_data(
    make_client: ClientFactory, fake_pacs: FakePacs, mammogram: bytes
) -> None:
    ds = pydicom.dcmread(io.BytesIO(mammogram))
    for keyword in (
        "PixelData",
        "Rows",
        "Columns",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
    ):
        delattr(ds, keyword)
    # A structured report in the image's series: UIDs an integrator may well pass by mistake.
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    ds.Modality = "SR"
    fake_pacs.add(encode(ds))
    with make_client(dicomweb_url=fake_pacs.url) as client:
        response = client.post(
            "/dicomweb/explain", json=body((ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID))
        )
    assert_error(response, 422, "no_pixel_data", "sop_uid")


def test_no_pacs_configured_is_503(make_client: ClientFactory) -> None:
    with make_client() as client:
        response = client.post("/dicomweb/explain", json=body(("1.2.3", "1.2.4", "1.2.5")))
    assert "DEEPMINER_DICOMWEB_URL" in assert_error(response, 503, "pacs_not_configured")["message"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (body(("1.2.3", "1.2.4", "1.2.x")), "sop_uid"),
        (body(("1.2.3", "1.2.4", "1." + "2" * 70)), "sop_uid"),
        ({"study_uid": "1.2.3", "series_uid": "1.2.4"}, "sop_uid"),
        (body(("1.2.3", "1.2.4", "1.2.5"), top_k=0), "top_k"),
        (body(("1.2.3", "1.2.4", "1.2.5"), extra=1), "extra"),
    ],
)
def test_bad_requests_are_422_naming_the_field(
    make_client: ClientFactory, fake_pacs: FakePacs, payload: dict[str, Any], field: str
) -> None:
    with make_client(dicomweb_url=fake_pacs.url) as client:
        assert_error(client.post("/dicomweb/explain", json=payload), 422, "validation_error", field)
    assert fake_pacs.requests == []


def test_unknown_class_is_422_before_the_pacs_is_asked(make_client: ClientFactory, fake_pacs: FakePacs) -> None:
    with make_client(dicomweb_url=fake_pacs.url) as client:
        response = client.post("/dicomweb/explain", json=body(("1.2.3", "1.2.4", "1.2.5"), class_name="cyst"))
    assert_error(response, 422, "invalid_parameter", "class_name")
    assert fake_pacs.requests == []


def test_no_log_line_holds_a_patient_identifier(
    make_client: ClientFactory,
    fake_pacs: FakePacs,
    mammogram: bytes,
    patient_identifiers: tuple[str, ...],
    caplog: pytest.LogCaptureFixture,
) -> None:
    uids = fake_pacs.add(mammogram)
    service_logger = logging.getLogger("service")
    service_logger.addHandler(caplog.handler)  # the service's JSON logging may stop propagation
    try:
        with caplog.at_level(logging.DEBUG), make_client(dicomweb_url=fake_pacs.url, log_level="debug") as client:
            assert client.post("/dicomweb/explain", json=body(uids, store_results=True)).status_code == 200
            fake_pacs.refuse_store = True
            assert client.post("/dicomweb/explain", json=body(uids, store_results=True)).status_code == 502
    finally:
        service_logger.removeHandler(caplog.handler)
    logged = caplog.text + " ".join(str(r.args) for r in caplog.records)
    assert "pacs_store_failed" in logged
    assert not any(text in logged for text in patient_identifiers)


def test_the_answer_and_the_stored_sr_carry_the_same_explanation(
    make_client: ClientFactory, fake_pacs: FakePacs, mammogram: bytes
) -> None:
    """Labels of this bundle name units in `explanation` and in the SR; another bundle's label appears in neither."""
    from annotations import NewAnnotation

    uids = fake_pacs.add(mammogram)
    with make_client(dicomweb_url=fake_pacs.url, seed_automatic_labels=False) as client:
        state: Any = client.app.state  # type: ignore[attr-defined]
        first, second = (u.unit_id for u in state.explainer.explain(mammogram, top_k=2).units)
        put = client.put(
            f"/units/{first}", json={"annotator": "dr_a", "label": "Mass edge", "category": "Mass", "cancer_association": "unsure"}
        )
        assert put.status_code == 201, put.text
        state.store.add_many([
            NewAnnotation(unit_id=second, annotator="dr_a", label="Elsewhere", category="Mass", bundle_hash="0" * 64)
        ])
        response = client.post("/dicomweb/explain", json=body(uids, store_results=True, top_k=2))
    assert response.status_code == 200, response.text
    answer = response.json()
    (named,) = answer["explanation"]["units"]
    assert named["unit_id"] == first and named["rank"] == 1 and answer["explanation"]["sources"] == ["expert"]
    assert named["text"].endswith("'Mass edge' — Mass; association with cancer unsure (1 of 1 expert)")
    assert [u["labels"] for u in answer["units"]] == [["Mass edge"], []]
    (sr,) = (s for s in answer["stored"] if s["kind"] == "sr")
    ds = pydicom.dcmread(io.BytesIO(fake_pacs.instances[sr["sop_instance_uid"]]))
    texts = []

    def walk(items: Any) -> None:
        for item in items:
            if item.ValueType == "TEXT":
                texts.append(str(item.TextValue))
            if item.ValueType == "CODE":
                texts.append(str(item.ConceptCodeSequence[0].CodeMeaning))
            walk(item.get("ContentSequence", []))

    walk(ds.ContentSequence)
    assert [t for t in texts if t.startswith("unit ")] == [f"unit {first}"]
    assert "Mass edge" in texts and "Elsewhere" not in texts
