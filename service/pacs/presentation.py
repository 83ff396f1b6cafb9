"""A Grayscale Softcopy Presentation State that outlines the high-CAM region on the source image.

Chosen over a Parametric Map because PACS viewers widely display GSPS
graphics over the original image, at its full resolution and with the
radiologist's own windowing, whereas parametric maps are shown by few
mammography viewers. The outlines (:mod:`service.pacs.outline`) are closed
POLYLINE graphics in PIXEL units on a layer ``DEEPMINER_CAM``, with a text
object naming the class and the level. Graphic Data puts the top left corner
of the top left pixel at (0, 0), so a pixel centre (r, c) is (c + 0.5, r + 0.5).

The source's Modality and VOI LUTs are carried over (highdicom reads them from
the referenced image); a MONOCHROME1 source gets an INVERSE presentation LUT,
so the image looks as it does without the presentation state.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from service.explainer import ExplanationResult
from service.pacs.equipment import MANUFACTURER, Equipment
from service.pacs.outline import HIGH_CAM_LEVEL, high_cam_outlines

SERIES_NUMBER = 9003
SERIES_DESCRIPTION = "DeepMiner high-CAM outline"
CONTENT_LABEL = "DEEPMINER_CAM"
LAYER = "DEEPMINER_CAM"
_YELLOW = (255, 255, 0)


def label(result: ExplanationResult) -> str:
    """The text shown with the outline, ASCII only."""
    return f"DeepMiner: {result.explained_class} CAM >= {HIGH_CAM_LEVEL:.0%} of its range"


def build_presentation(
    result: ExplanationResult,
    source: Dataset,
    equipment: Equipment,
    *,
    series_uid: str,
    sop_uid: str,
) -> hd.pr.GrayscaleSoftcopyPresentationState:
    """The GSPS outlining ``result``'s high-CAM region on the image whose header is ``source``."""
    height, width = result.image_shape
    layer = hd.pr.GraphicLayer(
        layer_name=LAYER,
        order=1,
        description=f"Outline of the high-CAM region ({result.explained_class})",
        display_color=hd.color.CIELabColor.from_rgb(*_YELLOW),
    )
    graphics = [
        hd.pr.GraphicObject(
            graphic_type=hd.pr.GraphicTypeValues.POLYLINE,
            graphic_data=np.stack([outline[:, 1] + 0.5, outline[:, 0] + 0.5], axis=1),
            units=hd.pr.AnnotationUnitsValues.PIXEL,
        )
        for outline in high_cam_outlines(result.cam, result.mapping)
    ]
    text = hd.pr.TextObject(
        text_value=label(result),
        units=hd.pr.AnnotationUnitsValues.PIXEL,
        bounding_box=(1.0, 1.0, float(width - 1), float(max(2, min(height - 1, height // 20)))),
        text_justification=hd.pr.TextJustificationValues.LEFT,
    )
    annotation = hd.pr.GraphicAnnotation(
        referenced_images=[source],
        graphic_layer=layer,
        graphic_objects=graphics or None,
        text_objects=[text],
    )
    inverse = source.get("PhotometricInterpretation") == "MONOCHROME1"
    presentation = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[source],
        series_instance_uid=series_uid,
        series_number=SERIES_NUMBER,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=equipment.model_label,
        software_versions=equipment.software_versions,  # type: ignore[arg-type]  # a list: pydicom refuses tuples
        device_serial_number=equipment.serial_number,
        content_label=CONTENT_LABEL,
        content_description=label(result)[:64],
        graphic_layers=[layer],
        graphic_annotations=[annotation],
        presentation_lut_transformation=hd.PresentationLUTTransformation(
            presentation_lut_shape="INVERSE" if inverse else "IDENTITY"
        ),
        series_description=SERIES_DESCRIPTION,
    )
    laterality = str(source.get("ImageLaterality") or source.get("Laterality") or "")
    # General Series Laterality, Type 2C (a paired organ): the source's side, else empty for unknown.
    presentation.Laterality = laterality if laterality in ("L", "R") else ""
    return presentation
