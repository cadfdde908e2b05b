#!/usr/bin/env bash
# On a machine with a GPU, PyTorch and Triton, from anywhere in the
# repository: runs bench/triton_peer.py (fp8moe against a vLLM-style Triton
# fused MoE, same process, same inputs) with the arguments given. The
# fp8moe binding is JIT-built for sm_90a by default (TORCH_CUDA_ARCH_LIST=9.0a;
# set it for another GPU) into FP8MOE_TORCH_BUILD, which caches it across
# runs. Needs python3 with torch (CUDA build), triton and numpy, nvcc and
# ninja; no network. The log goes to $OUT (default /tmp/fp8moe-out); the
# summary is last.
#   usage: bash bench/run_triton_peer.sh [--config dsv3,ep] [--tokens 1,16,128,1024] [--csv FILE] ...
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
. examples/torch/env.sh
"$py" -c 'import triton; print("triton", triton.__version__)' 2>&1 | tail -1

start=$SECONDS
"$py" -X faulthandler bench/triton_peer.py "$@" 2>&1 | tee "$OUT/triton_peer.log"
rc=${PIPESTATUS[0]}
echo
echo "==== run_triton_peer.sh: triton_peer.py exit status $rc after $((SECONDS - start)) s (log: $OUT/triton_peer.log) ===="
grep -a '^triton_peer: skipped' "$OUT/triton_peer.log"
sed -n '/^==== triton_peer summary/,$p' "$OUT/triton_peer.log"
exit "$rc"
