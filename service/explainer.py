"""The service object behind every explanation route: one inference step, then the method asked for by name.

A request goes route → :class:`Explainer` → :class:`~service.inference.InferenceEngine`
(decode, preprocess, backend) → the method (:mod:`service.methods`) → annotations.
Runs in a worker thread (see :mod:`service.pool`); every step blocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np

from deepminer import imaging
from deepminer.auxiliary import AuxFeature
from deepminer.bundle import Bundle
from service.backends.base import Backend
from service.inference import Inference, InferenceEngine, ModelInfo, Stopwatch
from service.methods import METHODS, AnyMethod, Method, MethodContext
from service.methods.deepminer import METHOD, DeepMiner, DeepMinerParams, ExplanationResult, UnitExplanation
from service.units import UnitCatalog

__all__ = ["METHOD", "Explainer", "ExplanationResult", "Inference", "ModelInfo", "UnitExplanation", "render"]

ParamsT = TypeVar("ParamsT")
ResultT = TypeVar("ResultT")


class Explainer:
    """Explains uploaded mammograms with the loaded bundle, backend and unit catalogue, by any registered method.

    Thread-safe; :meth:`run` and :meth:`explain` block, so call them from a worker thread.
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
        default_top_k: int = 5,
    ) -> None:
        self.bundle = bundle
        self.backend = backend
        self.catalog = catalog
        self.engine = InferenceEngine(bundle=bundle, backend=backend, max_image_pixels=max_image_pixels)
        self.model = self.engine.model
        self.context = MethodContext(
            bundle=bundle,
            catalog=catalog,
            model=self.model,
            max_image_pixels=max_image_pixels,
            max_top_k=max_top_k,
            explain_automatic_labels=explain_automatic_labels,
            default_top_k=default_top_k,
        )
        self.methods: dict[str, AnyMethod] = {}
        for name in METHODS.names():
            method = METHODS.get(name)(self.context)
            if method.name != name:
                raise ValueError(f"method {name!r} is registered with a class named {method.name!r}")
            self.methods[name] = method
        deepminer = self.methods[DeepMiner.name]
        if not isinstance(deepminer, DeepMiner):
            raise TypeError(f"method {DeepMiner.name!r} must be a DeepMiner, got {type(deepminer).__name__}")
        self.deepminer = deepminer  # /explain's method, which the PACS route and the SR use as well

    @property
    def aux_features(self) -> tuple[AuxFeature, ...]:
        """The bundle's auxiliary features (empty without them)."""
        return self.engine.aux_features

    @property
    def max_image_pixels(self) -> int:
        """The largest image area accepted, checked on the header before any pixel is decoded."""
        return self.engine.max_image_pixels

    def method(self, name: str) -> AnyMethod:
        """The registered method ``name``; ``LookupError`` names the registered ones otherwise."""
        try:
            return self.methods[name]
        except KeyError:
            raise LookupError(f"unknown method {name!r}; registered: {', '.join(self.methods)}") from None

    def run(
        self,
        method: Method[ParamsT, ResultT],
        data: bytes,
        params: ParamsT,
        *,
        aux: np.ndarray | None = None,
        clock: Stopwatch | None = None,
    ) -> ResultT:
        """``method`` on the image in ``data`` with validated ``params``: decode, preprocess and forward once, then it.

        ``clock``: the request's stopwatch (:meth:`Stopwatch.for_request` times the upload and the queue
        before this, and stops the work once its ``cancel`` is set); a new one by default.
        ``aux``: the raw auxiliary features ``(J,)``, required when the bundle has them and the method
        takes them; a method that does not gets the features at their training means.
        """
        clock = Stopwatch() if clock is None else clock
        inference = self.engine.run(data, clock=clock, aux=aux if method.takes_aux else self.engine.reference_aux)
        return method.run(inference, params, clock)

    def validate(self, *, class_name: str | None, top_k: int, **encoding: Any) -> DeepMinerParams:
        """The DeepMiner request, checked before any work (:meth:`DeepMiner.params <service.methods.deepminer.DeepMiner.params>`)."""
        return self.deepminer.params(class_name=class_name, top_k=top_k, **encoding)

    def explain(
        self,
        data: bytes,
        *,
        class_name: str | None = None,
        top_k: int = 5,
        params: DeepMinerParams | None = None,
        aux: np.ndarray | None = None,
        clock: Stopwatch | None = None,
    ) -> ExplanationResult:
        """DeepMiner's explanation of the image in ``data`` for ``class_name`` (default: the predicted class).

        ``params`` (from :meth:`validate`) stands for ``class_name`` and ``top_k`` when the caller has
        checked them already; ``aux`` and ``clock`` are :meth:`run`'s.
        """
        if params is None:
            params = self.validate(class_name=class_name, top_k=top_k)
        return self.run(self.deepminer, data, params, aux=aux, clock=clock)

    # The inference steps, for callers that drive them one by one (tests compare with brute force).

    def decode(self, data: bytes) -> imaging.DecodedImage:
        """The upload as a grayscale image (:meth:`InferenceEngine.decode`)."""
        return self.engine.decode(data)

    def preprocess(self, pixels: np.ndarray) -> np.ndarray:
        """The network input (:meth:`InferenceEngine.preprocess`)."""
        return self.engine.preprocess(pixels)

    def forward(self, x: np.ndarray, aux: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The backend's logits and features (:meth:`InferenceEngine.forward`)."""
        return self.engine.forward(x, aux)

    def warm_up(self) -> float:
        """One forward pass on a blank image; its wall time in ms (:meth:`InferenceEngine.warm_up`)."""
        return self.engine.warm_up()


def render(
    method: Method[ParamsT, ResultT], result: ResultT, params: ParamsT, clock: Stopwatch
) -> tuple[bytes, Mapping[str, float]]:
    """The JSON body of ``method``'s response for ``result``, and the request's timings, ``encode`` included.

    ``encode`` covers building the response (maps, overlays); its ``timings_ms``, when it has one, is
    replaced by the request's. The final serialisation (a few milliseconds) comes after. Runs in the worker
    thread with the rest of the request, so no large JSON is written on the event loop.
    """
    body = method.response(result, params)
    clock.lap("encode")
    timings = clock.timings()
    if "timings_ms" in type(body).model_fields:
        body = body.model_copy(update={"timings_ms": dict(timings)})
    return body.model_dump_json().encode(), timings
