/* tiny.cu - the one CUDA file of the consumer: instantiates fp8moe for a
 * tiny shape (E=8 experts, top-2, H=256, I=256). consumer.c calls it. */
#include <fp8moe/fp8moe.cuh>

FP8MOE_DEFINE(tiny, 8, 2, 256, 256);
