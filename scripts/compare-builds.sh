#!/usr/bin/env bash
# Compare two versions of fp8moe bit for bit on a machine with a GPU: builds
# bench/bench_digest.cu (a digest of every output on fixed data) against the
# headers of git revision REV and against the working tree, runs both and
# diffs their digests. Exit 0 when every line matches.
#   usage: scripts/compare-builds.sh REV [ARCH]      (ARCH default 90a)
# Or compare two digest programs built elsewhere:
#   usage: scripts/compare-builds.sh --run DIGEST_A DIGEST_B
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/cuda/bin:$PATH
if [ "${1:-}" = --run ]; then
  a=$2; b=$3
else
  rev=${1:?usage: scripts/compare-builds.sh REV [ARCH]}
  arch=${2:-90a}
  tmp=$(mktemp -d)
  trap 'git worktree remove --force "$tmp/old" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
  git worktree add --detach "$tmp/old" "$rev" >/dev/null
  flags=(-std=c++17 -O3 -gencode "arch=compute_$arch,code=sm_$arch")
  nvcc "${flags[@]}" -I"$tmp/old/include" bench/bench_digest.cu -o "$tmp/digest_old" &
  nvcc "${flags[@]}" -Iinclude bench/bench_digest.cu -o "$tmp/digest_new" &
  wait
  a=$tmp/digest_old; b=$tmp/digest_new
fi
"$a" >"${TMPDIR:-/tmp}/digest_a.txt"
"$b" >"${TMPDIR:-/tmp}/digest_b.txt"
n=$(wc -l <"${TMPDIR:-/tmp}/digest_a.txt")
if diff "${TMPDIR:-/tmp}/digest_a.txt" "${TMPDIR:-/tmp}/digest_b.txt"; then
  echo "compare-builds: all $n digests equal"
else
  echo "compare-builds: digests differ (lines above: < first, > second)"
  exit 1
fi
