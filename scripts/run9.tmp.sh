set -u
export OUT=${OUT:-/tmp/o}
export LD_LIBRARY_PATH=$PWD/.bundle/lib:/usr/local/cuda/lib64
for v in bench_moe_v5 bench_moe bench_moe_v5 bench_moe; do
  timeout 60 .bundle/$v --config mixtral,dsv3,ep --tokens 1 --no-peer > $OUT/ab-$v.txt 2>/dev/null; echo "$v rc=$?"
  grep -E "^(mixtral|dsv3|ep) " $OUT/ab-$v.txt | awk '{printf "%s %s %s %s %s\n",$1,$2,$3,$4,$6}'
done
timeout 100 .bundle/gpu_test_gemm --jobs=1 > $OUT/gemm.log 2>&1; echo "gemm rc=$?"; grep -a Synthesis $OUT/gemm.log
