"""An int8 FCN for the bundle, with accuracy gates against fp32 (``python -m training quantize``).

:mod:`training.quantize.int8` quantizes the graph (ONNX Runtime static
quantization, QDQ, per-channel weights) with a calibration method and a region
left in float; :mod:`training.quantize.gates` measures how far the int8 model's
explanations are from fp32's; :mod:`training.quantize.command` tries the
candidates, keeps the best and writes it into the bundle.

Import the heavy parts from their modules; this package's top level imports
neither ONNX Runtime nor torch, so the CLI can list the candidates' names.
"""

from training.quantize.cpu import cpu_info
from training.quantize.names import CALIBRATION_METHODS, FLOAT_REGIONS

__all__ = ["CALIBRATION_METHODS", "FLOAT_REGIONS", "cpu_info"]
