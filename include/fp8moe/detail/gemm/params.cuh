/* fp8moe/detail/gemm/params.cuh - the contract between the MoE pipeline and
 * the grouped FP8 block-scale GEMM kernels (portable mma.sync and Hopper
 * wgmma).
 *
 *   C[m, n] = sum_k  A[m, k] * B[g(m), n, k]     (dequantized, fp32 accumulate)
 *
 * A is [M_total, K] fp8 e4m3 row-major, its rows grouped by group g in
 * [group_offset[g], group_offset[g+1]) (unpadded; a kernel masks the tail tile
 * of each group). B is fp8 e4m3, each group's N x K row-major (both operands
 * K-major, "TN"). The weights of the first num_groups - extra_groups groups
 * are b [.., N, K]; those of the last extra_groups (the MoE's shared experts)
 * are b_extra [extra_groups, N, K], so two tensors the caller owns need no
 * copy into one. Scales are applied per 128-wide K block kb:
 *   A: a_scale[kb * a_scale_ld + m]              (1x128, transposed: a tile's
 *                                                  rows are contiguous)
 *   B: scale[(g' * N/128 + n/128) * K/128 + kb]   (128x128 blocks; g' and the
 *                                                  array as for B)
 * With a_rows, A row m is row a_rows[m] of a and its scales are
 * a_scale[kb * a_scale_ld + a_rows[m]].
 * The block product is accumulated in fp32 and promoted once per K block:
 *   acc += a_scale * b_scale * (sum over the 128 k of the block).
 * A row's result depends only on that row of A and on B: not on the other
 * rows, their groups or the tile the row lands in.
 *
 * Epilogues (epilogue.cuh):
 *   store_bf16 / store_fp32 : C[m, n] -> c, row-major [M_total, N]
 *   swiglu_quant            : N = 2*I; B rows [0, I) are "up", [I, 2I)
 *                             "gate"; a[m, j] = fp8moe_swiglu(C[m, I+j],
 *                             C[m, j], alpha, beta, limit of the group) in
 *                             fp32, requantized per (row, 128 columns) with
 *                             the rule of numeric.h:
 *                             c = fp8 [M_total, I], c_scale[(j/128) * c_scale_ld + m].
 * Rows m >= group_offset[num_groups] are never written.
 */
#ifndef FP8MOE_DETAIL_GEMM_PARAMS_CUH
#define FP8MOE_DETAIL_GEMM_PARAMS_CUH

#include <math.h>
#include <stdint.h>

#include "../../fp8moe.h"

namespace fp8moe {
namespace detail {

enum class epilogue { store_bf16, store_fp32, swiglu_quant };

/* The most groups a grouped GEMM takes: every local expert, and the MoE's
 * shared experts as extra groups. Both kernels keep the per-group offsets
 * and tile prefix of this many groups in shared memory. */
enum { gemm_max_groups = FP8MOE_MAX_EXPERTS + FP8MOE_MAX_SHARED_EXPERTS };

/* Every field defaults to zero / NULL: extra groups, the SwiGLU coefficients
 * and c_scale are optional. */
struct grouped_gemm_params {
  const uint8_t *a = nullptr;           /* [m_total, K], or with a_rows [a_scale_ld, K] */
  const float *a_scale = nullptr;       /* [K/128, a_scale_ld] */
  long long a_scale_ld = 0;
  /* NULL, or device [m_total]: row m of the product takes row a_rows[m] of
   * a and its scales (a gather: the MoE layer's GEMM1 reads the tokens'
   * activations where they are instead of a permuted copy). Each entry of
   * a row m < group_offset[num_groups] is in [0, a_scale_ld). */
  const int *a_rows = nullptr;
  const uint8_t *b = nullptr;           /* [num_groups - extra_groups, N, K] */
  const float *b_scale = nullptr;       /* [num_groups - extra_groups, N/128, K/128] */
  const uint8_t *b_extra = nullptr;     /* [extra_groups, N, K], or NULL when extra_groups = 0 */
  const float *b_extra_scale = nullptr;
  int extra_groups = 0;                 /* 0 <= extra_groups <= num_groups */
  const int *group_offset = nullptr;    /* device, [num_groups + 1], non-decreasing, group_offset[0] >= 0 */
  int num_groups = 0;
  int m_total = 0;                      /* host-known upper bound: group_offset[num_groups] <= m_total */
  void *c = nullptr;                    /* see the epilogues */
  float *c_scale = nullptr;             /* swiglu_quant only */
  long long c_scale_ld = 0;
  /* swiglu_quant: per group of b (not b_extra, which take the defaults), or NULL for the default */
  const float *swiglu_alpha = nullptr;  /* 1 */
  const float *swiglu_beta = nullptr;   /* 0 */
  const float *swiglu_limit = nullptr;  /* +inf: no clamp */
  /* NULL, or 2 device ints that are zero when the kernel starts, which it
   * then uses to hand out work items in order as CTAs free up (tunables.h:
   * FP8MOE_SM90_DYNAMIC_SCHEDULE, FP8MOE_MMA_CLAIMED) and leaves zero
   * again. No two launches in flight at once may share them. */
  int *tile_counter = nullptr;
  /* true where group_offset is final before the kernel ahead of this one
   * on the stream starts (the MoE pipeline, whose scan writes it two
   * kernels ahead). Launched with PDL, each CTA then reads the offsets and
   * loads its first tile's weights (FP8MOE_EARLY_WEIGHTS) while that
   * kernel still runs, and waits for it before it loads any A. */
  bool early_weights = false;
};

/* A group's weights: its [N, K] block of B and its [N/128, K/128] scales. */
struct group_weights {
  const uint8_t *b;
  const float *scale;
  int index;    /* the group's index inside its array (b or b_extra) */
  bool extra;   /* from b_extra */
};

template <int N, int K>
static __device__ __forceinline__ group_weights weights_of_group(const grouped_gemm_params &p, int g) {
  group_weights w;
  const int first_extra = p.num_groups - p.extra_groups;
  w.extra = g >= first_extra;
  w.index = w.extra ? g - first_extra : g;
  w.b = (w.extra ? p.b_extra : p.b) + (long long)w.index * N * K;
  w.scale = (w.extra ? p.b_extra_scale : p.b_scale) + (long long)w.index * (N / 128) * (K / 128);
  return w;
}

/* The gated activation's coefficients of one group. */
struct swiglu_coeffs {
  float alpha, beta, limit;
};

/* Entry i of the per-expert coefficient arrays (each NULL for its
 * default), or the defaults for i < 0 (a shared expert). */
static __device__ __forceinline__ swiglu_coeffs swiglu_coeffs_at(const float *alpha, const float *beta,
                                                                 const float *limit, int i) {
  swiglu_coeffs s = {1.0f, 0.0f, INFINITY};
  if (i >= 0) {
    if (alpha) s.alpha = alpha[i];
    if (beta) s.beta = beta[i];
    if (limit) s.limit = limit[i];
  }
  return s;
}

static __device__ __forceinline__ swiglu_coeffs swiglu_coeffs_of_group(const grouped_gemm_params &p, int g) {
  return swiglu_coeffs_at(p.swiglu_alpha, p.swiglu_beta, p.swiglu_limit, g < p.num_groups - p.extra_groups ? g : -1);
}

/* The most groups that can have rows, as the host knows it without the group
 * offsets: every such group has at least one of the m_total rows. The launch
 * heuristics size their tile counts from it. */
static inline long long groups_with_rows_bound(const grouped_gemm_params &p) {
  return p.m_total < p.num_groups ? p.m_total : p.num_groups;
}

} // namespace detail
} // namespace fp8moe

#endif /* FP8MOE_DETAIL_GEMM_PARAMS_CUH */
