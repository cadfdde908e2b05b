/* bench/bench_cfg_qwen30.cu - fp8moe and the benchmark harness instantiated for Qwen3-MoE 30B. */
#include "bench_layer.cuh"

BENCH_SHAPE(qwen30, 128, 8, 2048, 768);
