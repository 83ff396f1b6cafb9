"""A DICOMweb client for the calls the service makes: WADO-RS retrieve of one instance, STOW-RS store into a
study, and QIDO-RS search of a study's instances (to check what a STOW-RS answer claims).

Every request has a timeout (``dicomweb_timeout_s`` to connect, and between
bytes) and is tried again (tenacity), up to ``dicomweb_retries`` times, after a failed
connection, a timeout, or a 408, 429, 500, 502, 503 or 504 answer; it waits
``dicomweb_backoff_s`` before the first retry and twice as long before each
further one, or what the PACS's Retry-After says when that is at most 30 s.
What is still a failure becomes a domain error:

- a timeout on the last try, or a 408/504 answer → :class:`PacsTimeoutError` (504 ``pacs_timeout``);
- no connection, another 5xx, 401/403, any other unexpected answer, or a body
  that is not what DICOMweb prescribes → :class:`PacsUnavailableError` (502 ``pacs_unavailable``);
- 404, or an empty answer, on retrieve → :class:`InstanceNotFoundError` (404 ``instance_not_found``);
- a STOW-RS answer listing failed instances, or a 4xx → :class:`PacsStoreError` (502 ``pacs_store_failed``);
- 404 or 204 on a search → an empty study.

A retrieved instance is counted as it arrives and cut off beyond
``max_instance_bytes`` (:class:`InstanceTooLargeError`). Messages of 5xx
errors, which are logged, name the PACS's address but no UID.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import tenacity
from typing_extensions import Self

from service.errors import (
    InstanceNotFoundError,
    InstanceTooLargeError,
    PacsStoreError,
    PacsTimeoutError,
    PacsUnavailableError,
)
from service.pacs.multipart import MultipartError, boundary_of, join, split

DICOM = "application/dicom"
RETRIEVE_ACCEPT = f'multipart/related; type="{DICOM}"; transfer-syntax=*'
RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})
TIMEOUT_STATUSES = frozenset({408, 504})
MAX_RETRY_AFTER_S = 30.0
_STOW_ANSWER_BYTES = 4 * 1024 * 1024
_SEARCH_ANSWER_BYTES = 16 * 1024 * 1024

# DICOM JSON tags of a STOW-RS answer (PS3.18 10.5.3).
_FAILED_SOP_SEQUENCE = "00081198"
_REFERENCED_SOP_SEQUENCE = "00081199"
_REFERENCED_SOP_INSTANCE_UID = "00081155"
_RETRIEVE_URL = "00081190"
_FAILURE_REASON = "00081197"
_SOP_INSTANCE_UID = "00080018"


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: httpx.Headers
    body: bytes


def _retry_after(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to the backoff
    return seconds if seconds is not None and 0 <= seconds <= MAX_RETRY_AFTER_S else None


class _Transient(Exception):
    """A try that failed in a way worth trying again: no connection, a timeout or a retryable status."""

    def __init__(self, failure: str, *, timed_out: bool, retry_after: float | None = None) -> None:
        super().__init__(failure)
        self.failure = failure
        self.timed_out = timed_out
        self.retry_after = retry_after


@dataclass(frozen=True)
class _RetryAfterOr:
    """Wait what the PACS's Retry-After asked for (:func:`_retry_after`), else what ``backoff`` says."""

    backoff: tenacity.wait.wait_base

    def __call__(self, state: tenacity.RetryCallState) -> float:
        failed = state.outcome.exception() if state.outcome is not None else None
        asked = failed.retry_after if isinstance(failed, _Transient) else None
        return self.backoff(state) if asked is None else asked


def _values(item: Mapping[str, Any], tag: str) -> list[Any]:
    element = item.get(tag)
    return list(element.get("Value", [])) if isinstance(element, Mapping) else []


class DicomWebClient:
    """WADO-RS and STOW-RS against one DICOMweb base URL; use as ``async with DicomWebClient(...) as client``."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 30.0,
        retries: int = 2,
        backoff_s: float = 0.5,
        authorization: str | None = None,
        max_instance_bytes: int = 64 * 1024 * 1024,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_instance_bytes = max_instance_bytes
        parts = urlsplit(self.base_url)
        self.address = f"{parts.scheme}://{parts.netloc}"  # for messages: no path, no credentials
        if "@" in parts.netloc:
            self.address = f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[1]}"
        headers = {"Authorization": authorization} if authorization else {}
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s), headers=headers, transport=transport, follow_redirects=False
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- the two calls ----------------------------------------------------------

    async def retrieve_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> bytes:
        """The instance as a DICOM Part 10 file, in the transfer syntax the PACS holds it in (WADO-RS)."""
        url = f"{self.base_url}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
        answer = await self._call(
            "GET",
            url,
            what="retrieving the instance (WADO-RS)",
            headers={"Accept": RETRIEVE_ACCEPT},
            limit=self.max_instance_bytes,
        )
        if answer.status == 404:
            raise self._not_found(study_uid, series_uid, sop_uid)
        self._check_status(answer, what="WADO-RS retrieve")
        content_type = answer.headers.get("content-type", "")
        if content_type.lower().startswith(DICOM):
            return answer.body
        parts = self._parts(answer, content_type)
        instances = [body for headers, body in parts if headers.get("content-type", DICOM).lower().startswith(DICOM)]
        if not instances or not instances[0]:
            raise self._not_found(study_uid, series_uid, sop_uid)
        return instances[0]

    async def store_instances(self, study_uid: str, instances: Sequence[bytes]) -> dict[str, str | None]:
        """Store Part 10 ``instances`` in the study (STOW-RS); returns each stored SOP Instance UID's Retrieve URL.

        A PACS that answers success without a body returns an empty mapping.
        """
        body, content_type = join(list(instances), media_type=DICOM)
        answer = await self._call(
            "POST",
            f"{self.base_url}/studies/{study_uid}",
            what="storing the results (STOW-RS)",
            headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
            content=body,
            limit=_STOW_ANSWER_BYTES,
        )
        if answer.status in (401, 403):
            self._check_status(answer, what="STOW-RS store")
        report = self._store_report(answer)
        failed = _values(report, _FAILED_SOP_SEQUENCE)
        stored = _values(report, _REFERENCED_SOP_SEQUENCE)
        if failed or answer.status >= 300:
            reasons = sorted({f"0x{int(r):04X}" for item in failed for r in _values(item, _FAILURE_REASON)})
            raise PacsStoreError(
                f"the PACS at {self.address} answered {answer.status} to STOW-RS and refused "
                f"{len(failed) if failed else 'some or all'} of {len(instances)} results"
                + (f" (failure reasons {', '.join(reasons)})" if reasons else "")
            )
        urls: dict[str, str | None] = {}
        for item in stored:
            uids, retrieve_urls = _values(item, _REFERENCED_SOP_INSTANCE_UID), _values(item, _RETRIEVE_URL)
            if uids:
                urls[str(uids[0])] = str(retrieve_urls[0]) if retrieve_urls else None
        return urls

    async def study_instance_uids(self, study_uid: str) -> set[str]:
        """The SOP Instance UIDs the study holds (QIDO-RS); empty when the PACS knows no such study."""
        answer = await self._call(
            "GET",
            f"{self.base_url}/studies/{study_uid}/instances",
            what="searching the study (QIDO-RS)",
            headers={"Accept": "application/dicom+json"},
            limit=_SEARCH_ANSWER_BYTES,
        )
        if answer.status in (204, 404):
            return set()
        self._check_status(answer, what="QIDO-RS search")
        try:
            found = json.loads(answer.body) if answer.body.strip() else []
        except ValueError:
            found = None
        if not isinstance(found, list):
            raise PacsUnavailableError(f"the PACS at {self.address} answered QIDO-RS with something not DICOM JSON")
        return {str(uid) for item in found if isinstance(item, Mapping) for uid in _values(item, _SOP_INSTANCE_UID)}

    # -- plumbing ---------------------------------------------------------------

    async def _call(
        self,
        method: str,
        url: str,
        *,
        what: str,
        headers: Mapping[str, str],
        limit: int,
        content: bytes | None = None,
    ) -> _Answer:
        """One request with retries (module docstring); the answer's body read up to ``limit`` bytes."""
        tries = self.retries + 1
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(tries),
            wait=_RetryAfterOr(tenacity.wait_exponential(multiplier=self.backoff_s, exp_base=2, min=0)),
            retry=tenacity.retry_if_exception_type(_Transient),
            sleep=anyio.sleep,
            reraise=True,
        )
        try:
            return await retrying(self._try, method, url, headers=headers, limit=limit, content=content)
        except _Transient as last:
            message = f"the PACS at {self.address} failed {what}: it {last.failure}, on each of {tries} tries"
            raise PacsTimeoutError(message) if last.timed_out else PacsUnavailableError(message) from None

    async def _try(
        self, method: str, url: str, *, headers: Mapping[str, str], limit: int, content: bytes | None
    ) -> _Answer:
        """One try: the answer, or :class:`_Transient` for what is worth trying again."""
        try:
            async with self._client.stream(method, url, headers=headers, content=content) as response:
                if response.status_code not in RETRYABLE:
                    return _Answer(response.status_code, response.headers, await self._read(response, limit))
                raise _Transient(
                    f"answered {response.status_code} {response.reason_phrase}".rstrip(),
                    timed_out=response.status_code in TIMEOUT_STATUSES,
                    retry_after=_retry_after(response.headers.get("retry-after")),
                )
        except httpx.TimeoutException:
            raise _Transient(f"did not answer within the timeout ({self._timeout_s:g} s)", timed_out=True) from None
        except httpx.TransportError as exc:
            raise _Transient(f"could not be reached ({type(exc).__name__}: {exc})", timed_out=False) from None

    @property
    def _timeout_s(self) -> float:
        return float(self._client.timeout.read or 0.0)

    async def _read(self, response: httpx.Response, limit: int) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise self._too_large(limit)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise self._too_large(limit)
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, limit: int) -> InstanceTooLargeError:
        return InstanceTooLargeError(f"the PACS sent more than {limit} bytes (max_upload_bytes); transfer cut off")

    def _check_status(self, answer: _Answer, *, what: str) -> None:
        if answer.status in (401, 403):
            raise PacsUnavailableError(
                f"the PACS at {self.address} refused access to {what} ({answer.status}); check dicomweb_authorization"
            )
        if answer.status != 200:
            raise PacsUnavailableError(f"the PACS at {self.address} answered {answer.status} to {what}")

    def _parts(self, answer: _Answer, content_type: str) -> list[tuple[dict[str, str], bytes]]:
        boundary = boundary_of(content_type)
        if not content_type.lower().startswith("multipart/related") or boundary is None:
            raise PacsUnavailableError(
                f"the PACS at {self.address} answered WADO-RS with {content_type or 'no content type'!r}, "
                "not multipart/related DICOM"
            )
        try:
            return split(answer.body, boundary)
        except MultipartError as exc:
            raise PacsUnavailableError(f"the PACS at {self.address} sent a malformed WADO-RS answer: {exc}") from None

    def _store_report(self, answer: _Answer) -> Mapping[str, Any]:
        """The STOW-RS answer's data set (DICOM JSON, possibly wrapped in a list); empty when there is none."""
        if not answer.body.strip():
            return {}
        try:
            report = json.loads(answer.body)
        except ValueError:
            if answer.status >= 300:
                return {}
            raise PacsUnavailableError(
                f"the PACS at {self.address} answered STOW-RS with a body that is not DICOM JSON"
            ) from None
        if isinstance(report, list):
            report = report[0] if report else {}
        return report if isinstance(report, Mapping) else {}

    @staticmethod
    def _not_found(study_uid: str, series_uid: str, sop_uid: str) -> InstanceNotFoundError:
        return InstanceNotFoundError(
            f"the PACS holds no instance {sop_uid} in series {series_uid} of study {study_uid}", field="sop_uid"
        )
