"""The DICOMweb client against a real local HTTP server: retrieve, store, retries, timeouts and errors."""

from __future__ import annotations

import io
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import pydicom
import pytest

from service.errors import (
    InstanceNotFoundError,
    InstanceTooLargeError,
    PacsStoreError,
    PacsTimeoutError,
    PacsUnavailableError,
)
from service.pacs.dicomweb import DicomWebClient
from service.pacs.multipart import MultipartError, boundary_of, join, split

T = TypeVar("T")
FakePacs = Any  # tests/pacs/conftest.py


def call(url: str, action: Callable[[DicomWebClient], Awaitable[T]], **options: Any) -> T:
    options.setdefault("backoff_s", 0.01)

    async def main() -> T:
        async with DicomWebClient(url, **options) as client:
            return await action(client)

    return anyio.run(main)


@pytest.fixture(scope="module")
def instance(mammogram: bytes) -> bytes:
    return mammogram


def test_retrieve_returns_the_part10_file(fake_pacs: FakePacs, instance: bytes) -> None:
    study, series, sop = fake_pacs.add(instance)
    data = call(fake_pacs.url, lambda c: c.retrieve_instance(study, series, sop))
    assert data == instance
    _, path, headers = fake_pacs.requests[0]
    assert path == f"/dicom-web/studies/{study}/series/{series}/instances/{sop}"
    assert headers["Accept"] == 'multipart/related; type="application/dicom"; transfer-syntax=*'


def test_retrieve_retries_transient_failures_with_backoff(fake_pacs: FakePacs, instance: bytes) -> None:
    uids = fake_pacs.add(instance)
    fake_pacs.fail_next(503, 502)
    started = time.perf_counter()
    data = call(fake_pacs.url, lambda c: c.retrieve_instance(*uids), retries=2, backoff_s=0.1)
    assert data == instance
    assert fake_pacs.count("GET") == 3
    # Retry-After: 0 from the server wins over the 0.1 s + 0.2 s backoff.
    assert time.perf_counter() - started < 0.3


def test_backoff_doubles_without_retry_after(fake_pacs: FakePacs, instance: bytes) -> None:
    uids = fake_pacs.add(instance)
    fake_pacs.fail_next("hang", "hang")
    fake_pacs.hang_s = 0.3
    started = time.perf_counter()
    call(fake_pacs.url, lambda c: c.retrieve_instance(*uids), retries=2, backoff_s=0.1, timeout_s=0.1)
    # Two timeouts (0.1 s each), then waits of 0.1 s and 0.2 s before the successful third try.
    assert time.perf_counter() - started >= 0.5
    assert fake_pacs.count("GET") == 3


def test_retries_are_bounded_and_end_in_pacs_unavailable(fake_pacs: FakePacs, instance: bytes) -> None:
    uids = fake_pacs.add(instance)
    fake_pacs.fail_next(503, 503, 503, 503)
    with pytest.raises(PacsUnavailableError, match=r"answered 503 .* on each of 3 tries") as caught:
        call(fake_pacs.url, lambda c: c.retrieve_instance(*uids), retries=2)
    assert fake_pacs.count("GET") == 3
    assert uids[0] not in caught.value.message  # 5xx messages are logged: no UID in them


def test_timeout_on_every_try_is_pacs_timeout(fake_pacs: FakePacs, instance: bytes) -> None:
    uids = fake_pacs.add(instance)
    fake_pacs.hang_s = 0.5
    fake_pacs.fail_next("hang", "hang")
    with pytest.raises(PacsTimeoutError, match="did not answer within the timeout"):
        call(fake_pacs.url, lambda c: c.retrieve_instance(*uids), retries=1, timeout_s=0.1)
    assert fake_pacs.count("GET") == 2


def test_gateway_timeout_answer_is_pacs_timeout(fake_pacs: FakePacs, instance: bytes) -> None:
    uids = fake_pacs.add(instance)
    fake_pacs.fail_next(504, 504)
    with pytest.raises(PacsTimeoutError):
        call(fake_pacs.url, lambda c: c.retrieve_instance(*uids), retries=1)


def test_no_server_is_pacs_unavailable(closed_port_url: str) -> None:
    with pytest.raises(PacsUnavailableError, match="could not be reached"):
        call(closed_port_url, lambda c: c.retrieve_instance("1.2", "1.3", "1.4"), retries=1)


def test_missing_instance_is_not_found_without_retrying(fake_pacs: FakePacs) -> None:
    with pytest.raises(InstanceNotFoundError) as caught:
        call(fake_pacs.url, lambda c: c.retrieve_instance("1.2", "1.3", "1.4"), retries=3)
    assert caught.value.field == "sop_uid" and "1.4" in caught.value.message
    assert fake_pacs.count("GET") == 1


def test_refused_access_names_the_setting(fake_pacs: FakePacs, instance: bytes) -> None:
    uids = fake_pacs.add(instance)
    fake_pacs.fail_next(401)
    with pytest.raises(PacsUnavailableError, match="dicomweb_authorization"):
        call(fake_pacs.url, lambda c: c.retrieve_instance(*uids), authorization="Bearer s3cret")
    assert fake_pacs.requests[0][2]["Authorization"] == "Bearer s3cret"


def test_an_answer_that_is_not_dicomweb_is_pacs_unavailable(fake_pacs: FakePacs, instance: bytes) -> None:
    uids = fake_pacs.add(instance)
    fake_pacs.fail_next("html")
    with pytest.raises(PacsUnavailableError, match="text/html"):
        call(fake_pacs.url, lambda c: c.retrieve_instance(*uids))


def test_an_instance_over_the_limit_is_cut_off(fake_pacs: FakePacs, instance: bytes) -> None:
    uids = fake_pacs.add(instance)
    with pytest.raises(InstanceTooLargeError):
        call(fake_pacs.url, lambda c: c.retrieve_instance(*uids), max_instance_bytes=len(instance) // 2)


def test_store_returns_retrieve_urls(fake_pacs: FakePacs, new_mammogram: Callable[..., bytes]) -> None:
    first = new_mammogram()
    study, _, _ = fake_pacs.add(first)
    # A second instance of the same study, as the results are.
    ds = pydicom.dcmread(io.BytesIO(first))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    urls = call(fake_pacs.url, lambda c: c.store_instances(study, [buffer.getvalue()]))
    assert urls == {str(ds.SOPInstanceUID): f"{fake_pacs.url}/studies/{study}"}
    assert fake_pacs.instances[str(ds.SOPInstanceUID)] == buffer.getvalue()
    assert fake_pacs.requests[-1][1] == f"/dicom-web/studies/{study}"


def test_refused_store_is_pacs_store_failed_with_reasons(fake_pacs: FakePacs, instance: bytes) -> None:
    study, _, _ = fake_pacs.add(instance)
    fake_pacs.refuse_store = True
    with pytest.raises(PacsStoreError, match=r"answered 409 .* refused 1 of 1 results \(failure reasons 0xA700\)"):
        call(fake_pacs.url, lambda c: c.store_instances(study, [instance]))


def test_store_is_retried_after_a_transient_failure(fake_pacs: FakePacs, instance: bytes) -> None:
    study, _, _ = fake_pacs.add(instance)
    fake_pacs.fail_next(503)
    call(fake_pacs.url, lambda c: c.store_instances(study, [instance]), retries=1)
    assert fake_pacs.count("POST") == 2


def test_error_messages_never_hold_patient_identifiers(
    fake_pacs: FakePacs, instance: bytes, patient_identifiers: tuple[str, ...]
) -> None:
    study, _, _ = fake_pacs.add(instance)
    fake_pacs.refuse_store = True
    with pytest.raises(PacsStoreError) as caught:
        call(fake_pacs.url, lambda c: c.store_instances(study, [instance]))
    assert not any(text in caught.value.message for text in patient_identifiers)


def test_multipart_round_trip_keeps_binary_parts_intact() -> None:
    parts = [b"\x00\x01--not-a-boundary\r\n\r\n\xff", b"", b"plain"]
    body, content_type = join(parts, media_type="application/dicom")
    boundary = boundary_of(content_type)
    assert boundary is not None
    assert [content for _, content in split(body, boundary)] == parts
    assert all(headers["content-type"] == "application/dicom" for headers, _ in split(body, boundary))


def test_multipart_with_quoted_boundary_and_no_part_headers() -> None:
    assert boundary_of('multipart/related; type="application/dicom"; boundary="a b"') == "a b"
    assert split(b"preamble\r\n--a b\r\n\r\nxy\r\n\r\nz\r\n--a b--\r\n", "a b") == [({}, b"xy\r\n\r\nz")]
    with pytest.raises(MultipartError):
        split(b"no delimiter here", "a b")
