"""The contract of an explanation method: a name, a run on one inference, and its response part."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel

from deepminer.bundle import Bundle
from service.inference import Inference, ModelInfo, Stopwatch
from service.units import UnitCatalog

ParamsT = TypeVar("ParamsT")
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class MethodContext:
    """What every method may use besides the inference: loaded once at start-up, shared by all requests."""

    bundle: Bundle
    catalog: UnitCatalog
    model: ModelInfo
    max_image_pixels: int
    max_top_k: int
    explain_automatic_labels: bool
    default_top_k: int = 5


@dataclass(frozen=True)
class MethodResult:
    """What every method's result records: the method, the model, the image, and the request's stage timings."""

    method: str  # the method's title
    model: ModelInfo
    image_shape: tuple[int, int]  # the upload's (rows, columns)
    image_format: str
    image_bits: int
    input_shape: tuple[int, int]  # the network input's (rows, columns)
    timings_ms: Mapping[str, float]

    @staticmethod
    def describing(inference: Inference, *, method: str, model: ModelInfo, clock: Stopwatch) -> dict[str, Any]:
        """These fields for a result on ``inference``, the timings read from ``clock`` now."""
        return {
            "method": method,
            "model": model,
            "image_shape": inference.image_shape,
            "image_format": inference.image.format,
            "image_bits": inference.image.bits,
            "input_shape": inference.input_shape,
            "timings_ms": clock.timings(),
        }


class Method(Protocol[ParamsT, ResultT]):
    """One explanation method; instances are built once per app from a :class:`MethodContext` and are thread-safe.

    ``name`` is its registry key (:data:`service.methods.METHODS`), ``title`` what its results' ``method``
    field says. ``takes_aux``: its forward pass uses the request's auxiliary features (required when the
    bundle has them); otherwise the features at their training means, which change no unit map.
    ``route`` is the path of the route written for it, or None to be served at ``POST /methods/{name}``
    (:mod:`service.api.routes.methods`) with its parameters read by :meth:`parse`.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    takes_aux: ClassVar[bool]
    route: ClassVar[str | None]

    def __init__(self, context: MethodContext) -> None: ...

    def parse(self, query: Mapping[str, str]) -> ParamsT:
        """The validated parameters from a request's query string; domain errors name the bad one."""
        ...

    def run(self, inference: Inference, params: ParamsT, clock: Stopwatch) -> ResultT:
        """The method on one inference; closes its own stages on ``clock`` (the result may carry its timings)."""
        ...

    def response(self, result: ResultT, params: ParamsT) -> BaseModel:
        """The HTTP response body for ``result``."""
        ...


AnyMethod = Method[Any, Any]
