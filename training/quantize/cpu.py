"""The CPU's model and the instruction sets int8 inference depends on, from ``/proc/cpuinfo``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

INT8_FLAGS = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "amx_int8": "AMX-INT8",
    "amx_bf16": "AMX-BF16",
}
"""``/proc/cpuinfo`` flags that decide which integer kernels ONNX Runtime's MLAS can run, with their names."""


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """``{"model": ..., "instruction_sets": [...]}`` of the first CPU listed; empty where the file is not there."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return {"model": "unknown", "instruction_sets": []}
    model, flags = "unknown", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown":
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return {"model": model, "instruction_sets": [name for flag, name in INT8_FLAGS.items() if flag in flags]}
