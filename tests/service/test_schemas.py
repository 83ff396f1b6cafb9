"""The label wire models carry exactly the fields the store defines (LabelAnswers, the stored record)."""

from __future__ import annotations

from dataclasses import fields

from annotations import LabelAnswers
from service.schemas import AnnotationIn, AnnotationOut, BatchAnnotationIn
from service.units import LabelWrite, UnitAnnotation


def test_a_label_in_is_the_survey_answers_and_who_gave_them() -> None:
    answers = {f.name for f in fields(LabelAnswers)}
    assert set(AnnotationIn.model_fields) == answers | {"annotator"}
    assert (
        set(BatchAnnotationIn.model_fields)
        == {f.name for f in fields(LabelWrite)}
        == answers
        | {
            "annotator",
            "unit_id",
        }
    )


def test_a_label_out_is_the_stored_record_flagged() -> None:
    assert set(AnnotationOut.model_fields) == {f.name for f in fields(UnitAnnotation)}
