#!/usr/bin/env bash
# Build here (no GPU needed) what the GPU machine runs, and bundle it with the
# shared libraries it lacks (Criterion) into .bundle/ (git-ignored), to copy
# to a machine with a GPU and run there (scripts/gpu-check.sh,
# gpu-sanitize.sh, gpu-ep.sh). Usage: scripts/bundle-gpu.sh [meson args...]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/cuda/bin:$PATH
b=build-dev
[ -f "$b/build.ninja" ] || meson setup "$b" -Dgpu_archs=90a "$@"
# meson 1.0 records no header dependencies for CUDA objects: rebuild every
# .cu when any header changed since the last bundle.
stamp="$b/.headers-stamp"
if [ ! -f "$stamp" ] || [ -n "$(find include tests bench -name '*.h' -o -name '*.cuh' -newer "$stamp" | head -1)" ]; then
  find tests examples bench -name '*.cu' -exec touch {} +
fi
meson compile -C "$b"
touch "$stamp"
rm -rf .bundle
progs=()
for f in "$b"/tests/gpu_test_* "$b"/tests/test_no_device "$b"/examples/routed_moe "$b"/examples/moe \
  "$b"/examples/c_api_demo "$b"/bench/bench_moe "$b"/bench/bench_digest "$b"/bench/bench_gemm; do
  [ -x "$f" ] && [ -f "$f" ] && progs+=("$f")
done
# Each program with the shared libraries it links (Criterion and its
# dependencies), except the C/C++ runtime every Linux machine has, the CUDA
# driver, and the CUDA runtime and cuBLASLt (0.5 GB), which a machine with a
# CUDA toolkit has: gpu-check.sh puts its lib64 on LD_LIBRARY_PATH.
mkdir -p .bundle/lib
for prog in "${progs[@]}"; do
  cp "$prog" .bundle/
  ldd "$prog" | awk '/=> \// {print $3}' |
    (grep -v -E '/(libc|libm|libstdc\+\+|libgcc_s|libpthread|libdl|librt|libcuda|libcudart|libcublas(Lt)?|ld-linux[^/]*)\.so' || true) |
    while read -r lib; do cp -Lu "$lib" .bundle/lib/; done
done
# the expert-parallel examples, where built (they link the GPU machine's NCCL: scripts/gpu-ep.sh)
if [ -x "$b/examples/ep_alltoall" ] && [ -x "$b/examples/ep_nccl" ]; then
  rm -rf .bundle-ep
  mkdir -p .bundle-ep
  cp "$b/examples/ep_alltoall" "$b/examples/ep_nccl" .bundle-ep/
fi
du -sh .bundle | awk '{print "bundle: " $1}'

