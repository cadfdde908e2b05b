#!/usr/bin/env bash
# Build the scratch probe of the sm90 GEMM in four modes (see scratch_sm90_probe.cu):
#   bench/scratch_sm90_probe.sh OUTDIR      -> OUTDIR/probe0 .. probe3
set -euo pipefail
out=$1; root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d); mkdir -p "$tmp/fp8moe" "$out"
cp "$root"/include/fp8moe/* "$tmp/fp8moe/"
python3 - "$tmp/fp8moe/gemm_sm90_e4m3_blockscale.cuh" <<'PY'
import sys
p = sys.argv[1]; s = open(p).read()
a = "        if (active) {\n          /* this stage's scales"
assert s.count(a) == 1
s = s.replace(a, "        if (active && !(PROBE & 1)) {\n          /* this stage's scales")
b = "            sm90::mbar_arrive_expect_tx(&full[stage], bytes);\n"
assert s.count(b) == 1
s = s.replace(b, "            if (PROBE & 2) { sm90::mbar_arrive(&full[stage]); if (++stage == STAGES) { stage = 0; phase ^= 1u; } continue; }\n" + b)
open(p, "w").write(s)
PY
for m in 0 1 2 3; do
  /usr/local/cuda/bin/nvcc -std=c++17 -O3 -I"$tmp" -DPROBE=$m -gencode arch=compute_90a,code=sm_90a \
    "$root/bench/scratch_sm90_probe.cu" -o "$out/probe$m" &
done
wait
rm -rf "$tmp"
