"""Explain an instance the PACS holds and store the DICOM results back in its study.

Network calls are asynchronous (:class:`~service.pacs.dicomweb.DicomWebClient`
on httpx), so they never block the event loop. The explanation and the DICOM
writing are blocking NumPy and highdicom work; they run in the service's
:class:`~service.pool.InferencePool` as one job, within its deadline, and the
whole request holds a place in its line (``max_queue``) from the retrieve to
the store, so instances held in memory are bounded as uploads are.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from annotations import StoreUnavailableError
from service.errors import InferenceCancelledError, PacsNotConfiguredError, PacsStoreError, ServiceError
from service.explainer import Explainer, ExplanationResult
from service.inference import Stopwatch
from service.pacs.dicomweb import DicomWebClient
from service.pacs.equipment import Equipment
from service.pacs.results import DicomResult, ResultKind, build_results
from service.pacs.source import check_identity, read_header
from service.pool import InferencePool
from service.settings import Settings


@dataclass(frozen=True)
class StoredResult:
    """One DICOM result stored in the source study."""

    kind: ResultKind
    sop_class_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    retrieve_url: str | None  # as the PACS reported it; None when it did not


@dataclass(frozen=True)
class PacsExplanation:
    """The explanation of one PACS instance and the results stored for it (none unless storing was asked)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    result: ExplanationResult
    stored: tuple[StoredResult, ...]
    timings_ms: Mapping[str, float]


class PacsService:
    """Retrieve (WADO-RS) → explain (the service's :class:`Explainer`) → write DICOM → store (STOW-RS)."""

    def __init__(
        self,
        *,
        explainer: Explainer,
        pool: InferencePool,
        client: Callable[[], DicomWebClient],
        software_version: str,
    ) -> None:
        self.explainer = explainer
        self.pool = pool
        self._client = client
        self.equipment = Equipment.for_model(explainer.model, software_version=software_version)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, explainer: Explainer, pool: InferencePool, software_version: str
    ) -> PacsService:
        """The service for the PACS in ``settings``; :class:`PacsNotConfiguredError` when ``dicomweb_url`` is unset."""
        if not settings.dicomweb_url:
            raise PacsNotConfiguredError("no PACS is configured: set DEEPMINER_DICOMWEB_URL to its DICOMweb base URL")
        url = settings.dicomweb_url
        authorization = settings.dicomweb_authorization

        def client() -> DicomWebClient:
            return DicomWebClient(
                url,
                timeout_s=settings.dicomweb_timeout_s,
                retries=settings.dicomweb_retries,
                backoff_s=settings.dicomweb_backoff_s,
                authorization=authorization.get_secret_value() if authorization is not None else None,
                max_instance_bytes=settings.max_upload_bytes,
            )

        return cls(explainer=explainer, pool=pool, client=client, software_version=software_version)

    async def explain_instance(
        self,
        *,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        store: bool,
        class_name: str | None,
        top_k: int,
    ) -> PacsExplanation:
        """Explain the instance; with ``store``, put the SR, Secondary Capture and GSPS in its study."""
        params = self.explainer.validate(class_name=class_name, top_k=top_k)
        async with self.pool.admit(), self._client() as client:
            clock = Stopwatch()
            data = await client.retrieve_instance(study_uid, series_uid, sop_uid)
            clock.lap("retrieve")

            def job(cancel: threading.Event) -> tuple[ExplanationResult, tuple[DicomResult, ...]]:
                clock.cancel = cancel  # the stages from here on stop once the pool gives up on the job
                clock.lap("queue")
                header = read_header(data)
                check_identity(header, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid)
                try:
                    result = self.explainer.explain(data, params=params, clock=clock)
                except ServiceError as exc:
                    if exc.field == "file":  # the image came from the PACS: the request named it by sop_uid
                        exc.field = "sop_uid"
                    raise
                if not store:
                    return result, ()
                if not result.explanation.labels_available:
                    # A result stored in the study stays in the patient's record: never one that lacks its labels.
                    raise StoreUnavailableError("the unit labels cannot be read, so no DICOM result is stored")
                if cancel.is_set():
                    raise InferenceCancelledError("explanation abandoned before its DICOM results were written")
                results = build_results(result, header, self.equipment)
                clock.lap("dicom")
                return result, results

            result, results = await self.pool.run(job)
            clock.cancel = None  # the job's event; the store below is this coroutine's own work
            stored: tuple[StoredResult, ...] = ()
            if store:
                urls = await client.store_instances(study_uid, [r.data for r in results])
                await self._check_stored(client, study_uid, results)
                clock.lap("store")
                stored = tuple(
                    StoredResult(
                        kind=r.kind,
                        sop_class_uid=r.sop_class_uid,
                        series_instance_uid=r.series_instance_uid,
                        sop_instance_uid=r.sop_instance_uid,
                        retrieve_url=urls.get(r.sop_instance_uid),
                    )
                    for r in results
                )
        return PacsExplanation(
            study_uid=study_uid,
            series_uid=series_uid,
            sop_uid=sop_uid,
            result=result,
            stored=stored,
            timings_ms=clock.timings(),
        )

    @staticmethod
    async def _check_stored(client: DicomWebClient, study_uid: str, results: tuple[DicomResult, ...]) -> None:
        """Raise :class:`PacsStoreError` unless the study holds every result a STOW-RS answer called stored.

        A PACS may acknowledge an instance it then drops (Orthanc does, for one its
        received-instance filter refuses); the answer must never claim a result the
        study lacks, so the study is searched (QIDO-RS) before anything is reported.
        """
        held = await client.study_instance_uids(study_uid)
        missing = [r.kind for r in results if r.sop_instance_uid not in held]
        if missing:
            kept = [r.kind for r in results if r.sop_instance_uid in held]
            raise PacsStoreError(
                f"the PACS at {client.address} acknowledged the {len(results)} results (STOW-RS) but its study lacks "
                f"{', '.join(missing)} (QIDO-RS); it holds {', '.join(kept) or 'none'} of them; none is reported stored"
            )
