#!/usr/bin/env bash
# CI checks beyond the test command: the host tests under ASan/UBSan, the
# examples and the benchmark (every reference shape) compiled for every GPU
# target (the test command builds for one), the SASS / spill check of the
# GEMM kernels (no GPU needed), the code blocks of README.md and docs/*.md
# compiled against include/, and the consumer builds (meson install +
# pkg-config, Meson subproject, CMake find_package).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/cuda/bin:$PATH
b=build-asan
[ -f "$b/build.ninja" ] || meson setup "$b" -Dsanitize_host=true -Db_sanitize=address,undefined -Db_lundef=false \
  -Dbuildtype=debugoptimized >/dev/null
meson compile -C "$b"
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
  meson test -C "$b" --print-errorlogs --num-processes 1
echo "host tests under ASan/UBSan:"
scripts/criterion-summary.sh "$b/meson-logs/testlog.txt"

b=build-archs
[ -f "$b/build.ninja" ] || meson setup "$b" -Dgpu_archs=89,90a,100a -Dtests=false >/dev/null
meson compile -C "$b"
echo "examples and benchmark built for sm_89, sm_90a and sm_100a"

bash scripts/check-sass.sh
bash scripts/check-doc-snippets.sh
bash scripts/ci-consumers.sh
