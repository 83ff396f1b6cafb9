"""Request and response bodies of the HTTP API (pydantic at the edge, dataclasses inside), one module per resource.

Every model is exported here, so ``from service.schemas import ExplainResponse``
works whichever module defines it.
"""

from service.schemas.annotations import (
    MAX_BATCH_ANNOTATIONS,
    AnnotationBatchIn,
    AnnotationBatchOut,
    AnnotationIn,
    AnnotationOut,
    BatchAnnotationIn,
    LatestAnnotations,
    UnitHistory,
    UnitIndex,
)
from service.schemas.errors import ErrorDetail, ErrorResponse
from service.schemas.explain import AuxiliaryOut, ExplainedUnit, ExplainResponse, by_class
from service.schemas.explanation import ExplanationOut, Influence, NamedLabelOut, NamedUnitOut, Rank
from service.schemas.health import Liveness, Readiness
from service.schemas.image import DicomOut, ImageOut
from service.schemas.maps import MAP_CONVENTION, SIGNIFICANT_DIGITS, GridToImage, Map, MapConvention, MapEncoding
from service.schemas.model import ModelOut
from service.schemas.overlays import Overlays, UnitOverlay
from service.schemas.quality import (
    QualityAuc,
    QualityBackground,
    QualityBar,
    QualityBreakdown,
    QualityConceptNaming,
    QualityPointingGame,
    QualityPredicted,
    QualityResponse,
)
from service.schemas.queries import LabelReportOut, RegionOut, RegionQueryResponse, RegionUnit
from service.schemas.suspicious import PixelBox, SuspiciousImage, SuspiciousPatch, SuspiciousPatchesResponse
from service.schemas.units import (
    ClassCoverageOut,
    EmbeddedUnit,
    EmbeddingResponse,
    LabelTermOut,
    LabelVocabularyResponse,
    UnitOut,
    UnitsResponse,
)
from service.schemas.visualisation import ContextBox, PatchBox, UnitVisualisation, VisualisedPatch

__all__ = [
    "MAP_CONVENTION",
    "MAX_BATCH_ANNOTATIONS",
    "SIGNIFICANT_DIGITS",
    "AnnotationBatchIn",
    "AnnotationBatchOut",
    "AnnotationIn",
    "AnnotationOut",
    "AuxiliaryOut",
    "BatchAnnotationIn",
    "ClassCoverageOut",
    "ContextBox",
    "DicomOut",
    "EmbeddedUnit",
    "EmbeddingResponse",
    "ErrorDetail",
    "ErrorResponse",
    "ExplainResponse",
    "ExplainedUnit",
    "ExplanationOut",
    "GridToImage",
    "ImageOut",
    "Influence",
    "LabelReportOut",
    "LabelTermOut",
    "LabelVocabularyResponse",
    "LatestAnnotations",
    "Liveness",
    "Map",
    "MapConvention",
    "MapEncoding",
    "ModelOut",
    "NamedLabelOut",
    "NamedUnitOut",
    "Overlays",
    "PatchBox",
    "PixelBox",
    "QualityAuc",
    "QualityBackground",
    "QualityBar",
    "QualityBreakdown",
    "QualityConceptNaming",
    "QualityPointingGame",
    "QualityPredicted",
    "QualityResponse",
    "Rank",
    "Readiness",
    "RegionOut",
    "RegionQueryResponse",
    "RegionUnit",
    "SuspiciousImage",
    "SuspiciousPatch",
    "SuspiciousPatchesResponse",
    "UnitHistory",
    "UnitIndex",
    "UnitOut",
    "UnitOverlay",
    "UnitVisualisation",
    "UnitsResponse",
    "VisualisedPatch",
    "by_class",
]
