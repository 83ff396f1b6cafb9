"""The CAM overlay burned into a Secondary Capture image, for viewers that show nothing but pixels.

The overlay is the one ``/explain?overlays=png`` draws (:class:`service.overlays.Canvas`:
the CAM upsampled with :func:`deepminer.grid.upsample` onto a copy of the image
whose longer side is at most ``max_side``, jet colour map, opacity growing with
the normalised CAM), with a two-line caption naming the explained class, its
image-level score (``/explain``'s ``scores``, with the rule) and the model. The
caption identifies neither patient nor date, so Burned In Annotation is ``NO``.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset

from service.explainer import ExplanationResult
from service.overlays import Canvas
from service.pacs.equipment import Equipment
from service.pacs.series import result_instance

SERIES_NUMBER = 9002
SERIES_DESCRIPTION = "DeepMiner CAM overlay"
CAPTURE_MAX_SIDE = 2048
# Placeholder for highdicom, which accepts single-letter directions only; the
# source's own Patient Orientation (mammography uses compound ones such as
# "FL") replaces it, since the capture shows the image as stored.
_ANY_ORIENTATION = ("A", "F")


def caption(result: ExplanationResult, equipment: Equipment) -> tuple[str, str]:
    """The burned-in caption's two lines, ASCII only: the class and its image-level score, then the model."""
    score = float(result.scores[result.classes.index(result.explained_class)])
    return (
        f"DeepMiner CAM: {result.explained_class} ({result.score_rule} score {score:.2f})",
        f"model {equipment.model_id}",
    )


def _burn_caption(rgb: np.ndarray, lines: tuple[str, ...]) -> np.ndarray:
    """``lines`` in white on a black band at the top left of ``rgb``, in the largest font (8 to 48 px) that fits."""
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    text = "\n".join(lines)
    size = max(8, min(48, image.width // 30))
    while True:
        font = ImageFont.load_default(size=size)
        margin = max(2, size // 3)
        _, _, right, bottom = draw.multiline_textbbox((margin, margin), text, font=font)
        if right + margin <= image.width or size == 8:
            break
        size -= 1
    draw.rectangle((0, 0, min(image.width, right + margin), bottom + margin), fill=(0, 0, 0))
    draw.multiline_text((margin, margin), text, fill=(255, 255, 255), font=font)
    return np.asarray(image)


def overlay_pixels(result: ExplanationResult, equipment: Equipment, *, max_side: int = CAPTURE_MAX_SIDE) -> np.ndarray:
    """The captioned overlay, ``(h, w, 3)`` uint8 RGB."""
    canvas = Canvas.for_image(result.pixels, result.mapping, max_side=max_side)
    return _burn_caption(canvas.overlay(result.cam), caption(result, equipment))


def build_capture(
    result: ExplanationResult,
    source: Dataset,
    equipment: Equipment,
    *,
    series_uid: str,
    sop_uid: str,
    max_side: int = CAPTURE_MAX_SIDE,
) -> hd.sc.SCImage:
    """The Secondary Capture of ``result``'s CAM overlay, in the study of the image whose header is ``source``."""
    laterality = str(source.get("ImageLaterality") or source.get("Laterality") or "")
    capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=overlay_pixels(result, equipment, max_side=max_side),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        patient_orientation=_ANY_ORIENTATION,
        laterality=laterality if laterality in ("L", "R") else None,
        transfer_syntax_uid=hd.UID("1.2.840.10008.1.2.1"),
        **result_instance(
            equipment,
            series_uid=series_uid,
            sop_uid=sop_uid,
            series_number=SERIES_NUMBER,
            series_description=SERIES_DESCRIPTION,
        ),
    )
    capture.PatientOrientation = list(source.PatientOrientation) if source.get("PatientOrientation") else []
    if "Laterality" not in capture:
        capture.Laterality = ""  # Type 2C, required for a paired organ: empty for unknown
    capture.BurnedInAnnotation = "NO"
    capture.ImageComments = "; ".join(caption(result, equipment))
    capture.DerivationDescription = (
        f"Class activation map of {result.explained_class} (DeepMiner) blended over the source image"
    )[:1024]
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    capture.SourceImageSequence = [reference]
    return capture
