#!/usr/bin/env bash
# Build here (no GPU needed) what the GPU machine runs, and bundle it with the
# shared libraries it lacks (Criterion) into .bundle/ (git-ignored), which the
# device call carries. Usage: scripts/bundle-gpu.sh [meson args...]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/cuda/bin:$PATH
b=build-dev
[ -f "$b/build.ninja" ] || meson setup "$b" -Dgpu_archs=90a "$@"
meson compile -C "$b"
rm -rf .bundle
progs=()
for f in "$b"/tests/gpu_test_* "$b"/examples/routed_moe "$b"/examples/moe "$b"/examples/c_api_demo "$b"/bench/bench_moe; do
  [ -x "$f" ] && [ -f "$f" ] && progs+=("$f")
done
../shared/tools/bundle-for-device .bundle "${progs[@]}"
cp scripts/gpu-check.sh .bundle/
ls .bundle
