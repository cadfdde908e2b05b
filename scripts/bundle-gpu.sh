#!/usr/bin/env bash
# Build here (no GPU needed) what the GPU machine runs, and bundle it with the
# shared libraries it lacks (Criterion) into .bundle/ (git-ignored), which the
# device call carries. Usage: scripts/bundle-gpu.sh [meson args...]
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
for f in "$b"/tests/gpu_test_* "$b"/tests/test_no_device "$b"/examples/routed_moe "$b"/examples/moe "$b"/examples/c_api_demo "$b"/bench/bench_moe "$b"/bench/bench_digest; do
  [ -x "$f" ] && [ -f "$f" ] && progs+=("$f")
done
../shared/tools/bundle-for-device .bundle "${progs[@]}"
# cuBLASLt (0.5 GB) is on the GPU machine already: use its copy, not a carried one
rm -f .bundle/lib/libcublas*
cp scripts/gpu-check.sh .bundle/
ls .bundle
