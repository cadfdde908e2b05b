#!/usr/bin/env bash
# Runs on the GPU machine over the bundle (scripts/bundle-gpu.sh):
# compute-sanitizer memcheck, racecheck, initcheck and synccheck over the GPU
# suite. The sanitizers slow kernels 10-100x, so the whole-layer tests run on
# their smaller shapes (the selection below); every kernel the library has
# (routing, quantizer, decode/scan/permute, both GEMM paths, combine) is
# exercised. Ends with one line per (tool, program) and its error summary.
set -uo pipefail
cd "$(dirname "$0")/.."
B=.bundle
export LD_LIBRARY_PATH=$PWD/$B/lib:${LD_LIBRARY_PATH:-}
OUT=${OUT:-/tmp/fp8moe-out}
mkdir -p "$OUT"
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
tools=${TOOLS:-"memcheck racecheck initcheck synccheck"}
# program : criterion filter
runs=(
  "gpu_test_routing:*"
  "gpu_test_gemm:*"
  "gpu_test_gemm_sm90:*"
  "gpu_test_moe:moe/qwen3_30b"
  "gpu_test_moe:moe/invalid_routed_ids"
  "gpu_test_moe:moe/skewed_routing"
  "gpu_test_moe_portable:moe/qwen3_30b"
  "gpu_test_robust:robust/hostile_routed_input"
)
summary=()
for tool in $tools; do
  for r in "${runs[@]}"; do
    prog=${r%%:*}; filt=${r#*:}
    [ -x "$B/$prog" ] || continue
    log="$OUT/san-$tool-$prog-$(echo "$filt" | tr '/*' '__').log"
    extra=()
    [ "$tool" = memcheck ] && extra=(--leak-check full)
    timeout 900 "$CS" --tool "$tool" --target-processes all --error-exitcode 99 "${extra[@]}" \
      "$B/$prog" --jobs=1 --filter="$filt" >"$log" 2>&1
    rc=$?
    res=$(grep -a -E "ERROR SUMMARY|RACECHECK SUMMARY" "$log" | sort | uniq -c | tr -s ' ' | tr '\n' ';')
    syn=$(grep -a "Synthesis" "$log" | tail -1 | sed 's/.*Synthesis: //')
    summary+=("$(printf '%-9s %-22s %-28s rc=%-3s %s | %s' "$tool" "$prog" "$filt" "$rc" "$res" "$syn")")
  done
done
(cd "$OUT" && ls san-*.log >/dev/null 2>&1 && tar czf sanitizer-logs.tgz san-*.log && rm -f san-*.log)
echo "==== compute-sanitizer summary ===="
printf '%s\n' "${summary[@]}"
