#!/usr/bin/env bash
# Set up, then run the performance suite (benchmarks/perf.py) with its figures. Extra arguments go to perf.py,
# e.g. `scripts/bench.sh --phases forward peer`. Results: benchmarks/results/perf.json and *.png.
# About 35 minutes on 2 cores; the first run adds 2 minutes for phantoms and the ResNet-152 bundle, and for the
# int8 phase about 10 minutes to quantize it and to build and quantize the demo bundle (all cached; longer on a CPU
# without bf16, where the demo trains in float32).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=all,bench bash scripts/setup.sh
exec .venv/bin/python benchmarks/perf.py --plots "$@"
