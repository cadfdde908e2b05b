#!/usr/bin/env bash
# Runs on the GPU machine, from anywhere in the repository: JIT-builds the
# PyTorch extension for sm_90a (TORCH_CUDA_ARCH_LIST=9.0a; fp8moe_torch.py
# turns it into -gencode arch=compute_90a,code=sm_90a) and runs
# test_torch.py. Needs python3 with torch (CUDA build), nvcc and ninja; no
# network. Logs go to $OUT (default /tmp/fp8moe-out); the summary is last.
#   usage: bash examples/torch/run_on_gpu.sh      (FP8MOE_SEED=<n> repeats a run)
set -uo pipefail
cd "$(dirname "$0")/../.."
export PATH=/usr/local/cuda/bin:$PATH
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0a}
export FP8MOE_TORCH_BUILD=${FP8MOE_TORCH_BUILD:-/tmp/fp8moe-torch-build}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/fp8moe-out}
mkdir -p "$OUT"

py=${PYTHON:-python3}
"$py" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "|",
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")' 2>&1 | tee "$OUT/torch-env.txt"
echo "nvcc: $(command -v nvcc || echo missing) $(nvcc --version 2>/dev/null | tail -1)"
echo "ninja: $(command -v ninja || "$py" -c 'import ninja; print(ninja.BIN_DIR)' 2>/dev/null || echo missing)"

start=$SECONDS
"$py" -X faulthandler examples/torch/test_torch.py 2>&1 | tee "$OUT/test_torch.log"
rc=${PIPESTATUS[0]}
echo
echo "==== run_on_gpu.sh: test_torch.py exit status $rc after $((SECONDS - start)) s (log: $OUT/test_torch.log) ===="
grep -a -E '^(PASS|FAIL)  build' "$OUT/test_torch.log" | head -1
sed -n '/^==== test_torch summary/,$p' "$OUT/test_torch.log"
exit $rc
