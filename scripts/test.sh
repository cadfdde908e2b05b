#!/usr/bin/env bash
# The test command (README): on a fresh Debian 12 machine with the CUDA
# toolkit, as root. Installs what it needs, builds everything, runs every
# test. GPU tests skip visibly without a GPU. The last line is
# "tests: N passed, N failed, N skipped" (Criterion test cases over all test
# programs, plus one for each test program that is not a Criterion one, such
# as the header checks).
#
# GPU code is built for one target: the GPUs of this machine (sm_89, or
# sm_XXa from Hopper on), or sm_90a without a GPU: the GPU programs only skip
# without a GPU, and every extra target adds its device compilation to every
# GPU program. CI compiles every target separately (scripts/ci-extra.sh).
#   FP8MOE_GPU_ARCHS=89,90a,100a bash scripts/test.sh   # every target here
#   BUILD=dir   build directory (default build); MESON_ARGS: more setup options
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
build=${BUILD:-build}

gpu_archs() {
  local caps
  caps=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null) || caps=
  local archs=() cap major minor cc
  for cap in $caps; do
    major=${cap%.*} minor=${cap#*.}
    [[ $major =~ ^[0-9]+$ && $minor =~ ^[0-9]+$ ]] || continue
    cc=$((major * 10 + minor))
    if ((cc == 89)); then archs+=(89); elif ((cc >= 90)); then archs+=("${cc}a"); fi
  done
  if ((${#archs[@]} == 0)); then echo 90a; else printf '%s\n' "${archs[@]}" | sort -u | paste -sd,; fi
}
archs=${FP8MOE_GPU_ARCHS:-$(gpu_archs)}

if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" -Dgpu_archs="$archs" ${MESON_ARGS:-}
elif [ -n "${FP8MOE_GPU_ARCHS:-}" ]; then
  meson configure "$build" -Dgpu_archs="$archs"
fi
meson compile -C "$build"
rc=0
meson test -C "$build" --print-errorlogs --num-processes 1 || rc=$?
log="$build/meson-logs/testlog.txt"
scripts/criterion-summary.sh "$log"
exit $rc
