"""The FCN's ONNX graph quantized to int8 by ONNX Runtime's static quantization (QDQ, per-channel weights).

Activations are uint8 with one scale per tensor, set by calibration on whole
mammograms at the serving input size; weights are int8 with one scale per
output channel (symmetric). ONNX Runtime's CPU kernels run that pair (U8S8) on
AVX-512 VNNI and AMX's integer tiles; on AVX2 alone U8S8 can saturate an
intermediate sum, which the gates would show. Regions of the graph named by
:data:`FLOAT_REGIONS` stay in float: the input and outputs are float32 either way.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

from training.quantize.names import CALIBRATION_METHODS, FLOAT_REGIONS

log = logging.getLogger(__name__)

CALIBRATOR = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
"""ONNX Runtime's calibration method of each name in :data:`training.quantize.names.CALIBRATION_METHODS`."""

LAYER4_BLOCKS = {18: 2, 34: 3, 50: 3, 101: 3, 152: 3}
"""Residual blocks of torchvision's layer4 by ResNet depth."""

FEATURES_OUTPUT = "features"
AUX_INPUT = "aux"

Feeds = dict[str, np.ndarray]


class FeedReader(CalibrationDataReader):
    """The calibration images one at a time: ``feeds(i)`` builds image i's inputs when the calibrator asks for it.

    ONNX Runtime calls :meth:`set_range` with one image per range (``CalibStridedMinMax=1``), so its
    histograms and ranges grow image by image and images of different sizes never meet in one array.
    """

    def __init__(self, count: int, feeds: Callable[[int], Feeds]) -> None:
        self._count, self._feeds = count, feeds
        self._next, self._end = 0, count

    def __len__(self) -> int:
        return self._count

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next, self._end = start_index, min(end_index, self._count)

    def get_next(self) -> Feeds | None:
        if self._next >= self._end:
            return None
        self._next += 1
        return self._feeds(self._next - 1)


def residual_outputs(graph: onnx.GraphProto) -> list[str]:
    """The outputs of the residual blocks in graph order: every ReLU applied to an Add (the block's join)."""
    produced_by = {out: node for node in graph.node for out in node.output}
    return [
        node.output[0]
        for node in graph.node
        if node.op_type == "Relu" and node.input[0] in produced_by and produced_by[node.input[0]].op_type == "Add"
    ]


def downstream_nodes(graph: onnx.GraphProto, tensors: Sequence[str]) -> list[str]:
    """Names of every node that reads one of ``tensors`` or anything computed from them, in graph order."""
    reached = set(tensors)
    names = []
    for node in graph.node:  # ONNX graphs are topologically sorted
        if any(name in reached for name in node.input):
            reached.update(node.output)
            names.append(node.name)
    return names


def float_nodes(model: onnx.ModelProto, region: str, *, depth: int) -> list[str]:
    """The nodes of the FCN ``model`` (ResNet-``depth``) that stay in float for ``region`` (:data:`FLOAT_REGIONS`)."""
    if region not in FLOAT_REGIONS:
        raise ValueError(f"float region must be one of {', '.join(FLOAT_REGIONS)}, got {region!r}")
    if depth not in LAYER4_BLOCKS:
        raise ValueError(f"depth must be one of {sorted(LAYER4_BLOCKS)}, got {depth}")
    graph = model.graph
    inputs = {i.name for i in graph.input}
    starts = [AUX_INPUT] if AUX_INPUT in inputs else []
    joins = residual_outputs(graph)
    if not joins or joins[-1] != FEATURES_OUTPUT:
        raise ValueError(f"the graph's last residual join is {joins[-1:] or 'missing'}, not {FEATURES_OUTPUT!r}")
    blocks = {"none": None, "head": 0, "last-block": 1, "layer4": LAYER4_BLOCKS[depth]}[region]
    if blocks is not None:
        starts.append(joins[-1 - blocks])  # the input of the first block kept in float (the features: the head)
    return downstream_nodes(graph, starts) if starts else []


def quantize_fcn(
    source: Path,
    target: Path,
    *,
    calibration: FeedReader,
    method: str,
    keep_float: Sequence[str] = (),
    cache: Path | None = None,
) -> None:
    """Write ``source`` (the fp32 FCN) quantized to ``target``: QDQ, uint8 activations, per-channel int8 weights.

    ``calibration`` yields the calibration images' inputs; ``method`` names the calibrator
    (:data:`~training.quantize.names.CALIBRATION_METHODS`); ``keep_float`` lists nodes left in float.
    ``cache``: a file for the calibrated ranges, reused when it exists (the same images and method give
    the same ranges whatever stays in float); ONNX Runtime 1.32 or later.
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    # The histogram calibrators print their progress to stdout; the log says what is being done instead.
    with contextlib.redirect_stdout(io.StringIO()), _without_preprocessing_advice():
        quantize_static(
            str(source),
            str(target),
            calibration,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CALIBRATOR[method],
            nodes_to_exclude=list(keep_float),
            calibration_cache_path=None if cache is None else str(cache),
            extra_options={"CalibStridedMinMax": 1},
        )


class _PreprocessingAdvice(logging.Filter):
    """Drops quantize_static's advice to run its pre-processing first: the exported graph has its BatchNorms folded
    into the convolutions and static channel shapes already, and ONNX Runtime fuses the rest when it loads it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


@contextlib.contextmanager
def _without_preprocessing_advice() -> Iterator[None]:
    advice = _PreprocessingAdvice()
    root = logging.getLogger()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)
