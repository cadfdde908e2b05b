#!/usr/bin/env bash
# CI check that needs no GPU: in the sm_90a build of the DeepSeek-V3
# instantiation, the Hopper GEMM kernels use QGMMA (fp8 wgmma), ptxas
# reports no spill (and no stack frame) for any GEMM kernel of either path
# or the small-T layer's kernel,
# and no "Potential Performance Loss" (ptxas serializing the wgmmas); in the
# sm_89 and sm_100a builds, no spill in the portable GEMM and small-T kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/cuda/bin:$PATH
tools=${SASS_TOOLS:-/tmp/fp8moe-sass-tools}
if [ ! -x "$tools/nvidia/cu13/bin/cuobjdump" ] || [ ! -x "$tools/nvidia/cu13/bin/nvdisasm" ]; then
  python3 -m pip install -q --disable-pip-version-check --target "$tools" nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm
fi
export PATH=$tools/nvidia/cu13/bin:$PATH
obj=$(mktemp -d)/sass_check.o
nvcc -std=c++17 -O3 -Iinclude -gencode arch=compute_90a,code=sm_90a -Xptxas -v -c tests/sass_check.cu -o "$obj" \
  2>"$obj.ptxas"
fail=0
# ptxas -v: "Compiling entry function 'NAME' for 'sm_90a'" ... "N bytes stack frame, N bytes spill stores, N bytes spill loads"
# spill_check PTXAS_LOG ARCH KERNEL_REGEX MIN_KERNELS: no stack frame or spill in any matching
# kernel, no wgmma serialization, and at least MIN_KERNELS of them
spill_check() {
  awk -v arch="$2" -v re="$3" -v min="$4" '
    /Compiling entry function/ { fn = $0; sub(/.*function .\047?/, "", fn); sub(/\047.*/, "", fn) }
    /Potential Performance Loss/ { print "SERIALIZED: " $0; bad++ }
    /bytes stack frame/ && fn ~ re {
      n++
      if ($0 !~ / 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads/) { print "SPILL (" arch "): " fn ": " $0; bad++ }
    }
    END { printf "ptxas %s: %d kernels checked, %d with stack, spills or serialized wgmma\n", arch, n, bad + 0; exit (bad > 0 || n < min) }
  ' "$1"
}
spill_check "$obj.ptxas" sm_90a 'gemm|small_moe' 6 || fail=1
for arch in 89 100a; do
  nvcc -std=c++17 -O3 -Iinclude -gencode "arch=compute_$arch,code=sm_$arch" -Xptxas -v -c tests/sass_check.cu \
    -o "$obj.$arch" 2>"$obj.$arch.ptxas"
  spill_check "$obj.$arch.ptxas" "sm_$arch" 'gemm_mma|small_moe' 3 || fail=1
done
cuobjdump -sass "$obj" >"$obj.sass"
awk '
  /Function :/ { fn = $3; sm90 = (fn ~ /gemm_sm90/); if (sm90) kernels++ }
  /QGMMA/ && sm90 { q[fn]++ }
  END {
    for (f in q) with++
    printf "SASS: %d sm90 GEMM kernels, %d of them with QGMMA\n", kernels, with
    exit (kernels < 2 || with != kernels)
  }
' "$obj.sass" || fail=1
mma=$(awk '/Function :/ { fn = $3 } /HMMA|QMMA/ && fn ~ /gemm_mma/ { c++ } END { print c + 0 }' "$obj.sass")
echo "SASS: portable GEMM kernels issue $mma tensor-core (HMMA/QMMA) instructions on sm_90a"
[ "$mma" -gt 0 ] || fail=1
[ $fail = 0 ] && echo "SASS check: PASS" || { echo "SASS check: FAIL"; exit 1; }
