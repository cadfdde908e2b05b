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
export LD_LIBRARY_PATH=$PWD/$B/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
OUT=${OUT:-/tmp/fp8moe-out}
mkdir -p "$OUT"
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
tools=${TOOLS:-"memcheck racecheck initcheck synccheck"}
# program : criterion filter. Under the sanitizers kernels run 10-100x
# slower, so each program runs the tests that reach all of its kernels at
# small sizes: routing (grouped DeepSeekV3 and hostile E=512 K=16) and the
# quantizer; both GEMM paths with every epilogue and edge-sized groups, the
# Hopper one also with its work items claimed from a counter and with its
# A rows gathered; the whole layer (decode/scan/permute/combine, both GEMM
# paths: Qwen3-30B at T=1..1000) with invalid ids and hostile weights.
runs=(
  "gpu_test_routing:gpu_routing/e256_k8_deepseek"
  "gpu_test_routing:gpu_routing/hostile_e512_k16"
  "gpu_test_quantize:gpu_quantize/edges"
  "gpu_test_gemm:gemm_mma/swiglu_quant_small_shapes"
  "gpu_test_gemm:gemm_mma/store_bf16_small_shapes"
  "gpu_test_gemm_sm90:gemm_sm90/swiglu_edge_groups"
  "gpu_test_gemm_sm90:gemm_sm90/store_fp32_33_groups"
  "gpu_test_gemm_sm90:gemm_sm90/dynamic_schedule"
  "gpu_test_gemm_sm90:gemm_sm90/gathered_rows"
  "gpu_test_moe:moe/qwen3_30b"
  "gpu_test_moe:moe/invalid_routed_ids"
  "gpu_test_robust:robust/hostile_routed_input"
)
# RUNS="prog:filter prog:filter ..." replaces the selection; ALL=1 runs
# every test of every GPU test program, the layer tests up to MAX_TOKENS
# tokens (default 300: FP8MOE_TEST_MAX_TOKENS, each test says what it
# leaves out), with PER_RUN_TIMEOUT per program. racecheck's longest runs,
# the portable layer at the DeepSeek-V3 and Kimi-K2 shapes, take minutes
# each even at 16 tokens: run them one per process, e.g.
#   TOOLS=racecheck FP8MOE_TEST_MAX_TOKENS=16 PER_RUN_TIMEOUT=600 \
#   RUNS="gpu_test_moe_portable:moe/deepseek_v3 gpu_test_moe_portable:moe/kimi_k2" bash scripts/gpu-sanitize.sh
[ -n "${RUNS:-}" ] && read -ra runs <<<"$RUNS"
if [ "${ALL:-0}" = 1 ]; then
  runs=()
  for t in "$B"/gpu_test_*; do runs+=("$(basename "$t"):*"); done
  export FP8MOE_TEST_MAX_TOKENS=${MAX_TOKENS:-300}
fi
# JOBS=n runs n (tool, program) pairs at once, spread over the GPUs (all
# visible ones, or the list in GPUS="1 2 3"; CUDA_VISIBLE_DEVICES
# round-robin); the default, 1, runs them in turn.
if [ -n "${GPUS:-}" ]; then
  read -ra gpus <<<"$GPUS"
else
  n=$(nvidia-smi -L 2>/dev/null | wc -l)
  gpus=($(seq 0 $((n > 0 ? n - 1 : 0))))
fi
one() { # tool prog filter gpu -> one summary line on stdout
  local tool=$1 prog=$2 filt=$3 gpu=$4
  local log="$OUT/san-$tool-$prog-$(echo "$filt" | tr '/*' '__').log"
  local extra=()
  [ "$tool" = memcheck ] && extra=(--leak-check full)
  CUDA_VISIBLE_DEVICES=$gpu timeout ${PER_RUN_TIMEOUT:-150} "$CS" --tool "$tool" --target-processes all \
    --error-exitcode 99 "${extra[@]}" "$B/$prog" --jobs=1 --filter="$filt" >"$log" 2>&1
  local rc=$?
  # timed out: timeout stops the sanitizer, not always the program under it,
  # which would go on using the GPU (and skew whatever runs next)
  [ "$rc" = 124 ] && pkill -KILL -f -- "$prog --jobs=1 --filter=$filt" 2>/dev/null
  local res syn
  res=$(grep -a -E "ERROR SUMMARY|RACECHECK SUMMARY" "$log" | sort | uniq -c | tr -s ' ' | tr '\n' ';')
  syn=$(grep -a "Synthesis" "$log" | tail -1 | sed 's/.*Synthesis: //')
  printf '%-9s %-26s %-34s rc=%-3s %s | %s\n' "$tool" "$prog" "$filt" "$rc" "$res" "$syn"
}
lines="$OUT/san-summary.txt"
: >"$lines"
i=0
for tool in $tools; do
  for r in "${runs[@]}"; do
    prog=${r%%:*}; filt=${r#*:}
    [ -x "$B/$prog" ] || continue
    while [ "$(jobs -rp | wc -l)" -ge "${JOBS:-1}" ]; do wait -n; done
    one "$tool" "$prog" "$filt" "${gpus[i % ${#gpus[@]}]}" | tee -a "$lines" &
    i=$((i + 1))
  done
done
wait
(cd "$OUT" && ls san-*.log >/dev/null 2>&1 && tar czf sanitizer-logs.tgz san-*.log && rm -f san-*.log)
echo "==== compute-sanitizer summary ===="
sort "$lines"
