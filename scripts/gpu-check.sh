#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root, over the bundle built by
# scripts/bundle-gpu.sh: every GPU test program, the examples, and (with
# BENCH=1 or BENCH="args") the benchmark. Logs go to $OUT; the last lines are
# a short pass/fail summary, also written line by line to $OUT/summary.txt
# (complete up to the last finished program if the run is cut short).
#   usage: bash scripts/gpu-check.sh [test-name-filter]
# JOBS=n runs n test programs at once (default 1: in turn); the programs
# share the GPU, so their own timings mean nothing then, and the benchmark
# (BENCH) still runs alone, after them.
set -uo pipefail
cd "$(dirname "$0")/.."
B=.bundle
export LD_LIBRARY_PATH=$PWD/$B/lib:/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
OUT=${OUT:-/tmp/fp8moe-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/gpu.txt"
: >"$OUT/summary.txt"
note() { printf '%s\n' "$1" >>"$OUT/summary.txt"; }
filter=${1:-}
one() { # test program -> its summary line, and its failures on stdout
  local t=$1 name start rc syn
  name=$(basename "$t")
  start=$(date +%s)
  "$t" --verbose --jobs=1 >"$OUT/$name.log" 2>&1
  rc=$?
  syn=$(grep -a "Synthesis" "$OUT/$name.log" | tail -1 | sed 's/.*Synthesis: //')
  note "$(printf '%-26s rc=%-3s %4ss  %s' "$name" "$rc" "$(( $(date +%s) - start ))" "$syn")"
  grep -a -E "\[(FAIL|----)\]|rel L2|seed" "$OUT/$name.log" | grep -av "Criterion v" | head -40
}
for t in "$B"/gpu_test_*; do
  name=$(basename "$t")
  [ -n "$filter" ] && [[ "$name" != *$filter* ]] && continue
  while [ "$(jobs -rp | wc -l)" -ge "${JOBS:-1}" ]; do wait -n; done
  one "$t" &
done
wait
if [ -z "$filter" ] || [ "$filter" = examples ]; then
  for ex in routed_moe moe c_api_demo; do
    [ -x "$B/$ex" ] || continue
    "$B/$ex" >"$OUT/$ex.log" 2>&1
    rc=$?
    note "$(printf '%-26s rc=%-3s %s' "$ex" "$rc" "$(grep -a -E 'error|time' "$OUT/$ex.log" | tr '\n' ' ' | cut -c1-150)")"
  done
fi
if [ -n "${BENCH:-}" ] && [ -x "$B/bench_moe" ]; then
  args=${BENCH}; [ "$args" = 1 ] && args=""
  "$B/bench_moe" $args --csv "$OUT/bench.csv" >"$OUT/bench.txt" 2>"$OUT/bench.progress"
  note "$(printf '%-26s rc=%-3s (table in bench.txt)' bench_moe "$?")"
  cat "$OUT/bench.txt"
fi
# at most 8 files come back from the GPU machine: pack the logs into one
(cd "$OUT" && ls *.log >/dev/null 2>&1 && tar czf logs-$(date +%H%M%S).tgz *.log && rm -f *.log)
echo "==== summary ($(cat "$OUT/gpu.txt" | cut -d, -f1)) ===="
cat "$OUT/summary.txt"
