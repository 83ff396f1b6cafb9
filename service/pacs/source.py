"""The instance retrieved from the PACS: its header, which the results copy, and the check that it is the one asked for.

The header holds the patient module. It is never logged, and the errors raised
here name no UID, because 5xx messages are logged.
"""

from __future__ import annotations

import io

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from service.errors import CorruptImageError, PacsUnavailableError

# Type 2 attributes of the Patient and General Study modules that highdicom
# copies into every result; a source without them gets them empty, which is
# what Type 2 means by "unknown".
_TYPE2_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def read_header(data: bytes) -> Dataset:
    """The data set in the Part 10 bytes ``data`` without its pixel data, Type 2 patient and study attributes present."""
    try:
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptImageError(f"the PACS sent an unreadable DICOM instance: {exc}") from None
    for keyword in _TYPE2_PATIENT_STUDY:
        if keyword not in header:
            setattr(header, keyword, None)
    return header


def check_identity(header: Dataset, *, study_uid: str, series_uid: str, sop_uid: str) -> None:
    """Refuse an instance whose UIDs differ from the request's: its results would join the wrong study."""
    found = (
        str(header.get("StudyInstanceUID", "")),
        str(header.get("SeriesInstanceUID", "")),
        str(header.get("SOPInstanceUID", "")),
    )
    if found != (study_uid, series_uid, sop_uid):
        names = ("Study Instance UID", "Series Instance UID", "SOP Instance UID")
        differing = [name for name, a, b in zip(names, found, (study_uid, series_uid, sop_uid)) if a != b]
        raise PacsUnavailableError(
            f"the PACS answered with an instance whose {' and '.join(differing)} differ from the request's"
        )
