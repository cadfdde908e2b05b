#!/usr/bin/env bash
# Runs on the GPU machine, from anywhere in the repository: JIT-builds the
# PyTorch extension for sm_90a (TORCH_CUDA_ARCH_LIST=9.0a; fp8moe_torch.py
# turns it into -gencode arch=compute_90a,code=sm_90a) and runs
# test_torch.py. Needs python3 with torch (CUDA build), nvcc and ninja; no
# network. Logs go to $OUT (default /tmp/fp8moe-out); the summary is last.
#   usage: bash examples/torch/run_on_gpu.sh      (FP8MOE_SEED=<n> repeats a run)
set -uo pipefail
cd "$(dirname "$0")/../.."
. examples/torch/env.sh

start=$SECONDS
"$py" -X faulthandler examples/torch/test_torch.py 2>&1 | tee "$OUT/test_torch.log"
rc=${PIPESTATUS[0]}
echo
echo "==== run_on_gpu.sh: test_torch.py exit status $rc after $((SECONDS - start)) s (log: $OUT/test_torch.log) ===="
grep -a -E '^(PASS|FAIL)  build' "$OUT/test_torch.log" | head -1
sed -n '/^==== test_torch summary/,$p' "$OUT/test_torch.log"
exit $rc
