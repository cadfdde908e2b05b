set -u
export OUT=${OUT:-/tmp/o} PYTHONUNBUFFERED=1
export LD_LIBRARY_PATH=$PWD/.bundle/lib:/usr/local/cuda/lib64
B=.bundle
timeout 100 $B/bench_moe --config dsv3 --tokens 1,16,128,1024 --no-peer --pdl 0 --csv $OUT/ab-pdl0.csv > $OUT/ab-pdl0.txt 2>/dev/null; echo "pdl0 rc=$?"
timeout 100 $B/bench_moe --config dsv3 --tokens 1,16,128,1024 --no-peer --pdl 1 --csv $OUT/ab-pdl1.csv > $OUT/ab-pdl1.txt 2>/dev/null; echo "pdl1 rc=$?"
timeout 100 $B/bench_moe_bn128 --config dsv3 --tokens 1,16,128,1024 --no-peer --pdl 1 --csv $OUT/ab-bn128.csv > $OUT/ab-bn128.txt 2>/dev/null; echo "bn128 rc=$?"
timeout 150 bash examples/torch/run_on_gpu.sh > $OUT/torch.txt 2>&1; echo "torch rc=$?"
timeout 330 bash scripts/gpu-check.sh > $OUT/check.txt 2>&1; echo "check rc=$?"
cd $OUT && tar czf run3.tgz *.csv test_torch.log logs-*.tgz 2>/dev/null; rm -f *.csv
for f in ab-pdl0 ab-pdl1 ab-bn128; do echo "== $f"; grep -E "^dsv3" $OUT/$f.txt | awk '{print $1,$2,$3,$4,$6}'; done
tail -12 $OUT/torch.txt
tail -14 $OUT/check.txt
