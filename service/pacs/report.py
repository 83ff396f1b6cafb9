"""The explanation as a Comprehensive SR holding a TID 1500 Measurement Report.

Content, each measurement group (TID 1501) naming the model as its algorithm
(name = bundle name, version = bundle sha256, parameters including
``image_score=<rule>``) and the source image:

- ``classification``: the image-level score of every class (UCUM ``1``; the
  ``scores`` of ``/explain``, under the bundle's rule, :mod:`deepminer.scoring`),
  the predicted class (their argmax) and the explained class;
- one group per unit of the explanation (:mod:`service.explanation`: up to five
  units among the top eight that carry a label of this bundle naming a
  phenomenon), tracked as ``unit <id>``: finding type = the unit, finding
  category = the BI-RADS category of its first label, a qualitative evaluation
  per label (an expert-named concept, or an automatically named one when
  automatic labels are admitted), and its influence, rank, maximum activation
  and class weight. Labels of other bundles never appear.

The source image is referenced from every group, from the image library
(when its header has what TID 1603 needs) and as evidence.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from highdicom.sr.templates import ImageLibraryEntryDescriptors
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dicom_codes

from service.explainer import ExplanationResult
from service.explanation import NamedUnit
from service.pacs import codes
from service.pacs.equipment import DEVICE_NAME, MANUFACTURER, Equipment
from service.pacs.series import result_instance

SERIES_NUMBER = 9001
SERIES_DESCRIPTION = "DeepMiner explanation (SR)"


def _algorithm(equipment: Equipment, score_rule: str) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=equipment.model_name,
        version=equipment.model_version,
        parameters=[
            f"architecture={equipment.architecture}",
            f"service={equipment.software_version}",
            f"image_score={score_rule}",
        ],
        manufacturer=MANUFACTURER,
    )


def _classification(
    result: ExplanationResult, source: hd.sr.SourceImageForMeasurementGroup, algorithm: hd.sr.AlgorithmIdentification
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="classification"),
        finding_type=codes.CLASSIFICATION,
        algorithm_id=algorithm,
        source_images=[source],
        measurements=[
            hd.sr.Measurement(
                name=codes.class_score(name),
                value=float(score),
                unit=codes.NO_UNITS,
                algorithm_id=algorithm,
            )
            for name, score in zip(result.classes, result.scores)
        ],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(codes.PREDICTED_CLASS, codes.class_concept(result.predicted_class)),
            hd.sr.QualitativeEvaluation(codes.EXPLAINED_CLASS, codes.class_concept(result.explained_class)),
        ],
    )


def _unit(
    unit: NamedUnit, source: hd.sr.SourceImageForMeasurementGroup, algorithm: hd.sr.AlgorithmIdentification
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    def measurement(name: hd.sr.CodedConcept, value: float, unit_code: hd.sr.CodedConcept) -> hd.sr.Measurement:
        return hd.sr.Measurement(name=name, value=value, unit=unit_code, algorithm_id=algorithm)

    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"unit {unit.unit_id}"),
        finding_type=codes.unit_concept(unit.unit_id),
        finding_category=codes.category_concept(unit.labels[0].category),
        algorithm_id=algorithm,
        source_images=[source],
        measurements=[
            measurement(codes.INFLUENCE, unit.influence, codes.NO_UNITS),
            measurement(codes.INFLUENCE_RANK, float(unit.rank), codes.RANK_UNIT),
            measurement(codes.MAX_ACTIVATION, unit.max_activation, codes.NO_UNITS),
            measurement(codes.CLASS_WEIGHT, unit.weight, codes.NO_UNITS),
        ],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(codes.label_name(label), codes.label_concept(label)) for label in unit.labels
        ],
    )


def _image_library(source: Dataset) -> Sequence[Dataset] | None:
    """The source for the image library, or None when its header lacks what the entry needs.

    highdicom describes a projection image (TID 1603) by its Patient
    Orientation and Imager Pixel Spacing; a source without them is still
    referenced by every group and as evidence.
    """
    try:
        ImageLibraryEntryDescriptors(source)
    except (AttributeError, IndexError, KeyError, ValueError):
        return None
    return [source]


def build_report(
    result: ExplanationResult,
    source: Dataset,
    equipment: Equipment,
    *,
    series_uid: str,
    sop_uid: str,
) -> hd.sr.ComprehensiveSR:
    """The Comprehensive SR of ``result`` for the source image whose header is ``source``, in its study."""
    algorithm = _algorithm(equipment, result.score_rule)
    reference = hd.sr.SourceImageForMeasurementGroup.from_source_image(source)
    groups = [_classification(result, reference, algorithm)]
    groups += [_unit(unit, reference, algorithm) for unit in result.explanation.units]
    observer = hd.sr.ObserverContext(
        observer_type=dicom_codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=equipment.device_uid,
            name=DEVICE_NAME,
            manufacturer_name=MANUFACTURER,
            model_name=equipment.model_label,
            serial_number=equipment.serial_number,
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.MAMMOGRAPHY,
        imaging_measurements=groups,
        referenced_images=_image_library(source),
    )
    return hd.sr.ComprehensiveSR(
        evidence=[source],
        content=report[0],
        is_complete=True,
        coding_schemes=[codes.CODING_SCHEME],
        **result_instance(
            equipment,
            series_uid=series_uid,
            sop_uid=sop_uid,
            series_number=SERIES_NUMBER,
            series_description=SERIES_DESCRIPTION,
        ),
    )
