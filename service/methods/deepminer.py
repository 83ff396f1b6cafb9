"""DeepMiner (DESIGN.md §3): the class probability maps, the CAM and the most influential units, named.

``CAM_c(x, y) = Σ_k w_ck A_k(x, y)`` (Zhou et al. 2016) and the influence
``max_xy A_k(x, y) · w_ck`` of every unit on the explained class; the top-k
units come with their maps and annotations, and the paper's explanation names
the labelled ones among the top eight (:mod:`service.explanation`). All
formulas come from :mod:`deepminer`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final

import numpy as np

from annotations import AnnotationRecord, StoreUnavailableError
from deepminer.bundle import BundleError
from deepminer.dicom import DicomInfo
from deepminer.formulas import class_activation_map, influence, softmax, top_units, unit_max_activations
from deepminer.grid import GridMapping
from deepminer.scoring import breast_cells, classifier_probabilities, image_scores, input_gray
from service.auxiliary import AuxiliaryExplanation, explain_aux
from service.errors import InvalidParameterError
from service.explanation import CONSIDERED_UNITS, Explanation, build_explanation
from service.inference import Inference, Stopwatch
from service.methods.base import MethodContext, MethodResult

if TYPE_CHECKING:
    from service.schemas import ExplainResponse, MapEncoding

log = logging.getLogger(__name__)

METHOD: Final = "DeepMiner: CAM (Zhou et al. 2016) and unit influence max_xy A_k(x, y) * w_ck"


@dataclass(frozen=True)
class UnitExplanation:
    """One of the most influential units for the explained class.

    ``influence = max_activation * weight`` (DESIGN.md §2); ``activation_map`` is
    the unit's layer4 channel ``A_k`` on the feature grid; ``annotations``: its
    latest annotation per annotator that names a phenomenon, under any bundle.
    """

    unit_id: int
    rank: int
    influence: float
    max_activation: float
    weight: float
    activation_map: np.ndarray
    annotations: tuple[AnnotationRecord, ...]


@dataclass(frozen=True)
class ExplanationResult(MethodResult):
    """Everything one explanation found; maps are on the layer4 grid described by ``mapping``."""

    dicom: DicomInfo | None  # the upload's DICOM identifiers and acquisition tags; None for other formats
    pixels: np.ndarray  # (H, W) the decoded upload in [0, 1], for overlays
    classes: tuple[str, ...]
    scores: np.ndarray  # (C,) image-level score of each class under score_rule (deepminer.scoring)
    score_rule: str  # the bundle's image-score rule, e.g. breast_peak
    classifier_probabilities: np.ndarray  # (C,) softmax of the spatially averaged logits: the patch classifier
    peak_probabilities: np.ndarray  # (C,) max over the grid of each probability map
    predicted_class: str  # argmax of scores
    explained_class: str
    probability_maps: np.ndarray  # (C, h, w) per-location softmax
    cam: np.ndarray  # (h, w) CAM of the explained class
    mapping: GridMapping
    units: tuple[UnitExplanation, ...]  # the top-k
    explanation: Explanation  # the labelled units among the top eight (service.explanation)
    aux: AuxiliaryExplanation | None = None  # the auxiliary features used, for bundles that have them


@dataclass(frozen=True)
class DeepMinerParams:
    """A validated request: ``class_name`` (None: the predicted class), ``top_k`` and how to write the maps."""

    class_name: str | None
    top_k: int
    maps: MapEncoding = "uint16"
    overlay_max_side: int | None = None


class DeepMiner:
    """The paper's explanation of one mammogram; see the module docstring."""

    name: ClassVar[str] = "deepminer"
    title: ClassVar[str] = METHOD
    takes_aux: ClassVar[bool] = True
    route: ClassVar[str | None] = "/explain"

    def __init__(self, context: MethodContext) -> None:
        bundle = context.bundle
        self.context = context
        self.classes = tuple(bundle.classes)
        self.weight, self.bias = bundle.head
        self.aux_features = bundle.aux_features
        self.aux_weight = bundle.aux_weight
        if self.aux_weight is not None and self.aux_weight.shape != (len(self.classes), len(self.aux_features)):
            raise BundleError(
                f"{bundle.root}/head.npz holds aux_weight {self.aux_weight.shape}, but meta.json declares "
                f"{len(self.classes)} classes and {len(self.aux_features)} auxiliary features"
            )
        if self.weight.shape != (len(self.classes), bundle.num_units) or self.bias.shape != (len(self.classes),):
            raise BundleError(
                f"{bundle.root}/head.npz holds weight {self.weight.shape} and bias {self.bias.shape}, but meta.json "
                f"declares {len(self.classes)} classes and {bundle.num_units} units"
            )

    def params(
        self,
        *,
        class_name: str | None,
        top_k: int,
        maps: MapEncoding = "uint16",
        overlay_max_side: int | None = None,
    ) -> DeepMinerParams:
        """Check a request before any work: ``class_name`` must be a class, ``1 <= top_k <= max_top_k``."""
        if class_name is not None and class_name not in self.classes:
            raise InvalidParameterError(
                f"class_name must be one of {', '.join(self.classes)}; got {class_name!r}", field="class_name"
            )
        if not 1 <= top_k <= self.context.max_top_k:
            raise InvalidParameterError(
                f"top_k must be between 1 and {self.context.max_top_k}; got {top_k}", field="top_k"
            )
        return DeepMinerParams(class_name=class_name, top_k=top_k, maps=maps, overlay_max_side=overlay_max_side)

    def parse(self, query: Mapping[str, str]) -> DeepMinerParams:
        """``class_name`` and ``top_k`` (default: the top_k setting) from a query string."""
        top_k = query.get("top_k", str(self.context.default_top_k))
        if not top_k.isdigit():
            raise InvalidParameterError(f"top_k must be a whole number; got {top_k!r}", field="top_k")
        return self.params(class_name=query.get("class_name"), top_k=int(top_k))

    def score(self, x: np.ndarray, logits: np.ndarray, probability_maps: np.ndarray) -> np.ndarray:
        """The image-level scores ``(C,)`` under the bundle's rule, over the breast cells of the network input ``x``."""
        bundle = self.context.bundle
        cells = breast_cells(input_gray(x, bundle.mean, bundle.std), (logits.shape[1], logits.shape[2]))
        return image_scores(probability_maps, logits, cells, classes=self.classes, rule=bundle.score_rule,
                            patch_cells=bundle.patch_cells)

    def run(self, inference: Inference, params: DeepMinerParams, clock: Stopwatch) -> ExplanationResult:
        """Explain ``inference`` for ``params.class_name`` (default: the predicted class) with ``params.top_k`` units.

        The predicted class is the argmax of the image-level scores (:meth:`score`). The result's
        ``explanation`` names the labelled units among the top eight, whatever ``top_k``.
        Closes the ``explain`` and ``annotations`` stages.
        """
        logits, features = inference.logits, inference.features
        probability_maps = softmax(logits, axis=0)
        probabilities = classifier_probabilities(logits)
        peak = probability_maps.reshape(len(self.classes), -1).max(axis=1)
        # The mean of the map is the patch classifier, but a lesion covers a few
        # percent of the cells, so the image is ranked by the map over the breast.
        scores = self.score(inference.x, logits, probability_maps)
        predicted = int(np.argmax(scores))
        explained = predicted if params.class_name is None else self.classes.index(params.class_name)
        cam = class_activation_map(features, self.weight, explained)
        maxima = unit_max_activations(features)  # max_xy A_k(x, y) of every unit, computed once
        # A unit's maximum as a 1 x 1 map has the same maximum, so influence() (the one formula) needs no second pass.
        influences = influence(maxima[:, None, None], self.weight)[explained]
        # The explanation looks at the top eight whatever top_k, so rank at least that many.
        top = top_units(influences, max(params.top_k, CONSIDERED_UNITS))
        maps = features[top]  # fancy indexing copies only the ranked units' maps
        clock.lap("explain")

        labels = self._labels([int(u) for u in top])
        ranked = tuple(
            UnitExplanation(
                unit_id=int(unit),
                rank=rank,
                influence=float(influences[unit]),
                max_activation=float(maxima[unit]),
                weight=float(self.weight[explained, unit]),
                activation_map=activation_map,
                annotations=labels.get(int(unit), ()) if labels is not None else (),
            )
            for rank, (unit, activation_map) in enumerate(zip(top, maps), start=1)
        )
        explanation = build_explanation(
            ranked,
            bundle_hash=self.context.bundle.hash,
            include_automatic=self.context.explain_automatic_labels,
            labels_available=labels is not None,
        )
        clock.lap("annotations")
        image = inference.image
        return ExplanationResult(
            **MethodResult.describing(inference, method=self.title, model=self.context.model, clock=clock),
            dicom=image.dicom,
            pixels=image.pixels,
            classes=self.classes,
            scores=scores,
            score_rule=self.context.bundle.score_rule,
            classifier_probabilities=probabilities,
            peak_probabilities=peak,
            predicted_class=self.classes[predicted],
            explained_class=self.classes[explained],
            probability_maps=probability_maps,
            cam=cam,
            mapping=inference.mapping,
            units=ranked[: params.top_k],
            explanation=explanation,
            aux=None
            if inference.aux is None or self.aux_weight is None
            else explain_aux(inference.aux, self.aux_features, self.aux_weight),
        )

    def _labels(self, unit_ids: Sequence[int]) -> Mapping[int, tuple[AnnotationRecord, ...]] | None:
        """The units' labels that name a phenomenon; None while the unit-label store is unavailable.

        The image is explained without labels then, rather than refused: the maps,
        scores and influences do not need the store, and the answer says the labels
        are unknown (``labels_available``).
        """
        try:
            return self.context.catalog.annotations_for(unit_ids, naming_only=True)
        except StoreUnavailableError as exc:
            log.warning(
                "explaining without unit labels: %s", exc, extra={"fields": {"event": "labels_unavailable"}}
            )
            return None

    def response(self, result: ExplanationResult, params: DeepMinerParams) -> ExplainResponse:
        """The body of ``POST /explain``, maps written as ``params`` asks."""
        from service.schemas import ExplainResponse  # the wire models import this module's results

        return ExplainResponse.from_result(result, maps=params.maps, overlay_max_side=params.overlay_max_side)
