"""PACS integration: explanations written as DICOM (highdicom) and a DICOMweb round trip.

A request to ``/dicomweb/explain`` goes route (``service/api/routes/dicomweb.py``)
→ :class:`~service.pacs.service.PacsService`, which retrieves the instance with
:class:`~service.pacs.dicomweb.DicomWebClient` (WADO-RS), explains it with the
service's :class:`~service.explainer.Explainer`, writes the results
(:mod:`service.pacs.results`: a Comprehensive SR, a Secondary Capture and a
Grayscale Softcopy Presentation State) and stores them in the source study
(STOW-RS).

The source header carries the patient module, which the results copy so that
they join the patient's study. It is never logged; 5xx messages (which are
logged) name no UID either.
"""
