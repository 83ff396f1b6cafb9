"""The int8 candidates' names, importable without ONNX Runtime (the CLI lists them as choices)."""

from __future__ import annotations

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
"""ONNX Runtime's calibrators (:data:`training.quantize.int8.CALIBRATOR`): the range of each activation is its
min and max over the calibration images (``minmax``), the threshold that keeps the KL divergence of its
histogram smallest (``entropy``), or its 0.001 and 99.999 percentiles (``percentile``)."""

FLOAT_REGIONS = ("none", "head", "last-block", "layer4")
"""What stays in float: nothing; the 1×1 head (logits); the last residual block of layer4 and the head;
all of layer4 and the head. Nodes on the auxiliary features' path stay in float in every case."""
