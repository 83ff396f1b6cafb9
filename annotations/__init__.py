"""Unit-label store: versioned expert and automatic names of the CNN's layer4 units.

The service and the command line use :class:`AnnotationStore` and the plain
records it returns; nothing outside this package handles ORM objects.
"""

from annotations.db import create_engine_from_url, init_db, session_factory
from annotations.errors import (
    AnnotationConflictError,
    AnnotationError,
    AnnotationValidationError,
    StoreFullError,
    StoreUnavailableError,
)
from annotations.io import export_annotations, import_annotations, load_annotation_rows
from annotations.lexicon import CANCER_ASSOCIATIONS, CATEGORIES, PHENOMENA, SOURCES
from annotations.records import (
    RECORD_FIELDS,
    AnnotationRecord,
    LabelAnswers,
    NewAnnotation,
    names_phenomenon,
    record_values,
)
from annotations.store import AnnotationStore

__all__ = [
    "CANCER_ASSOCIATIONS",
    "CATEGORIES",
    "PHENOMENA",
    "RECORD_FIELDS",
    "SOURCES",
    "AnnotationConflictError",
    "AnnotationError",
    "AnnotationRecord",
    "AnnotationStore",
    "AnnotationValidationError",
    "LabelAnswers",
    "NewAnnotation",
    "StoreFullError",
    "StoreUnavailableError",
    "create_engine_from_url",
    "export_annotations",
    "import_annotations",
    "init_db",
    "load_annotation_rows",
    "names_phenomenon",
    "record_values",
    "session_factory",
]
