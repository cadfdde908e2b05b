#!/usr/bin/env bash
# The demo command (README): on a fresh Debian 12 machine with the CUDA
# toolkit, as root. Builds the examples; with a GPU runs the non-routed
# DeepSeek-V3 layer (examples/moe.cu) against the CPU reference; without one
# says so and runs the CPU reference demo instead.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
build=${BUILD:-build-demo}
[ -f "$build/build.ninja" ] || meson setup "$build" -Dtests=false -Dbench=false ${MESON_ARGS:-} >/dev/null
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  meson compile -C "$build" moe
  "$build/examples/moe" "${1:-512}"
else
  echo "demo: no GPU on this machine; running the CPU reference demo instead (examples/demo_cpu.c)."
  meson compile -C "$build" demo_cpu >/dev/null
  # examples/ holds it when CUDA is configured, the top level otherwise
  for exe in "$build/examples/demo_cpu" "$build/demo_cpu"; do [ -x "$exe" ] && break; done
  "$exe"
fi
