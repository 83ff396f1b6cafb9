"""The paper's explanation: up to five labelled units among the top eight, each with a sentence."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from annotations.lexicon import CancerAssociation, Category, Source
from service.explanation import Explanation, NamedLabel, NamedUnit
from service.schemas.annotations import UnitIndex

Rank = Annotated[int, Field(description="1-based position among all units by influence on the explained class.")]
Influence = Annotated[float, Field(description="max_xy A_k(x, y) * w_ck for the explained class c.")]


class NamedLabelOut(BaseModel):
    """One label of a unit in the explanation; the annotators who gave the same label are counted together."""

    label: str = Field(description="The short label, as its first annotator spelled it.")
    category: Category = Field(description="BI-RADS lexicon category.")
    cancer_association: CancerAssociation = Field(description="Are the unit's images associated with breast cancer?")
    annotators: int = Field(description="How many annotators' latest label of the unit this is.")
    automatic: bool = Field(
        description="True for a label made by an automatic procedure (admitted only with explain_automatic_labels)."
    )

    @classmethod
    def from_label(cls, label: NamedLabel) -> NamedLabelOut:
        return cls.model_validate(label, from_attributes=True)


class NamedUnitOut(BaseModel):
    """A labelled unit among the top eight, with the sentence that explains it."""

    unit_id: UnitIndex
    rank: Rank
    influence: Influence
    experts: int = Field(description="Experts whose label of the unit counts (the denominator of 'n of m experts').")
    labels: list[NamedLabelOut] = Field(
        description="The unit's labels that count: expert ones first, most annotators first."
    )
    text: str = Field(
        description="One readable sentence built from the labels.",
        examples=[
            "Unit 1813 (influence 4.2, rank 1): 'Spiculated mass margin' — Mass; associated with cancer (2 of 2 experts)"
        ],
    )

    @classmethod
    def from_unit(cls, unit: NamedUnit) -> NamedUnitOut:
        return cls.model_validate(unit, from_attributes=True)


class ExplanationOut(BaseModel):
    """The paper's explanation: up to five labelled units among the eight most influential, most influential first.

    A unit counts when it carries a label made under this model bundle that names
    a phenomenon (not answered "not recognisable"), from an expert, or from an
    automatic procedure when the explain_automatic_labels setting allows it.
    """

    considered: int = Field(
        description="How many of the most influential units were looked at: 8, or fewer in a smaller layer."
    )
    max_units: int = Field(description="The most units the explanation names: 5.")
    sources: list[Source] = Field(
        description="Label sources admitted: `expert`, and `automatic` when explain_automatic_labels is true."
    )
    units: list[NamedUnitOut] = Field(
        description="The named units; empty when none of the considered units is labelled."
    )
    labels_available: bool = Field(
        description=(
            "False while the unit-label store cannot be read (a database outage): the explanation is computed "
            "without labels, so `units` and every unit's `annotations` are empty because the labels are unknown, "
            "not because there are none. True otherwise."
        )
    )

    @classmethod
    def from_explanation(cls, explanation: Explanation) -> ExplanationOut:
        return cls.model_validate(explanation, from_attributes=True)
