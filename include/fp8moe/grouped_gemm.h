/* fp8moe/grouped_gemm.h - the grouped FP8 block-scale GEMM as a component of
 * its own, for users who do their own MoE plumbing (host side).
 *
 * The same kernels the MoE layer runs for its two GEMMs, callable alone:
 *
 *   C[m, n] = sum_k A[m, k] * B[g, n, k]   for the rows m of group g,
 *
 * fp8 e4m3 operands dequantized with 1x128 (A) and 128x128 (B) block scales,
 * fp32 accumulation, bf16 or fp32 output. Groups are contiguous row ranges of
 * A given by device-side offsets, so a caller that computes them on the GPU
 * needs no host synchronization. N and K are compile-time constants: the
 * kernels are instantiated by FP8MOE_DEFINE_GROUPED_GEMM(name, N, K) in one
 * .cu file (see grouped_gemm.cuh, whose top comment is a complete example),
 * and FP8MOE_DECLARE_GROUPED_GEMM(name) here gives C callers the prototype.
 *
 * This header compiles as C11 and as CUDA C++; it needs no CUDA header.
 */
#ifndef FP8MOE_GROUPED_GEMM_H
#define FP8MOE_GROUPED_GEMM_H

#include <stddef.h>
#include <stdint.h>

#include "fp8moe.h"

typedef struct fp8moe_grouped_gemm_args {
  int num_groups;                 /* G, 0 <= G <= FP8MOE_MAX_EXPERTS (G = 0: nothing to do) */
  int num_rows;                   /* rows of A and C (>= group_offsets[G]) */
  const void *a;  const float *a_scale;   /* fp8 e4m3 [num_rows, K]; fp32 [K/128, num_rows] (transposed, like hidden_states_scale) */
  const void *b;  const float *b_scale;   /* fp8 e4m3 [G, N, K];    fp32 [G, N/128, K/128] */
  const int32_t *group_offsets;   /* device [G+1], non-decreasing: rows of group g are [group_offsets[g], group_offsets[g+1]) */
  void *c;  fp8moe_dtype c_dtype; /* [num_rows, N], bf16 or fp32; rows of no group are not written */
  /* Optional (NULL: none). Device int32 [2], zero before the first run (one
   * cudaMemset when it is allocated): the CTAs of both kernels (the
   * portable one's unless built with FP8MOE_MMA_CLAIMED=0) then claim their
   * work items from it in order, so the CTAs that share a weight tile read
   * it together (faster from about 100 rows per group, same results), and
   * each run leaves it zero again. Runs that may be in flight at the same
   * time need counters of their own. */
  int32_t *tile_counter;
} fp8moe_grouped_gemm_args;

/* The prototype of what FP8MOE_DEFINE_GROUPED_GEMM(name, N, K) generates;
 * write it as a declaration: `FP8MOE_DECLARE_GROUPED_GEMM(name);`. The run
 * validates (fp8moe_validate_grouped_gemm_args), then enqueues on `stream`;
 * it never allocates nor synchronizes. */
#define FP8MOE_DECLARE_GROUPED_GEMM(name) \
  FP8MOE_EXTERN_C fp8moe_status name##_run(const fp8moe_grouped_gemm_args *args, fp8moe_stream stream)

/* Every check name_run makes, in this order, before anything is launched:
 *   args NULL                                   FP8MOE_ERROR_NULL_ARGUMENT
 *   N or K not a positive multiple of 128       FP8MOE_ERROR_INVALID_SHAPE
 *   num_rows < 0                                FP8MOE_ERROR_INVALID_NUM_TOKENS
 *   num_groups < 0 or > FP8MOE_MAX_EXPERTS      FP8MOE_ERROR_INVALID_EXPERT_RANGE
 *   c_dtype not FP32 / BF16                     FP8MOE_ERROR_INVALID_DTYPE
 *   num_groups == 0 or num_rows == 0            FP8MOE_OK (nothing read or written)
 *   a pointer NULL                              FP8MOE_ERROR_NULL_ARGUMENT
 *   a, b, c not 16-byte aligned, the scales
 *   or group_offsets not 4-byte aligned         FP8MOE_ERROR_MISALIGNED_POINTER
 * The offsets themselves live on the device and are not checked here; the
 * kernels clamp them to [0, num_rows] and treat a decreasing pair as an empty
 * group, so bad offsets never cause an out-of-bounds access. */
static inline fp8moe_status fp8moe_validate_grouped_gemm_args(int N, int K, const fp8moe_grouped_gemm_args *a) {
  if (!a) return FP8MOE_ERROR_NULL_ARGUMENT;
  if (N <= 0 || K <= 0 || N % FP8MOE_BLOCK || K % FP8MOE_BLOCK) return FP8MOE_ERROR_INVALID_SHAPE;
  if (a->num_rows < 0) return FP8MOE_ERROR_INVALID_NUM_TOKENS;
  if (a->num_groups < 0 || a->num_groups > FP8MOE_MAX_EXPERTS) return FP8MOE_ERROR_INVALID_EXPERT_RANGE;
  if (!fp8moe__dtype_ok(a->c_dtype)) return FP8MOE_ERROR_INVALID_DTYPE;
  if (a->num_groups == 0 || a->num_rows == 0) return FP8MOE_OK;
  if (!a->a || !a->a_scale || !a->b || !a->b_scale || !a->group_offsets || !a->c) return FP8MOE_ERROR_NULL_ARGUMENT;
  if (!fp8moe__aligned(a->a, 16) || !fp8moe__aligned(a->b, 16) || !fp8moe__aligned(a->c, 16) ||
      !fp8moe__aligned(a->a_scale, 4) || !fp8moe__aligned(a->b_scale, 4) || !fp8moe__aligned(a->group_offsets, 4))
    return FP8MOE_ERROR_MISALIGNED_POINTER;
  return FP8MOE_OK;
}

#endif /* FP8MOE_GROUPED_GEMM_H */
