# syntax=docker/dockerfile:1.7
#
# The DeepMiner service image (docs/deploy.md has sizes, GPU notes and the chart).
#
# Targets:
#   runtime (default)  the API, no model bundle inside: mount one at /models/bundle
#   bundled            runtime with a bundle baked in at /models/bundle
#   bundle-image       only a bundle, on busybox: the chart's bundle.initImage copies it out
#
# Build arguments:
#   VARIANT=cpu        python:3.11-slim with onnxruntime for the CPU. No torch.
#   VARIANT=gpu        nvidia/cuda 13.0 + cuDNN 9 runtime (Ubuntu 24.04, Python 3.12) with
#                      onnxruntime-gpu>=1.28, PyPI's CUDA 13 builds (1.19-1.27 were CUDA 12).
#                      Nodes need an NVIDIA driver for CUDA 13 (>= 580) and the device plugin.
#   WITH_TORCH=true    adds torch + torchvision, for DEEPMINER_BACKEND=torch only (large).
#   TORCH_INDEX_URL    extra index for torch; VARIANT=cpu defaults to PyTorch's CPU wheels.
#   CUDA_IMAGE, ONNXRUNTIME_GPU_SPEC   change both together, e.g. for CUDA 12 nodes:
#                      nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 with "onnxruntime-gpu>=1.19,<1.28".
#
#   docker build -t deepminer:0.1.0 .
#   docker build --build-arg VARIANT=gpu -t deepminer:0.1.0-gpu .
#   docker build --target bundled --build-context bundle=bundles/demo -t deepminer:0.1.0-demo .
#   docker build --target bundle-image --build-context bundle=bundles/demo -t deepminer-bundle:demo .
#
# The install steps live in docker/install.sh, which tests/deploy runs without a Docker engine.

ARG VARIANT=cpu
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
ARG BUSYBOX_IMAGE=busybox:1.37

# ---- bases: build and run on the same OS and Python, so the venv can be copied across ----

FROM ${PYTHON_IMAGE} AS base-cpu

FROM ${CUDA_IMAGE} AS base-gpu
RUN apt-get update \
    && apt-get install --yes --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

FROM base-${VARIANT} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# ---- build: a self-contained venv in /opt/venv ----

FROM base AS build
ARG VARIANT
ARG WITH_TORCH=false
ARG TORCH_INDEX_URL=""
ARG ONNXRUNTIME_GPU_SPEC="onnxruntime-gpu>=1.28,<2"
WORKDIR /src
# README.m[d]: copied when present; the glob keeps a missing README from failing the build.
COPY pyproject.toml README.m[d] ./
COPY deepminer ./deepminer
COPY annotations ./annotations
COPY service ./service
COPY training ./training
COPY docker/install.sh /usr/local/bin/deepminer-install
RUN --mount=type=cache,target=/root/.cache/pip \
    set -eu; \
    torch=""; \
    if [ "$WITH_TORCH" = true ]; then torch=--with-torch; fi; \
    if [ "$VARIANT" = cpu ] && [ -z "$TORCH_INDEX_URL" ]; then TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu; fi; \
    TORCH_INDEX_URL="$TORCH_INDEX_URL" ONNXRUNTIME_GPU_SPEC="$ONNXRUNTIME_GPU_SPEC" \
        deepminer-install --variant "$VARIANT" $torch /src /opt/venv

# ---- app: what runs ----

FROM base AS app
LABEL org.opencontainers.image.title="deepminer-service" \
      org.opencontainers.image.description="Explained mammogram classifications through expert-named CNN units (DeepMiner)"
# NUMBA_CACHE_DIR: the PNG decoder's loop (deepminer/png.py) compiles in the background at start-up
# (seconds; Pillow decodes PNGs meanwhile) and is cached in /tmp, writable under the chart's read-only
# root, so a restarted container loads it in about a second instead.
# A fixed numeric uid, so Kubernetes' runAsNonRoot can check it; /data holds the SQLite store if one is used.
RUN groupadd --system --gid 10001 deepminer \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin deepminer \
    && mkdir -p /models /data \
    && chown 10001:10001 /data
COPY --from=build /opt/venv /opt/venv
COPY docker/entrypoint.sh /usr/local/bin/deepminer-entrypoint
COPY docker/healthcheck.py /usr/local/lib/deepminer/healthcheck.py
ENV PATH=/opt/venv/bin:$PATH \
    DEEPMINER_HOST=0.0.0.0 \
    DEEPMINER_PORT=8000 \
    DEEPMINER_BUNDLE=/models/bundle \
    DEEPMINER_DATABASE_URL=sqlite:////data/deepminer.db \
    NUMBA_CACHE_DIR=/tmp/numba-cache
WORKDIR /data
USER 10001:10001
# The API (serve); the DICOM listener's DICOM port and its metrics and probes (dimse; DEEPMINER_DIMSE_HOST=0.0.0.0).
EXPOSE 8000 11112 9104
# Loading and warming the model takes a while before the server listens: hence the start period.
HEALTHCHECK --interval=30s --timeout=10s --start-period=300s --retries=3 \
    CMD ["python", "/usr/local/lib/deepminer/healthcheck.py"]
ENTRYPOINT ["deepminer-entrypoint"]
CMD ["serve"]

# ---- bundles: from a named build context, --build-context bundle=DIR ----

FROM ${BUSYBOX_IMAGE} AS bundle-image
COPY --from=bundle . /models/bundle/
USER 10001:10001

FROM app AS bundled
COPY --from=bundle . /models/bundle/

# ---- the default target comes last ----

FROM app AS runtime
