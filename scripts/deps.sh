#!/usr/bin/env bash
# Sourced by scripts/test.sh and scripts/demo.sh: puts nvcc on PATH and
# installs, on Debian as root, whichever of meson, ninja, pkg-config and
# Criterion is missing.
export PATH=/usr/local/cuda/bin:$PATH
need=()
command -v meson >/dev/null || need+=(meson)
command -v ninja >/dev/null || need+=(ninja-build)
command -v pkg-config >/dev/null || need+=(pkg-config)
pkg-config --exists criterion 2>/dev/null || need+=(libcriterion-dev)
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
