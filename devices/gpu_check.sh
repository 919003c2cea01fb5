#!/usr/bin/env bash
# One-shot accelerator check, for a machine with a GPU (CUDA, ROCm, MPS or XPU) and a torch build for it:
#   1. per-model, per-pair clean max differences (fp32, fp16, bf16 vs the CPU; deterministic run to run)
#      for all ten zoo models, with the time each took: the figures the POLICY rows' `why` should cite;
#   2. the cross-device property itself (ci profile) on every accelerator present, with durations.
# Usage: devices/gpu_check.sh [--device cuda:0 ...]     (EXAMPLES=25 by default; PYTHON=python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export CUBLAS_WORKSPACE_CONFIG=${CUBLAS_WORKSPACE_CONFIG:-:4096:8}  # before cuBLAS starts: deterministic runs
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "hip", torch.version.hip,
          "gpus", torch.cuda.device_count())'
start=$SECONDS
"$PY" -m devices.measure --examples "${EXAMPLES:-25}" "$@"
echo "measure: $((SECONDS - start)) s"
start=$SECONDS
"$PY" -m pytest properties/test_cross_device.py --hypothesis-profile=ci -q -rs --durations=20 "$@" || status=$?
echo "cross-device property: $((SECONDS - start)) s"
exit "${status:-0}"
