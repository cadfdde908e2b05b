#!/usr/bin/env bash
# The test command (README): on a fresh Debian 12 machine with the CUDA
# toolkit, as root. Installs what it needs, builds everything (all GPU
# architectures), runs every test. GPU tests skip visibly without a GPU.
# The last line is "tests: N passed, N failed, N skipped" (Criterion
# test cases over all test programs).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
build=${BUILD:-build}
[ -f "$build/build.ninja" ] || meson setup "$build" ${MESON_ARGS:-}
meson compile -C "$build"
rc=0
meson test -C "$build" --print-errorlogs --num-processes 1 || rc=$?
log="$build/meson-logs/testlog.txt"
scripts/criterion-summary.sh "$log"
exit $rc
