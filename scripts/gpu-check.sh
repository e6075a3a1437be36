#!/usr/bin/env bash
# `make gpu-check`, on a machine with an NVIDIA GPU: build TensorRT plans (when tensorrt is installed), check the
# GPU backends against ONNX Runtime CPU (alpha max abs error <= 1e-2, tests/test_gpu.py) and print the
# benchmark at 720p and 1080p for each GPU backend. PYTHON picks the interpreter, GPU_CHECK_OUT the output folder.
set -uo pipefail
PY=${PYTHON:-.venv/bin/python}
OUT=${GPU_CHECK_OUT:-runs/gpu-check}
mkdir -p "$OUT"
if ! nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; then
    echo "gpu-check: no NVIDIA GPU here (nvidia-smi failed)" >&2
    exit 2
fi
"$PY" -c 'import importlib.util, onnxruntime as o; print("onnxruntime", o.__version__, o.get_available_providers()); print("tensorrt", "installed" if importlib.util.find_spec("tensorrt") else "not installed")'
status=0
backends=()
if "$PY" -c 'import tensorrt' 2>/dev/null; then
    "$PY" -m cuematte.clients.cli build-engines --out "$OUT/plans" && backends+=(tensorrt) || status=1
fi
if "$PY" -c 'import sys, onnxruntime as o; sys.exit("CUDAExecutionProvider" not in o.get_available_providers())'; then
    backends+=(cuda)
fi
"$PY" -m pytest -q -m gpu tests/test_gpu.py -ra -s -p no:cacheprovider || status=1
for b in "${backends[@]}"; do
    "$PY" -m cuematte.clients.cli bench --backend "$b" --plans "$OUT/plans" --sizes 1280x720,1920x1080 --max-side 1920 \
        --warmup 20 --repeat 200 --json "$OUT/bench-$b.json" || status=1
done
exit $status
