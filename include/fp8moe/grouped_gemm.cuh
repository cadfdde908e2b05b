/* fp8moe/grouped_gemm.cuh - instantiate the standalone grouped FP8 GEMM.
 *
 * FP8MOE_DEFINE_GROUPED_GEMM(name, N, K); in one .cu file generates
 *
 *   extern "C" fp8moe_status name_run(const fp8moe_grouped_gemm_args *args,
 *                                     fp8moe_stream stream);
 *
 * for B of shape [G, N, K] (N, K positive multiples of 128, checked at
 * compile time). It validates the arguments (fp8moe_validate_grouped_gemm_args
 * in grouped_gemm.h: a bad one returns a status, nothing is launched), then
 * enqueues the grouped GEMM on the stream: no allocation, no host
 * synchronization, so it can be captured in a CUDA graph. Both output dtypes
 * are compiled in; several DEFINEs (other names, other N, K) may share a .cu.
 * Needs an FP8 GPU (sm_89 or newer): FP8MOE_ERROR_UNSUPPORTED_DEVICE otherwise.
 *
 * A complete example (nvcc -std=c++17 -Iinclude -gencode arch=compute_90a,code=sm_90a gg.cu -o gg):
 *
 *     #include <fp8moe/grouped_gemm.cuh>
 *     #include <stdio.h>
 *
 *     FP8MOE_DEFINE_GROUPED_GEMM(down, 7168, 2048);  // name, N, K
 *
 *     int main(void) {
 *       enum { G = 2, M = 3, N = 7168, K = 2048 };
 *       int32_t offs[G + 1] = {0, 1, 3};              // group 0: row 0; group 1: rows 1, 2
 *       void *a, *b, *c; float *sa, *sb; int32_t *d_offs;
 *       cudaMalloc(&a, (size_t)M * K);                // fp8 e4m3 [M, K]
 *       cudaMalloc(&sa, sizeof(float) * (K / 128) * M);   // [K/128, M]
 *       cudaMalloc(&b, (size_t)G * N * K);            // fp8 e4m3 [G, N, K]
 *       cudaMalloc(&sb, sizeof(float) * G * (N / 128) * (K / 128));
 *       cudaMalloc(&c, sizeof(uint16_t) * M * N);     // bf16 [M, N]
 *       cudaMalloc(&d_offs, sizeof offs);
 *       cudaMemcpy(d_offs, offs, sizeof offs, cudaMemcpyHostToDevice);
 *       // ... fill a, sa, b, sb with your quantized data ...
 *       fp8moe_grouped_gemm_args args = {G, M, a, sa, b, sb, d_offs, c, FP8MOE_DTYPE_BF16};
 *       fp8moe_status s = down_run(&args, 0);         // default stream
 *       if (s != FP8MOE_OK) { printf("%s\n", fp8moe_status_string(s)); return 1; }
 *       cudaDeviceSynchronize();                      // c[m, n] = sum_k A[m,k] * B[g(m),n,k]
 *       return 0;
 *     }
 *
 * Prints nothing and returns 0 on success; with num_rows = -1 it would print
 * "FP8MOE_ERROR_INVALID_NUM_TOKENS: num_tokens is negative" before launching.
 */
#ifndef FP8MOE_GROUPED_GEMM_CUH
#define FP8MOE_GROUPED_GEMM_CUH

#include "grouped_gemm.h"
#include "detail/gemm/dispatch.cuh"

namespace fp8moe {
namespace detail {

/* The body of name_run: everything DEFINE pastes N and K into. */
template <int N, int K>
static fp8moe_status grouped_gemm_run(const fp8moe_grouped_gemm_args *args, cudaStream_t stream) {
  static_assert(N > 0 && K > 0 && N % 128 == 0 && K % 128 == 0,
                "FP8MOE_DEFINE_GROUPED_GEMM: N and K must be positive multiples of 128");
  fp8moe_status s = fp8moe_validate_grouped_gemm_args(N, K, args);
  if (s != FP8MOE_OK || args->num_groups == 0 || args->num_rows == 0) return s;
  grouped_gemm_params p;
  p.a = static_cast<const uint8_t *>(args->a);
  p.a_scale = args->a_scale;
  p.a_scale_ld = args->num_rows;
  p.b = static_cast<const uint8_t *>(args->b);
  p.b_scale = args->b_scale;
  p.group_offset = args->group_offsets;
  p.num_groups = args->num_groups;
  p.m_total = args->num_rows;
  p.c = args->c;
  p.c_scale = NULL;
  p.c_scale_ld = 0;
  p.tile_counter = args->tile_counter;
  if (args->c_dtype == FP8MOE_DTYPE_BF16) return grouped_gemm_launch<N, K, epilogue::store_bf16>(p, stream);
  return grouped_gemm_launch<N, K, epilogue::store_fp32>(p, stream);
}

} // namespace detail
} // namespace fp8moe

#define FP8MOE_DEFINE_GROUPED_GEMM(name, N, K)                                                        \
  FP8MOE_DECLARE_GROUPED_GEMM(name);                                                                  \
  FP8MOE_EXTERN_C fp8moe_status name##_run(const fp8moe_grouped_gemm_args *args, fp8moe_stream stream) { \
    return fp8moe::detail::grouped_gemm_run<(N), (K)>(args, stream);                                  \
  }                                                                                                   \
  static_assert(true, "FP8MOE_DEFINE_GROUPED_GEMM(name, N, K) takes a trailing semicolon")

#endif /* FP8MOE_GROUPED_GEMM_CUH */
