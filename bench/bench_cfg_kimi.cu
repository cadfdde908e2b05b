/* bench/bench_cfg_kimi.cu - fp8moe and the benchmark harness instantiated for Kimi-K2. */
#include "bench_layer.cuh"

BENCH_SHAPE(kimi, 384, 8, 7168, 2048);
