/* bench/bench_cfg_dsv3.cu - fp8moe and the benchmark harness instantiated for DeepSeek-V3 and the EP shard. */
#include "bench_layer.cuh"

BENCH_SHAPE(dsv3, 256, 8, 7168, 2048);
