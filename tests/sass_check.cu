/* tests/sass_check.cu - the GEMM instantiations whose machine code CI reads
 * (scripts/check-sass.sh): the DeepSeek-V3 GEMM1 (SwiGLU + requant) and
 * GEMM2 of both paths, and the small-T layer. Compiled only, never run. */
#include <fp8moe/fp8moe.cuh>

FP8MOE_DEFINE(sass_dsv3, 256, 8, 7168, 2048);
