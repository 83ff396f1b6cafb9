"""The DICOM listener: a Storage SCP that takes mammograms by C-STORE and explains them (``python -m service.dimse``).

An instance goes: association (:mod:`service.dimse.scp`, calling AE title
checked) → C-STORE → :class:`~service.dimse.spool.Spool` (written and fsynced
before the success status) → :class:`~service.dimse.worker.SpoolWorker`, which
explains it with the service's :class:`~service.explainer.Explainer` in this
process and builds the DICOM results of :mod:`service.pacs.results` → the
:class:`~service.dimse.outbox.Outbox`, whose entry, keyed by SOP Instance UID
and bundle hash, is what makes a restart never explain an instance twice.

In-process rather than through the HTTP API: an acknowledged instance is
already on this process's disk, and explaining it here needs no second hop
that could fail after the acknowledgement, no upload size limit and no
authentication token; the listener scales as its own Deployment does.
"""
