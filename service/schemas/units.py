"""Layer4 units: the bundle's ranking with each unit's labels, and the 2-D unit embedding."""

from __future__ import annotations

from pydantic import BaseModel, Field

from service.schemas.annotations import LatestAnnotations, UnitIndex
from service.units import LabelTerm, UnitEmbedding, UnitInfo, UnitOverview


class UnitOut(BaseModel):
    """A layer4 unit: its place in the bundle's ranking and its current labels."""

    unit_id: UnitIndex
    threshold: float = Field(description="Activation threshold of the unit's binarised map (the ranking's quantile).")
    ranks: dict[str, int] = Field(description="1-based rank per class that ranks the unit; empty when unranked.")
    counts: dict[str, int] = Field(description="Per class, in how many hold-out images' top lists the unit appeared.")
    mean_influence: dict[str, float] = Field(description="Per ranking class, the unit's mean influence.")
    annotations: LatestAnnotations

    @classmethod
    def from_info(cls, info: UnitInfo) -> UnitOut:
        return cls.model_validate({**vars(info.ranking), "annotations": info.annotations}, from_attributes=True)


class ClassCoverageOut(BaseModel):
    """How much of a class's per-image top lists its ranked units account for."""

    coverage: float = Field(description="Share of all per-image top-n slots filled by the ranked units.")
    slots_total: int = Field(description="top_per_image × number of hold-out images.")
    ranked_units: int


class UnitsResponse(BaseModel):
    """The units the bundle ranked for its classes (the union, best rank first)."""

    model_id: str = Field(description="The loaded bundle's id.")
    bundle_hash: str = Field(description="The loaded bundle's hash; new annotations are recorded under it.")
    classes: list[str]
    num_units: int = Field(description="Units in the layer; valid ids are 0 to num_units - 1.")
    num_images: int = Field(description="Hold-out images the ranking used.")
    top_per_image: int
    top_per_class: int
    threshold_quantile: float
    coverage: dict[str, ClassCoverageOut]
    units: list[UnitOut]

    @classmethod
    def from_overview(cls, overview: UnitOverview) -> UnitsResponse:
        units = [UnitOut.from_info(u) for u in overview.units]
        return cls.model_validate({**vars(overview), "units": units}, from_attributes=True)


class EmbeddedUnit(BaseModel):
    """A unit's place in the 2-D embedding, with its labels."""

    unit_id: UnitIndex
    x: float = Field(description="First principal component.")
    y: float = Field(description="Second principal component.")
    ranked: bool = Field(description="Whether the bundle's ranking lists the unit for some class.")
    annotations: LatestAnnotations


class EmbeddingResponse(BaseModel):
    """Every unit of the layer placed in 2-D: PCA of its max activations over a reference image set (Lu & Perer)."""

    model_id: str
    bundle_hash: str
    method: str = Field(description="How the embedding was made, as the bundle records it.")
    num_images: int = Field(description="Reference images: the entries of each unit's vector of max activations.")
    explained_variance_ratio: list[float] = Field(description="Share of the variance each of the two components holds.")
    units: list[EmbeddedUnit] = Field(description="Every unit, by unit id.")

    @classmethod
    def from_embedding(cls, embedding: UnitEmbedding) -> EmbeddingResponse:
        return cls.model_validate(embedding, from_attributes=True)


class LabelTermOut(BaseModel):
    """A label given to some units, with its BI-RADS category."""

    label: str
    category: str
    unit_ids: list[int] = Field(description="Units whose latest label of some annotator is this label and category.")
    current_bundle: bool = Field(description="Whether some unit carries it under the loaded bundle.")


class LabelVocabularyResponse(BaseModel):
    """Every label that names a phenomenon, under any bundle: labels of the loaded bundle first, then most units."""

    labels: list[LabelTermOut]

    @classmethod
    def from_terms(cls, terms: tuple[LabelTerm, ...]) -> LabelVocabularyResponse:
        return cls.model_validate({"labels": terms}, from_attributes=True)
