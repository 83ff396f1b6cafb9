"""One explanation: decode → preprocess → FCN forward → the method's formulas → annotations → named units.

Runs in a worker thread (see :mod:`service.pool`); every step is blocking NumPy,
backend or database work. All formulas come from :mod:`deepminer`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from annotations import AnnotationRecord
from deepminer import imaging, png
from deepminer.bundle import Bundle, BundleError
from deepminer.dicom import DicomInfo
from deepminer.formulas import class_activation_map, influence, softmax, top_units, unit_max_activations
from deepminer.grid import GridMapping
from deepminer.scoring import breast_cells, classifier_probabilities, image_scores, input_gray
from service.auxiliary import AuxiliaryExplanation, explain_aux
from service.backends.base import Backend
from service.decoding import decode_upload
from service.errors import BackendUnavailableError, InferenceCancelledError, InvalidParameterError
from service.explanation import CONSIDERED_UNITS, Explanation, build_explanation
from service.units import UnitCatalog

METHOD = "DeepMiner: CAM (Zhou et al. 2016) and unit influence max_xy A_k(x, y) * w_ck"


@dataclass(frozen=True)
class ModelInfo:
    """Which model and engine produced an explanation."""

    id: str
    hash: str
    architecture: str
    layer: str
    backend: str
    provider: str
    precision: str  # fp32, fp16 or bf16 (DEEPMINER_PRECISION)

    @property
    def device(self) -> str:
        """``cuda`` when the provider the engine reports runs on a GPU (``CUDAExecutionProvider``, ``cuda:0``), else ``cpu``."""
        return "cuda" if self.provider.lower().startswith("cuda") else "cpu"


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
class ExplanationResult:
    """Everything one explanation found; maps are on the layer4 grid described by ``mapping``."""

    method: str
    model: ModelInfo
    image_shape: tuple[int, int]
    image_format: str
    image_bits: int
    dicom: DicomInfo | None  # the upload's DICOM identifiers and acquisition tags; None for other formats
    pixels: np.ndarray  # (H, W) the decoded upload in [0, 1], for overlays
    input_shape: tuple[int, int]
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
    timings_ms: Mapping[str, float]
    aux: AuxiliaryExplanation | None = None  # the auxiliary features used, for bundles that have them


class _Stopwatch:
    """Per-stage wall times in milliseconds; checks for cancellation between stages."""

    def __init__(self, cancel: threading.Event | None, *, started: float | None = None) -> None:
        self._cancel = cancel
        self._last = time.perf_counter() if started is None else started
        self.laps: dict[str, float] = {}

    def lap(self, stage: str, at: float | None = None) -> None:
        """Close ``stage`` now, or at ``at`` (a ``time.perf_counter()`` reading taken earlier)."""
        now = time.perf_counter() if at is None else at
        self.laps[stage] = (now - self._last) * 1000.0
        self._last = now
        if self._cancel is not None and self._cancel.is_set():
            raise InferenceCancelledError(f"explanation abandoned after the {stage} stage")


class Explainer:
    """Explains one uploaded mammogram with the loaded bundle, backend and unit catalogue.

    Thread-safe; :meth:`explain` blocks, so call it from a worker thread.
    """

    def __init__(
        self,
        *,
        bundle: Bundle,
        backend: Backend,
        catalog: UnitCatalog,
        max_image_pixels: int = imaging.DEFAULT_MAX_PIXELS,
        max_top_k: int = 50,
        explain_automatic_labels: bool = False,
    ) -> None:
        self.bundle = bundle
        self.backend = backend
        self.catalog = catalog
        self.max_image_pixels = max_image_pixels
        self.max_top_k = max_top_k
        self.explain_automatic_labels = explain_automatic_labels
        self.classes = tuple(bundle.classes)
        self.score_rule = bundle.score_rule
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
        model = bundle.meta["model"]
        self.model = ModelInfo(
            id=bundle.id,
            hash=bundle.hash,
            architecture=str(model["architecture"]),
            layer=str(model.get("layer", "layer4")),
            backend=backend.name,
            provider=backend.provider,
            precision=backend.precision,
        )

    def validate(self, *, class_name: str | None, top_k: int) -> None:
        """Check request parameters before any work: ``class_name`` must be a class, ``1 <= top_k <= max_top_k``."""
        if class_name is not None and class_name not in self.classes:
            raise InvalidParameterError(
                f"class_name must be one of {', '.join(self.classes)}; got {class_name!r}", field="class_name"
            )
        if not 1 <= top_k <= self.max_top_k:
            raise InvalidParameterError(f"top_k must be between 1 and {self.max_top_k}; got {top_k}", field="top_k")

    def decode(self, data: bytes) -> imaging.DecodedImage:
        """The upload as a grayscale image, or the domain error that says why not (:mod:`service.decoding`)."""
        return decode_upload(data, max_pixels=self.max_image_pixels)

    def preprocess(self, pixels: np.ndarray) -> np.ndarray:
        """The network input ``(1, 3, H', W')``: short side scaled to the bundle's, normalised."""
        return imaging.network_input(
            pixels, short_side=self.bundle.input_short_side, mean=self.bundle.mean, std=self.bundle.std
        )

    @property
    def reference_aux(self) -> np.ndarray | None:
        """The auxiliary features at their training means (z = 0), or None without them.

        For forward passes that need only the features, which the auxiliary features never change.
        """
        return np.asarray([f.mean for f in self.aux_features], dtype=np.float32) if self.aux_features else None

    def forward(self, x: np.ndarray, aux: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The backend's ``(logits (C, h, w), features (K, h, w))``, checked against the bundle's shapes.

        ``aux``: the raw auxiliary features ``(J,)`` (:func:`service.auxiliary.parse_aux`), required when the
        bundle has them.
        """
        if (aux is not None) != bool(self.aux_features):
            wanted = [f.name for f in self.aux_features] or "no auxiliary features"
            raise InvalidParameterError(f"this model takes {wanted}; got aux {aux!r}", field="aux")
        logits, features = self.backend.run(x) if aux is None else self.backend.run(x, aux[None, :])
        expected_grid = (logits.shape[1], logits.shape[2])
        if logits.shape[0] != len(self.classes) or features.shape != (self.bundle.num_units, *expected_grid):
            raise BackendUnavailableError(
                f"{self.backend.name} returned logits {logits.shape} and features {features.shape}; the bundle "
                f"declares {len(self.classes)} classes and {self.bundle.num_units} units"
            )
        return logits, features

    def warm_up(self) -> float:
        """Run preprocessing and one forward pass on a blank image; return its wall time in ms.

        The PNG decoder's loop compiles meanwhile in the background (Pillow decodes PNGs until it is done).
        """
        png.compile_decoder(background=True)
        side = self.bundle.input_short_side
        started = time.perf_counter()
        self.forward(self.preprocess(np.zeros((side, side), dtype=np.float32)), self.reference_aux)
        return (time.perf_counter() - started) * 1000.0

    def score(self, x: np.ndarray, logits: np.ndarray, probability_maps: np.ndarray) -> np.ndarray:
        """The image-level scores ``(C,)`` under the bundle's rule, over the breast cells of the network input ``x``."""
        cells = breast_cells(input_gray(x, self.bundle.mean, self.bundle.std), (logits.shape[1], logits.shape[2]))
        return image_scores(probability_maps, logits, cells, classes=self.classes, rule=self.score_rule)

    def explain(
        self,
        data: bytes,
        *,
        class_name: str | None = None,
        top_k: int = 5,
        cancel: threading.Event | None = None,
        submitted_at: float | None = None,
        received_at: float | None = None,
        aux: np.ndarray | None = None,
    ) -> ExplanationResult:
        """Explain the image in ``data`` for ``class_name`` (default: the predicted class) with ``top_k`` units.

        The predicted class is the argmax of the image-level scores (:meth:`score`).
        The result's ``explanation`` names the labelled units among the top eight,
        whatever ``top_k`` (:func:`service.explanation.build_explanation`).

        ``cancel``, once set, stops the work at the next stage boundary with
        :class:`InferenceCancelledError`. ``submitted_at`` (``time.perf_counter()``
        when the request was queued) adds a ``queue`` stage to the timings; ``received_at`` (when its
        upload began to be read) adds an ``upload`` stage before it.
        ``aux``: the raw auxiliary features ``(J,)``, required when the bundle has them.
        """
        self.validate(class_name=class_name, top_k=top_k)
        clock = _Stopwatch(cancel, started=received_at if received_at is not None else submitted_at)
        if received_at is not None and submitted_at is not None:
            clock.lap("upload", at=submitted_at)
        if submitted_at is not None:
            clock.lap("queue")
        image = self.decode(data)
        clock.lap("decode")
        x = self.preprocess(image.pixels)
        clock.lap("preprocess")
        logits, features = self.forward(x, aux)
        clock.lap("inference")

        probability_maps = softmax(logits, axis=0)
        probabilities = classifier_probabilities(logits)
        peak = probability_maps.reshape(len(self.classes), -1).max(axis=1)
        # The mean of the map is the patch classifier, but a lesion covers a few
        # percent of the cells, so the image is ranked by the map over the breast.
        scores = self.score(x, logits, probability_maps)
        predicted = int(np.argmax(scores))
        explained = predicted if class_name is None else self.classes.index(class_name)
        cam = class_activation_map(features, self.weight, explained)
        maxima = unit_max_activations(features)  # max_xy A_k(x, y) of every unit, computed once
        # A unit's maximum as a 1 x 1 map has the same maximum, so influence() (the one formula) needs no second pass.
        influences = influence(maxima[:, None, None], self.weight)[explained]
        # The explanation looks at the top eight whatever top_k, so rank at least that many.
        top = top_units(influences, max(top_k, CONSIDERED_UNITS))
        maps = features[top]  # fancy indexing copies only the ranked units' maps
        mapping = GridMapping.for_input(image_shape=image.pixels.shape, input_shape=(x.shape[2], x.shape[3]))
        clock.lap("explain")

        labels = self.catalog.annotations_for([int(u) for u in top], naming_only=True)
        ranked = tuple(
            UnitExplanation(
                unit_id=int(unit),
                rank=rank,
                influence=float(influences[unit]),
                max_activation=float(maxima[unit]),
                weight=float(self.weight[explained, unit]),
                activation_map=activation_map,
                annotations=labels[int(unit)],
            )
            for rank, (unit, activation_map) in enumerate(zip(top, maps), start=1)
        )
        explanation = build_explanation(
            ranked, bundle_hash=self.bundle.hash, include_automatic=self.explain_automatic_labels
        )
        clock.lap("annotations")
        return ExplanationResult(
            method=METHOD,
            model=self.model,
            image_shape=(int(image.pixels.shape[0]), int(image.pixels.shape[1])),
            image_format=image.format,
            image_bits=image.bits,
            dicom=image.dicom,
            pixels=image.pixels,
            input_shape=(int(x.shape[2]), int(x.shape[3])),
            classes=self.classes,
            scores=scores,
            score_rule=self.score_rule,
            classifier_probabilities=probabilities,
            peak_probabilities=peak,
            predicted_class=self.classes[predicted],
            explained_class=self.classes[explained],
            probability_maps=probability_maps,
            cam=cam,
            mapping=mapping,
            units=ranked[:top_k],
            explanation=explanation,
            timings_ms=MappingProxyType({**clock.laps, "total": sum(clock.laps.values())}),
            aux=None
            if aux is None or self.aux_weight is None
            else explain_aux(aux, self.aux_features, self.aux_weight),
        )
