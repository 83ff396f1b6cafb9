"""The Storage SCP: C-ECHO, and C-STORE of mammograms and Secondary Captures into the spool.

Only the storage SOP classes the explainer can read are offered, each with the
transfer syntaxes :func:`deepminer.dicom.decodable_transfer_syntaxes` finds
decoders for, so an instance it could not decode is refused at negotiation,
not acknowledged and then dropped. A success status is sent only once the
instance is on disk and fsynced (:meth:`Spool.put <service.dimse.spool.Spool.put>`).

Logs name the calling AE title and the status, never a UID or a patient attribute.
"""

from __future__ import annotations

import logging

from pydicom.uid import UID
from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalMammographyXRayImageStorageForProcessing,
    SecondaryCaptureImageStorage,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from deepminer.dicom import decodable_transfer_syntaxes
from service.dimse.metrics import DimseMetrics
from service.dimse.settings import DimseSettings
from service.dimse.spool import InvalidUidError, Spool, SpoolFullError

log = logging.getLogger(__name__)

STORAGE_SOP_CLASSES: tuple[UID, ...] = (
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalMammographyXRayImageStorageForProcessing,
    SecondaryCaptureImageStorage,
)

# C-STORE statuses (PS3.4 B.2.3, PS3.7 C.4.2).
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110


class StorageScp:
    """The listener's application entity; :meth:`start` serves it on a background thread."""

    def __init__(self, settings: DimseSettings, *, spool: Spool, metrics: DimseMetrics) -> None:
        self.settings = settings
        self.spool = spool
        self.metrics = metrics
        self.ae = AE(ae_title=settings.ae_title)
        self.ae.require_called_aet = True
        self.ae.require_calling_aet = list(settings.allowed_calling_ae_titles)
        self.ae.maximum_pdu_size = settings.max_pdu_bytes
        self.ae.add_supported_context(Verification)
        syntaxes = list(decodable_transfer_syntaxes())
        for sop_class in STORAGE_SOP_CLASSES:
            self.ae.add_supported_context(sop_class, syntaxes)

    def start(self) -> ThreadedAssociationServer:
        """Listen on the configured address; each association runs in its own thread. ``shutdown()`` stops it."""
        handlers = [
            (evt.EVT_C_ECHO, self._echo),
            (evt.EVT_C_STORE, self._store),
            (evt.EVT_ACCEPTED, self._accepted),
            (evt.EVT_REJECTED, self._rejected),
        ]
        address = (self.settings.host, self.settings.port)
        return self.ae.start_server(address, block=False, evt_handlers=handlers)  # type: ignore[return-value]

    @staticmethod
    def _echo(event: Event) -> int:
        return SUCCESS

    def _accepted(self, event: Event) -> None:
        self.metrics.associations.labels(outcome="accepted").inc()
        log.info("association accepted", extra={"fields": {"event": "dimse_association", **_peer(event)}})

    def _rejected(self, event: Event) -> None:
        self.metrics.associations.labels(outcome="rejected").inc()
        log.warning("association rejected", extra={"fields": {"event": "dimse_rejected", **_peer(event)}})

    def _store(self, event: Event) -> int:
        """Spool the instance durably, then answer success; A700 when it does not fit, never a silent drop."""
        sop_uid = str(event.request.AffectedSOPInstanceUID)
        try:
            self.spool.put(sop_uid, event.encoded_dataset(include_meta=True))
        except SpoolFullError as exc:
            return self._answer(event, OUT_OF_RESOURCES, "out_of_resources", str(exc))
        except InvalidUidError as exc:
            return self._answer(event, CANNOT_UNDERSTAND, "cannot_understand", str(exc))
        except OSError as exc:
            return self._answer(event, PROCESSING_FAILURE, "failed", f"the spool could not be written: {exc.strerror}")
        self.metrics.received.labels(status="success").inc()
        return SUCCESS

    def _answer(self, event: Event, status: int, label: str, reason: str) -> int:
        self.metrics.received.labels(status=label).inc()
        log.warning(
            "C-STORE refused: %s",
            reason,
            extra={"fields": {"event": "dimse_store_refused", "status": f"0x{status:04X}", **_peer(event)}},
        )
        return status


def _peer(event: Event) -> dict[str, str]:
    requestor = event.assoc.requestor
    return {"calling_ae_title": str(requestor.ae_title), "peer": f"{requestor.address}:{requestor.port}"}
