"""The one inference step of a request: decode → preprocess → forward, timed by one stopwatch.

Every explanation method (:mod:`service.methods`) runs on the :class:`Inference`
this module returns, so an upload is decoded, resized and sent through the FCN
once whatever the method. Runs in a worker thread (:mod:`service.pool`); every
step blocks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from deepminer import imaging, png
from deepminer.bundle import Bundle
from deepminer.grid import GridMapping
from service.backends.base import Backend
from service.decoding import decode_upload
from service.errors import BackendUnavailableError, InferenceCancelledError, InvalidParameterError


@dataclass(frozen=True)
class ModelInfo:
    """Which model and engine produced an explanation."""

    id: str
    hash: str
    architecture: str
    layer: str
    backend: str
    provider: str
    precision: str  # fp32, fp16, bf16 or int8 (DEEPMINER_PRECISION)

    @property
    def device(self) -> str:
        """``cuda`` when the provider the engine reports runs on a GPU (``CUDAExecutionProvider``, ``cuda:0``), else ``cpu``."""
        return "cuda" if self.provider.lower().startswith("cuda") else "cpu"


class Stopwatch:
    """Per-stage wall times of one request in milliseconds; checks for cancellation between stages.

    One per request, from the first stage to the last, whichever thread runs it:
    the stages run one after another, never at once. ``cancel`` (the pool's event
    of the job running now) may be set once the job starts.
    """

    def __init__(self, *, started: float | None = None, cancel: threading.Event | None = None) -> None:
        self.cancel = cancel
        self._last = time.perf_counter() if started is None else started
        self._laps: dict[str, float] = {}

    @classmethod
    def for_request(
        cls,
        *,
        cancel: threading.Event | None = None,
        submitted_at: float | None = None,
        received_at: float | None = None,
    ) -> Stopwatch:
        """A stopwatch whose first stages are ``upload`` (from ``received_at``, when its upload began to be read)
        and ``queue`` (from ``submitted_at``, when the job was queued, until now); either is left out when not given.
        """
        clock = cls(started=received_at if received_at is not None else submitted_at, cancel=cancel)
        if received_at is not None and submitted_at is not None:
            clock.lap("upload", at=submitted_at)
        if submitted_at is not None:
            clock.lap("queue")
        return clock

    def lap(self, stage: str, at: float | None = None) -> None:
        """Close ``stage`` now, or at ``at`` (a ``time.perf_counter()`` reading taken earlier)."""
        now = time.perf_counter() if at is None else at
        self._laps[stage] = (now - self._last) * 1000.0
        self._last = now
        if self.cancel is not None and self.cancel.is_set():
            raise InferenceCancelledError(f"the request was abandoned after its {stage} stage")

    def timings(self) -> Mapping[str, float]:
        """The stages so far and their ``total``, read-only."""
        return MappingProxyType({**self._laps, "total": sum(self._laps.values())})


@dataclass(frozen=True)
class Inference:
    """What one forward pass on one upload gives every method; maps are on the grid ``mapping`` describes."""

    image: imaging.DecodedImage  # the upload, grayscale in [0, 1]
    x: np.ndarray  # (1, 3, H', W') the network input
    logits: np.ndarray  # (C, h, w) class logit maps
    features: np.ndarray  # (K, h, w) layer4 activations A_k(x, y)
    mapping: GridMapping
    aux: np.ndarray | None  # the raw auxiliary features (J,) the forward pass used, or None

    @property
    def image_shape(self) -> tuple[int, int]:
        return int(self.image.pixels.shape[0]), int(self.image.pixels.shape[1])

    @property
    def input_shape(self) -> tuple[int, int]:
        return int(self.x.shape[2]), int(self.x.shape[3])


class InferenceEngine:
    """Decodes, preprocesses and forwards uploads with the loaded bundle and backend; thread-safe."""

    def __init__(self, *, bundle: Bundle, backend: Backend, max_image_pixels: int = imaging.DEFAULT_MAX_PIXELS) -> None:
        self.bundle = bundle
        self.backend = backend
        self.max_image_pixels = max_image_pixels
        self.classes = tuple(bundle.classes)
        self.aux_features = bundle.aux_features
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

    def run(self, data: bytes, *, clock: Stopwatch, aux: np.ndarray | None = None) -> Inference:
        """Decode, preprocess and forward ``data`` once, closing the ``decode``, ``preprocess`` and ``inference``
        stages on ``clock``."""
        image = self.decode(data)
        clock.lap("decode")
        x = self.preprocess(image.pixels)
        clock.lap("preprocess")
        logits, features = self.forward(x, aux)
        clock.lap("inference")
        mapping = GridMapping.for_input(image_shape=image.pixels.shape, input_shape=(x.shape[2], x.shape[3]))
        return Inference(image=image, x=x, logits=logits, features=features, mapping=mapping, aux=aux)

    def warm_up(self) -> float:
        """Run preprocessing and one forward pass on a blank image; return its wall time in ms.

        The PNG decoder's loop compiles meanwhile in the background (Pillow decodes PNGs until it is done).
        """
        png.compile_decoder(background=True)
        side = self.bundle.input_short_side
        started = time.perf_counter()
        self.forward(self.preprocess(np.zeros((side, side), dtype=np.float32)), self.reference_aux)
        return (time.perf_counter() - started) * 1000.0
