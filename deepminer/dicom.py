"""DICOM decoding for training and the service: one implementation of the display pipeline.

What counts as DICOM (:func:`looks_like_dicom`): a Part 10 file ("DICM" at byte
128), or a bare data set without preamble and file meta that starts with a
group 0002 or 0008 element (what some old archives and exporters write); the
latter is read with ``force`` and its transfer syntax is guessed by pydicom.

Pixels (:func:`decode_dicom`), following PS3.3 C.11 for MONOCHROME1/2:

1. Modality LUT: the Modality LUT Sequence, else Rescale Slope/Intercept.
2. VOI: the first VOI LUT Sequence item, else the first Window Center/Width
   (LINEAR, LINEAR_EXACT or SIGMOID), mapped to [0, 1]. Without either, the
   range BitsStored can hold, passed through the modality LUT, is mapped to
   [0, 1] (not the image's own min/max, so a pixel value means the same in
   every image of a series and a mask stays 0/1).
3. MONOCHROME1 is inverted (``1 - v``). Presentation LUT Shape is not applied
   again: the DX/MG IODs tie INVERSE to MONOCHROME1, so it says the same thing.

RGB / YBR images (secondary captures) become luminance over their stored range.
Windowing is computed here rather than by ``pydicom.pixels.apply_windowing``
because that function's output range depends on the modality tags; the
display pipeline needs [0, 1].

Refused, each with an :class:`~deepminer.imaging.ImageDecodeError` naming the
problem: not DICOM, truncated files, no Pixel Data, transfer syntaxes without an
installed decoder (named), multi-frame images (tomosynthesis and the like; a
first frame is not a mammogram), and, from the header before any pixel is
decoded, images larger than ``max_pixels`` (:class:`ImageTooLargeError`).

Privacy: only the tags in ``_TAGS`` are kept when a file is parsed, so patient
name, id and birth date never reach a data set, a message or a log.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi, get_decoder
from pydicom.uid import UID

from deepminer.imaging import (
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    ImageDecodeError,
    check_dimensions,
)

log = logging.getLogger(__name__)

_TAGS: tuple[str, ...] = (
    # identifiers and acquisition
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
    "ImageLaterality", "Laterality", "ViewPosition", "PresentationIntentType",
    "PixelSpacing", "ImagerPixelSpacing",
    # image pixel module
    "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration",
    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "NumberOfFrames",
    # modality and VOI LUT modules
    "RescaleSlope", "RescaleIntercept", "RescaleType", "ModalityLUTSequence",
    "VOILUTSequence", "WindowCenter", "WindowWidth", "VOILUTFunction",
    # pixel data
    "ExtendedOffsetTable", "ExtendedOffsetTableLengths", "PixelData", "FloatPixelData", "DoubleFloatPixelData",
)
_REQUIRED = ("Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated", "BitsStored")
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian
_UNDEFINED_LENGTH = 0xFFFFFFFF


@dataclass(frozen=True)
class DicomInfo:
    """What a DICOM file says about itself, minus anything that identifies the patient."""

    study_instance_uid: str | None
    series_instance_uid: str | None
    sop_instance_uid: str | None
    sop_class_uid: str | None
    modality: str | None  # "MG" for mammography
    laterality: str | None  # ImageLaterality, else Laterality: "L", "R" (or "B", "U" as written)
    view: str | None  # ViewPosition: "CC", "MLO", ...
    photometric_interpretation: str | None  # "MONOCHROME1", "MONOCHROME2", "RGB", ...
    presentation_intent: str | None  # "FOR PRESENTATION" | "FOR PROCESSING" | None
    pixel_spacing_mm: tuple[float, float] | None  # (row, column) from PixelSpacing, else ImagerPixelSpacing
    transfer_syntax_uid: str | None
    rows: int | None
    columns: int | None
    frames: int
    bits_stored: int | None

    @property
    def sop_class_name(self) -> str | None:
        """The SOP class's name, e.g. "Digital Mammography X-Ray Image Storage - For Presentation"."""
        return UID(self.sop_class_uid).name if self.sop_class_uid else None

    @property
    def transfer_syntax_name(self) -> str | None:
        """The transfer syntax's name, e.g. "JPEG 2000 Image Compression (Lossless Only)"."""
        return UID(self.transfer_syntax_uid).name if self.transfer_syntax_uid else None


def looks_like_dicom(data: bytes) -> bool:
    """True for a Part 10 file, or a data set without preamble starting with a group 0002/0008 element."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return True
    return len(data) >= 8 and data[:2] in (b"\x02\x00", b"\x08\x00")


def decodable_transfer_syntaxes() -> tuple[UID, ...]:
    """The transfer syntaxes whose pixel data :func:`decode_dicom` can decode with the installed plugins."""
    found = []
    for syntax in pydicom.uid.AllTransferSyntaxes:
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError:
            continue
        if decoder.is_available:
            found.append(UID(syntax))
    return tuple(found)


def read_dicom_info(source: bytes | Path) -> DicomInfo:
    """The header of DICOM bytes or a DICOM file; a file is read only up to its pixel data."""
    if isinstance(source, (bytes, bytearray)):
        return _info(_parse(io.BytesIO(source), stop_before_pixels=True))
    with Path(source).open("rb") as fp:
        return _info(_parse(fp, stop_before_pixels=True))


def decode_dicom(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode DICOM bytes to a grayscale float32 image in [0, 1] (the pipeline in the module docstring).

    ``bits`` is BitsStored; ``dicom`` carries the :class:`DicomInfo`. The size
    limit is checked on Rows x Columns x frames before any pixel is decoded.
    """
    ds = _parse(io.BytesIO(data), stop_before_pixels=False)
    info = _info(ds)
    if "PixelData" not in ds:
        raise ImageDecodeError(_missing_pixels_message(ds, data))
    missing = [name for name in _REQUIRED if name not in ds]
    if missing:
        raise ImageDecodeError(f"DICOM image pixel module lacks {', '.join(missing)}")
    assert info.rows is not None and info.columns is not None
    check_dimensions(info.columns, info.rows, max_pixels=max_pixels, frames=info.frames)
    if info.frames != 1:
        raise ImageDecodeError(
            f"multi-frame DICOM ({info.frames} frames, e.g. tomosynthesis) is not supported; "
            "send one 2-D mammogram per file"
        )
    photometric = info.photometric_interpretation or ""
    samples = int(ds.SamplesPerPixel)
    grey = photometric in ("MONOCHROME1", "MONOCHROME2")
    colour = photometric in ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT")
    if not ((grey and samples == 1) or (colour and samples == 3)):
        raise ImageDecodeError(
            f"unsupported DICOM photometric interpretation {photometric!r} with {samples} samples per pixel; "
            "expected MONOCHROME1/MONOCHROME2 (or RGB/YBR)"
        )
    raw = _decode_pixels(ds, info)
    if grey:
        pixels = _grey_to_unit(raw, ds, invert=photometric == "MONOCHROME1")
    else:
        luminance = raw[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        pixels = np.clip(luminance / np.float32(2 ** int(ds.BitsStored) - 1), 0.0, 1.0)
    return DecodedImage(pixels=pixels, format="DICOM", bits=int(ds.BitsStored), dicom=info)


def _parse(fp: BinaryIO, *, stop_before_pixels: bool) -> Dataset:
    """Read only the tags in ``_TAGS``; raises :class:`ImageDecodeError` for anything that is not DICOM."""
    head = fp.read(132)
    size = fp.seek(0, io.SEEK_END)
    fp.seek(0)
    if not looks_like_dicom(head):
        raise ImageDecodeError("not a DICOM file: no 'DICM' marker at byte 128 and no DICOM data set at the start")
    try:
        ds = pydicom.dcmread(fp, force=True, stop_before_pixels=stop_before_pixels, specific_tags=list(_TAGS))
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, NotImplementedError) as exc:
        raise ImageDecodeError(f"unreadable DICOM file: {exc}") from None
    if _truncated(ds, size):
        raise ImageDecodeError("truncated DICOM file: it ends inside a data element")
    if len(ds) == 0 and not ds.file_meta:
        raise ImageDecodeError("not a DICOM file: no data elements could be read")
    if "TransferSyntaxUID" not in ds.file_meta:
        # A bare data set: record the encoding pydicom found, which the pixel decoders need.
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            pydicom.uid.ImplicitVRLittleEndian if implicit
            else pydicom.uid.ExplicitVRLittleEndian if little
            else pydicom.uid.ExplicitVRBigEndian
        )
    return ds


def _truncated(ds: Dataset, size: int) -> bool:
    """Whether a kept, not yet converted element declares a value running past the end of the file."""
    for elem in ds.elements():
        tell, length = getattr(elem, "value_tell", None), getattr(elem, "length", None)
        if tell is not None and length not in (None, _UNDEFINED_LENGTH) and tell + length > size:
            return True
    return False


def _missing_pixels_message(ds: Dataset, data: bytes) -> str:
    # A file that declares its pixel module or the Pixel Data tag but holds no
    # Pixel Data element was cut off; anything else simply is not an image.
    if _PIXEL_DATA_TAG in data or "Rows" in ds:
        return "truncated DICOM file: it ends before its Pixel Data (7FE0,0010) is complete"
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        return "DICOM file has float pixel data, not integer Pixel Data (7FE0,0010); not a mammogram"
    sop = UID(str(ds.SOPClassUID)).name if "SOPClassUID" in ds else "SOP class not given"
    return f"DICOM file has no Pixel Data (7FE0,0010): not an image ({sop}), or cut off before its pixels"


def _decode_pixels(ds: Dataset, info: DicomInfo) -> np.ndarray:
    """The stored values, one frame, as an integer array; names the transfer syntax when it cannot."""
    ts = UID(info.transfer_syntax_uid or pydicom.uid.ImplicitVRLittleEndian)
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise ImageDecodeError(f"unsupported DICOM transfer syntax {ts.name} ({ts})") from None
    if not decoder.is_available:
        raise ImageDecodeError(f"unsupported DICOM transfer syntax {ts.name} ({ts}): no decoder plugin is installed")
    if not ts.is_compressed and int(ds.BitsAllocated) % 8 == 0:
        expected = info.rows * info.columns * int(ds.SamplesPerPixel) * int(ds.BitsAllocated) // 8  # type: ignore[operator]
        if len(ds.PixelData) < expected:
            raise ImageDecodeError(
                f"truncated DICOM file: Pixel Data holds {len(ds.PixelData)} bytes, {expected} expected"
            )
    try:
        arr = ds.pixel_array
    except Exception as exc:  # decoders raise many types for corrupt or cut-off codestreams
        raise ImageDecodeError(f"corrupt or truncated {ts.name} pixel data: {_first_line(exc)}") from None
    expected_shape = (info.rows, info.columns) + ((3,) if int(ds.SamplesPerPixel) == 3 else ())
    if arr.shape != expected_shape:
        raise ImageDecodeError(f"DICOM pixel data decoded to shape {arr.shape}, header says {expected_shape}")
    return arr


def _grey_to_unit(stored: np.ndarray, ds: Dataset, *, invert: bool) -> np.ndarray:
    """Stored values → display values in [0, 1], float32 (module docstring, steps 1-3).

    Every step depends on the stored value alone, so up to 16 bits the curve is
    computed once per possible stored value and the image is indexed into it:
    exact, and no float64 copies of a 40-megapixel image.
    """
    lo, hi = _stored_range(ds)
    if hi - lo < 2**16:
        levels = np.arange(lo, hi + 1, dtype=np.int64)
        curve = np.clip(_display_curve(levels, ds, _value_range(apply_modality_lut(levels, ds))), 0.0, 1.0)
        table = (1.0 - curve if invert else curve).astype(np.float32)
        index = np.clip(stored, lo, hi)  # stray bits above BitsStored
        return table[index.astype(np.int32) - lo] if lo else table[index]
    endpoints = apply_modality_lut(np.array([lo, hi], dtype=np.int64), ds)
    curve = np.clip(_display_curve(stored, ds, _value_range(endpoints)), 0.0, 1.0)
    return (1.0 - curve if invert else curve).astype(np.float32)


def _display_curve(stored: np.ndarray, ds: Dataset, modality_range: tuple[float, float]) -> np.ndarray:
    """Modality LUT, then VOI LUT / window / the modality range, to [0, 1] (not yet clipped)."""
    values = apply_modality_lut(stored, ds)
    if _has_voi_lut(ds):
        depth = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        # pydicom's VOI LUT indexes with integers; after a float rescale round to the nearest.
        mapped = apply_voi(np.rint(values).astype(np.int64), ds, 0)
        return mapped.astype(np.float64) / float(2**depth - 1)
    window = _window(ds)
    if window is not None:
        return _apply_window(values, *window)
    lo, hi = modality_range
    return (values - lo) / (hi - lo) if hi > lo else np.zeros(values.shape)


def _stored_range(ds: Dataset) -> tuple[int, int]:
    """The values BitsStored can hold, signed or not."""
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _value_range(values: np.ndarray) -> tuple[float, float]:
    return float(np.min(values)), float(np.max(values))


def _has_voi_lut(ds: Dataset) -> bool:
    seq = ds.get("VOILUTSequence")
    return bool(seq) and "LUTDescriptor" in seq[0] and "LUTData" in seq[0]


def _window(ds: Dataset) -> tuple[float, float, str] | None:
    """(center, width, function) of the first window, or None when absent or unusable."""
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    try:
        center, width = float(_first(ds.WindowCenter)), float(_first(ds.WindowWidth))
    except (TypeError, ValueError):
        log.warning("ignoring DICOM window: center/width are not numbers")
        return None
    function = str(ds.get("VOILUTFunction", "") or "LINEAR").strip().upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        log.warning("unknown VOI LUT function %r, using LINEAR", function)
        function = "LINEAR"
    if width < (1 if function == "LINEAR" else np.finfo(float).tiny):
        log.warning("ignoring DICOM window with width %s for %s", width, function)
        return None
    return center, width, function


def _apply_window(x: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """Window to [0, 1] (PS3.3 C.11.2.1.2-3).

    LINEAR: 0 for ``x <= c - 0.5 - (w-1)/2``, 1 for ``x > c - 0.5 + (w-1)/2``,
    else ``(x - (c - 0.5)) / (w - 1) + 0.5``. LINEAR_EXACT: ``(x - c) / w + 0.5``
    clipped. SIGMOID: ``1 / (1 + exp(-4 (x - c) / w))``.
    """
    x = x.astype(np.float64, copy=False)
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    if function == "LINEAR":
        center, width = center - 0.5, width - 1.0
        if width == 0:
            return (x > center).astype(np.float64)
    return np.clip((x - center) / width + 0.5, 0.0, 1.0)


def _info(ds: Dataset) -> DicomInfo:
    ts = ds.file_meta.get("TransferSyntaxUID") if ds.file_meta else None
    return DicomInfo(
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        series_instance_uid=_text(ds, "SeriesInstanceUID"),
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        sop_class_uid=_text(ds, "SOPClassUID"),
        modality=_text(ds, "Modality"),
        laterality=(_text(ds, "ImageLaterality") or _text(ds, "Laterality") or "").upper() or None,
        view=_text(ds, "ViewPosition"),
        photometric_interpretation=_text(ds, "PhotometricInterpretation"),
        presentation_intent=_text(ds, "PresentationIntentType"),
        pixel_spacing_mm=_spacing(ds),
        transfer_syntax_uid=str(ts) if ts else None,
        rows=_int(ds, "Rows"),
        columns=_int(ds, "Columns"),
        frames=_int(ds, "NumberOfFrames") or 1,
        bits_stored=_int(ds, "BitsStored"),
    )


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    text = str(value).strip() if value is not None else ""
    return text or None


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _spacing(ds: Dataset) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            if value is not None and len(value) == 2 and float(value[0]) > 0 and float(value[1]) > 0:
                return float(value[0]), float(value[1])
        except (TypeError, ValueError):
            continue
    return None


def _first(value: Any) -> Any:
    """The first of a multi-valued element, or the value itself."""
    if isinstance(value, (str, bytes)):
        return value
    try:
        return next(iter(value))
    except (TypeError, StopIteration):
        return value


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
