#!/usr/bin/env bash
# Runs on the GPU machine over the bundle (scripts/bundle-gpu.sh): profiles one
# layer run of bench_moe per T with Nsight Compute at the card's own clocks
# (--clock-control none, --cache-control none: what the benchmark sees), one
# row per kernel: time, DRAM read bytes and throughput, SM and tensor-pipe
# use. Kernels are serialized under ncu, so the gaps between launches are not
# in these times (the benchmark's are).
#   usage: bash scripts/gpu-profile.sh [config] [T list]   (the non-routed layer)
set -uo pipefail
cd "$(dirname "$0")/.."
B=.bundle
export LD_LIBRARY_PATH=$PWD/$B/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
OUT=${OUT:-/tmp/fp8moe-out}
mkdir -p "$OUT"
cfg=${1:-dsv3}
tokens=${2:-1,128,4096,16384}
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
kernels='regex:routing_kernel|decode_topk|scan_expert|permute_rows|index_rows|gemm_mma_e4m3|gemm_sm90|combine_kernel'
metrics=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed,sm__inst_executed_pipe_tensor_op_gmma.avg.pct_of_peak_sustained_elapsed,launch__grid_size,launch__registers_per_thread
for T in ${tokens//,/ }; do
  # the first layer runs are the bench's non-routed warm-up: skip two runs (7 kernels each), profile the third
  "$NCU" --clock-control none --cache-control none -k "$kernels" --launch-skip 14 --launch-count 7 \
    --metrics "$metrics" --csv --page raw \
    "$B/bench_moe" --config "$cfg" --tokens "$T" --no-peer --reps 1 --warmup 3 \
    >"$OUT/ncu-$cfg-T$T.csv" 2>"$OUT/ncu-$cfg-T$T.err"
  echo "== ncu $cfg T=$T (rc $?) =="
  python3 - "$OUT/ncu-$cfg-T$T.csv" <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if r]
hdr = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
h = rows[hdr]; data = rows[hdr + 2:]
col = lambda r, n: r[h.index(n)] if n in h else ""
tot = 0.0
print(f"{'kernel':<44} {'us':>9} {'rd MB':>9} {'rd GB/s':>8} {'dram%':>6} {'sm%':>6} {'hmma%':>6} {'gmma%':>6} {'grid':>6} {'regs':>4}")
for r in data:
    us = float(col(r, "gpu__time_duration.sum").replace(",", "")) / 1e3
    rd = float(col(r, "dram__bytes_read.sum").replace(",", "") or 0)
    tot += us
    name = col(r, "Kernel Name").split("(")[0].replace("void ", "")[:44]
    print(f"{name:<44} {us:9.1f} {rd/1e6:9.1f} {rd/us/1e3 if us else 0:8.0f} {col(r,'dram__throughput.avg.pct_of_peak_sustained_elapsed'):>6} "
          f"{col(r,'sm__throughput.avg.pct_of_peak_sustained_elapsed'):>6} {col(r,'sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed'):>6} "
          f"{col(r,'sm__inst_executed_pipe_tensor_op_gmma.avg.pct_of_peak_sustained_elapsed'):>6} {col(r,'launch__grid_size'):>6} {col(r,'launch__registers_per_thread'):>4}")
print(f"{'sum of kernel times':<44} {tot:9.1f}")
PY
done
