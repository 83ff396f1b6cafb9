"""Backends by name: one registry, which the settings, the response model and the Helm chart agree with."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import pydantic
import pytest

from deepminer.bundle import load_bundle
from service.backends import BACKENDS, create_backend
from service.backends.onnx import OnnxBackend
from service.errors import BackendUnavailableError
from service.schemas import ModelOut
from service.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_SCHEMA = REPO_ROOT / "helm" / "deepminer" / "values.schema.json"


def test_settings_response_and_chart_name_the_registered_backends() -> None:
    names = BACKENDS.names()
    assert names == ("onnx", "torch")
    assert get_args(ModelOut.model_fields["backend"].annotation) == names
    chart = json.loads(CHART_SCHEMA.read_text())["properties"]["config"]["properties"]["backend"]
    assert tuple(chart["enum"]) == names
    assert [Settings(backend=name).backend for name in names] == list(names)
    with pytest.raises(pydantic.ValidationError, match="backend must be one of onnx, torch; got 'tensorrt'"):
        Settings(backend="tensorrt")


def test_settings_and_the_backend_list_import_no_engine() -> None:
    """A deployment with ONNX Runtime only never imports torch (a fresh interpreter: this one has)."""
    probe = (
        "import sys; from service.settings import Settings; from service.backends import BACKENDS; "
        "Settings(backend='onnx'); BACKENDS.names(); print(sorted({'torch', 'service.backends.torch'} & set(sys.modules)))"
    )
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert found.stdout.strip() == "[]"


class ThreadedOnnx(OnnxBackend):
    """A new backend: ONNX Runtime with one intra-op thread, whatever the settings say."""

    name = "onnx_one_thread"

    def __init__(self, bundle: object, *, device: str, intra_op_threads: int, precision: str) -> None:
        super().__init__(bundle, device=device, intra_op_threads=1, precision=precision)  # type: ignore[arg-type]


@pytest.fixture
def new_backend() -> Iterator[str]:
    BACKENDS.register(ThreadedOnnx.name, f"{__name__}:ThreadedOnnx")
    try:
        yield ThreadedOnnx.name
    finally:
        BACKENDS.unregister(ThreadedOnnx.name)


def test_a_registered_backend_is_chosen_by_name(new_backend: str, tiny_bundle: Path) -> None:
    settings = Settings(backend=new_backend, device="cpu")
    backend = create_backend(settings, load_bundle(tiny_bundle))
    try:
        assert isinstance(backend, ThreadedOnnx) and backend.name == new_backend
    finally:
        backend.close()


def test_a_backend_whose_package_is_missing_is_unavailable(tiny_bundle: Path) -> None:
    BACKENDS.register("missing_engine", "service.backends.no_such_engine:Backend")
    try:
        with pytest.raises(BackendUnavailableError, match="needs the 'service.backends.no_such_engine' package"):
            create_backend(Settings(backend="missing_engine"), load_bundle(tiny_bundle))
    finally:
        BACKENDS.unregister("missing_engine")
