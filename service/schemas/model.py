"""The loaded model bundle and the engine running it, as every inference response names it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from service.explainer import ModelInfo


class ModelOut(BaseModel):
    """The loaded model bundle and the engine running it."""

    id: str = Field(description="`name@<first 12 hex digits of the bundle hash>`.")
    hash: str = Field(description="sha256 of the bundle's meta.json, which lists every file's sha256.")
    architecture: str
    layer: str = Field(description="The layer whose units explain the prediction.")
    backend: Literal["onnx", "torch"]
    provider: str = Field(
        description=(
            "What executes the model, as the engine reports it: for ONNX Runtime the first provider the session "
            "actually runs on (`CUDAExecutionProvider` or `CPUExecutionProvider`), for torch the device (`cuda:0`, `cpu`)."
        )
    )
    device: Literal["cuda", "cpu"] = Field(description="Whether the model runs on a GPU, derived from `provider`.")
    precision: Literal["fp32", "fp16", "bf16", "int8"] = Field(
        description="Arithmetic of the forward pass (`DEEPMINER_PRECISION`); every map is returned as float32. "
        "`int8` is the bundle's quantized graph, `fcn.int8.onnx`, whose accuracy gates meta.json records."
    )

    @classmethod
    def from_info(cls, info: ModelInfo) -> ModelOut:
        return cls.model_validate(info, from_attributes=True)
