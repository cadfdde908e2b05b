#!/bin/sh
# usage: list.sh INCLUDE_DIR HEADER... - fails if the public headers in
# INCLUDE_DIR (*.h, *.cuh; detail/ is internal) are not exactly the headers
# tests/meson.build checks one by one, so a new header cannot go unchecked.
dir=$1
shift
want=$(printf '%s\n' "$@" | sort)
have=$(cd "$dir" && ls -1 -- *.h *.cuh 2>/dev/null | sort)
if [ "$want" != "$have" ]; then
  echo "public headers in $dir differ from the lists in tests/meson.build:"
  printf '%s\n' "$want" >"${TMPDIR:-/tmp}/fp8moe-hl-want.$$"
  printf '%s\n' "$have" | diff "${TMPDIR:-/tmp}/fp8moe-hl-want.$$" - | sed -n 's/^</  listed, no such file:/p; s/^>/  not listed:/p'
  rm -f "${TMPDIR:-/tmp}/fp8moe-hl-want.$$"
  exit 1
fi
echo "$(printf '%s\n' "$have" | wc -l) public headers, all checked"
