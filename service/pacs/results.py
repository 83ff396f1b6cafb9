"""The three DICOM results of one explanation, each a new series in the source image's study.

1. a Comprehensive SR with a TID 1500 Measurement Report (:mod:`service.pacs.report`);
2. a Secondary Capture with the CAM overlay burned in (:mod:`service.pacs.capture`);
3. a Grayscale Softcopy Presentation State outlining the high-CAM region (:mod:`service.pacs.presentation`).

highdicom copies the patient and study modules from the source header, so
every result carries the source's Study Instance UID and patient.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

import highdicom as hd
from pydicom.dataset import Dataset

from service.explainer import ExplanationResult
from service.pacs.capture import CAPTURE_MAX_SIDE, build_capture
from service.pacs.equipment import Equipment
from service.pacs.presentation import build_presentation
from service.pacs.report import build_report

ResultKind = Literal["sr", "secondary_capture", "presentation_state"]


@dataclass(frozen=True)
class DicomResult:
    """One result: what it is, its data set, and the data set as a Part 10 file."""

    kind: ResultKind
    dataset: Dataset
    data: bytes

    @property
    def sop_class_uid(self) -> str:
        return str(self.dataset.SOPClassUID)

    @property
    def series_instance_uid(self) -> str:
        return str(self.dataset.SeriesInstanceUID)

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)


def encode(dataset: Dataset) -> bytes:
    """``dataset`` as a DICOM Part 10 file."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def build_results(
    result: ExplanationResult, source: Dataset, equipment: Equipment, *, capture_max_side: int = CAPTURE_MAX_SIDE
) -> tuple[DicomResult, ...]:
    """The SR, the Secondary Capture and the GSPS of ``result`` for the source image whose header is ``source``."""
    report = build_report(result, source, equipment, series_uid=hd.UID(), sop_uid=hd.UID())
    capture = build_capture(result, source, equipment, series_uid=hd.UID(), sop_uid=hd.UID(), max_side=capture_max_side)
    presentation = build_presentation(result, source, equipment, series_uid=hd.UID(), sop_uid=hd.UID())
    return (
        DicomResult("sr", report, encode(report)),
        DicomResult("secondary_capture", capture, encode(capture)),
        DicomResult("presentation_state", presentation, encode(presentation)),
    )
