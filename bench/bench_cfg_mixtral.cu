/* bench/bench_cfg_mixtral.cu - fp8moe and the benchmark harness instantiated for Mixtral-style. */
#include "bench_layer.cuh"

BENCH_SHAPE(mixtral, 8, 2, 4096, 14336);
