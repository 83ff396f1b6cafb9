#!/bin/sh
# Installs the DeepMiner service from a source tree into a virtual environment.
#
# This is the image's whole install recipe: the Dockerfile runs it, and
# tests/deploy/test_image_install.py runs it into a fresh venv, so the recipe is
# tested on machines without a Docker engine.
#
# usage: docker/install.sh [--variant cpu|gpu] [--with-torch] SOURCE_DIR VENV_DIR
#
#   --variant cpu   ONNX Runtime for the CPU (the `serve` extra as it is). Default.
#   --variant gpu   onnxruntime-gpu in place of onnxruntime: $ONNXRUNTIME_GPU_SPEC,
#                   by default "onnxruntime-gpu>=1.28,<2", the releases that PyPI
#                   builds for CUDA 13.x and cuDNN 9 (1.19-1.27 were CUDA 12 builds).
#                   The CUDA libraries come from the nvidia/cuda base image.
#   --with-torch    also the `torch` extra (torch, torchvision), for DEEPMINER_BACKEND=torch.
#                   $TORCH_INDEX_URL, when set, is an extra index for them (the CPU wheels
#                   of the PyTorch index are far smaller than PyPI's CUDA builds).
#
# Environment: PYTHON, the interpreter that creates the venv (default python3);
# pip's own PIP_* variables apply, e.g. PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels to
# install from a local wheelhouse with no network at all.
set -eu

variant=cpu
with_torch=false
while [ $# -gt 0 ]; do
    case "$1" in
        --variant) variant=${2:?--variant needs cpu or gpu}; shift 2 ;;
        --variant=*) variant=${1#--variant=}; shift ;;
        --with-torch) with_torch=true; shift ;;
        -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "install.sh: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
if [ $# -ne 2 ]; then
    echo "usage: install.sh [--variant cpu|gpu] [--with-torch] SOURCE_DIR VENV_DIR" >&2
    exit 2
fi
case "$variant" in
    cpu|gpu) ;;
    *) echo "install.sh: --variant must be cpu or gpu, got '$variant'" >&2; exit 2 ;;
esac
src=$1
venv=$2
if [ ! -f "$src/pyproject.toml" ]; then
    echo "install.sh: $src has no pyproject.toml" >&2
    exit 2
fi

if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
py="$venv/bin/python"
pip() { "$py" -m pip --disable-pip-version-check --no-input "$@"; }

extras=serve
torch_index=""
if [ "$with_torch" = true ]; then
    extras=serve,torch
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
        torch_index="--extra-index-url=$TORCH_INDEX_URL"
    fi
fi

echo "install.sh: $variant image, extras [$extras], into $venv"
# A plain (non-editable) install: the image needs no source tree at run time.
# shellcheck disable=SC2086  # $torch_index is one option or nothing
pip install $torch_index "$src[$extras]"

if [ "$variant" = gpu ]; then
    # Both wheels provide the `onnxruntime` package; the GPU one must replace the CPU one.
    pip uninstall --yes onnxruntime
    pip install "${ONNXRUNTIME_GPU_SPEC:-onnxruntime-gpu>=1.28,<2}"
fi

# Fail the build here, not at the first request.
"$py" - "$variant" "$with_torch" <<'EOF'
import importlib.util
import sys

variant, with_torch = sys.argv[1], sys.argv[2] == "true"
import onnxruntime

import annotations.migrate
import service.main  # noqa: F401  (imports the whole app, as `python -m service` does)

has_torch = importlib.util.find_spec("torch") is not None
if has_torch != with_torch:
    sys.exit(f"install.sh: torch is {'present' if has_torch else 'missing'}, expected the opposite")
providers = onnxruntime.get_available_providers()
if variant == "gpu" and "CUDAExecutionProvider" not in providers:
    sys.exit(f"install.sh: onnxruntime-gpu offers no CUDAExecutionProvider, got {providers}")
print(f"install.sh: ok: onnxruntime {onnxruntime.__version__} {providers}, schema head {annotations.migrate.head()}")
EOF
pip check
