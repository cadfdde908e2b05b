#!/usr/bin/env bash
# CI: the three ways a project consumes fp8moe, each checked by building and
# running a tiny consumer (tests/consumers/) on this machine, no GPU needed:
#
#   meson_subproject  fp8moe as a Meson subproject (subprojects/fp8moe, a
#                     symbolic link here), dependency('fp8moe')
#   pkgconfig         `meson install` to a prefix; plain nvcc + g++ with
#                     `pkg-config --cflags fp8moe` (the .pc must give the
#                     include directory and no libraries)
#   cmake             the same install, moved elsewhere (the CMake package
#                     must be relocatable); find_package(fp8moe) and the
#                     fp8moe::fp8moe target, plus the version file's rules
#
# Each consumer instantiates FP8MOE_DEFINE(tiny, 8, 2, 256, 256) for sm_90a
# only and checks the workspace size and argument validation. One line per
# consumer, PASS or FAIL (with the log's tail); exit status non-zero if any
# failed. Needs meson, ninja, pkg-config, cmake >= 3.25 and nvcc (scripts/
# test.sh installs the first three). Build trees live in a temporary
# directory, removed at the end (KEEP=1 keeps it).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export PATH=/usr/local/cuda/bin:$PATH
nvcc_path=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/fp8moe-consumers.XXXXXX")
if [ -n "${KEEP:-}" ]; then echo "build trees kept in $tmp"; else trap 'rm -rf "$tmp"' EXIT; fi

results=()
failed=0
# run NAME CMD...: runs CMD with its output in $tmp/NAME.log, records PASS/FAIL
run() {
  local name=$1
  shift
  local start=$SECONDS
  if "$@" >"$tmp/$name.log" 2>&1; then
    results+=("$(printf 'PASS  %-17s %3ss  %s' "$name" $((SECONDS - start)) "$(grep -a '^consumer:' "$tmp/$name.log" | tail -1 | cut -c1-110)")")
  else
    results+=("$(printf 'FAIL  %-17s %3ss  (the tail of its log is above)' "$name" $((SECONDS - start)))")
    echo "---- $name failed; last lines of its log:"
    tail -n 25 "$tmp/$name.log"
    failed=1
  fi
}

# --- the install every non-subproject consumer uses ---
prefix=$tmp/prefix
install_fp8moe() {
  meson setup "$tmp/fp8moe-build" --prefix="$prefix" -Dtests=false -Dexamples=false -Dbench=false &&
    meson install -C "$tmp/fp8moe-build" &&
    test -f "$prefix/include/fp8moe/fp8moe.h" && test -f "$prefix/include/fp8moe/fp8moe.cuh"
}

# --- (a) Meson subproject ---
consumer_meson() {
  local d=$tmp/meson_subproject
  cp -r "$root/tests/consumers/meson_subproject" "$d" &&
    mkdir -p "$d/subprojects" && ln -s "$root" "$d/subprojects/fp8moe" &&
    meson setup "$d/build" "$d" --force-fallback-for=fp8moe &&
    grep -q "Dependency fp8moe found: YES .*(overridden)" "$d/build/meson-logs/meson-log.txt" &&
    meson compile -C "$d/build" && "$d/build/consumer"
}

# --- (b) pkg-config, plain nvcc + g++ ---
consumer_pkgconfig() {
  local d=$tmp/pkgconfig pcdir
  pcdir=$(dirname "$(find "$prefix" -name fp8moe.pc | head -1)")
  [ -f "$pcdir/fp8moe.pc" ] || { echo "no fp8moe.pc under $prefix"; return 1; }
  export PKG_CONFIG_PATH=$pcdir
  local cflags libs version
  cflags=$(pkg-config --cflags fp8moe) && libs=$(pkg-config --libs fp8moe) && version=$(pkg-config --modversion fp8moe) ||
    return 1
  echo "fp8moe.pc: version '$version', cflags '$cflags', libs '$libs'"
  # header-only: the include directory, nothing to link
  [ "$(echo $cflags)" = "-I$prefix/include" ] || { echo "unexpected Cflags: '$cflags'"; return 1; }
  [ -z "$(echo $libs)" ] || { echo "unexpected Libs: '$libs'"; return 1; }
  cp -r "$root/tests/consumers/pkgconfig" "$d" || return 1
  if command -v make >/dev/null; then
    make -C "$d" NVCC="$nvcc_path" || return 1
  else # the Makefile's three commands, where make is not installed
    local gencode="-gencode arch=compute_90a,code=sm_90a"
    (cd "$d" && g++ -x c++ -std=c++17 -O2 -Wall -Wextra $cflags -DEXPECT_VERSION="\"$version\"" -c ../common/consumer.c -o main.o &&
      "$nvcc_path" -std=c++17 -O3 $gencode $cflags -c ../common/tiny.cu -o tiny.o &&
      "$nvcc_path" $gencode main.o tiny.o -o consumer) || return 1
  fi
  "$d/consumer"
}

# --- (c) CMake find_package, against the install moved to a new prefix ---
consumer_cmake() {
  local d=$tmp/cmake moved=$tmp/relocated-prefix
  mv "$prefix" "$moved" || return 1
  cp -r "$root/tests/consumers/cmake" "$d" &&
    cmake -S "$d" -B "$d/build" -G Ninja -DCMAKE_PREFIX_PATH="$moved" -DCMAKE_CUDA_COMPILER="$nvcc_path" \
      -DFP8MOE_CONSUMER_CHECK_VERSIONS=ON &&
    grep -q "^fp8moe_DIR:PATH=$moved/" "$d/build/CMakeCache.txt" &&
    cmake --build "$d/build" && "$d/build/consumer"
}

# the consumers' shared sources sit beside them, as in tests/consumers/
cp -r "$root/tests/consumers/common" "$tmp/common"
run install install_fp8moe
run meson_subproject consumer_meson
if [ -f "$prefix/include/fp8moe/fp8moe.h" ]; then
  run pkgconfig consumer_pkgconfig
  run cmake consumer_cmake
else
  results+=("FAIL  pkgconfig         (no install)" "FAIL  cmake             (no install)")
  failed=1
fi

echo "==== fp8moe consumers ===="
printf '%s\n' "${results[@]}"
exit $failed
