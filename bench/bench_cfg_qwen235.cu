/* bench/bench_cfg_qwen235.cu - fp8moe and the benchmark harness instantiated for Qwen3-MoE 235B. */
#include "bench_layer.cuh"

BENCH_SHAPE(qwen235, 128, 8, 4096, 1536);
