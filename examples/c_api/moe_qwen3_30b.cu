/* examples/c_api/moe_qwen3_30b.cu - the one CUDA file of a C program: it
 * instantiates fp8moe for Qwen3-30B-A3B (E=128, K=8, H=2048, I=768).
 * Everything else (examples/c_api/main.c) is plain C. Build: see main.c. */
#include <fp8moe/fp8moe.cuh>

FP8MOE_DEFINE(qwen3_30b, 128, 8, 2048, 768);
