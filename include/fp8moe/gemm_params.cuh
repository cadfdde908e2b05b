/* fp8moe/gemm_params.cuh - the contract between the MoE pipeline and the
 * grouped FP8 block-scale GEMM kernels (portable mma.sync and Hopper wgmma).
 *
 *   C[m, n] = sum_k  A[m, k] * B[g(m), n, k]     (dequantized, fp32 accumulate)
 *
 * A is [M_total, K] fp8 e4m3 row-major, its rows grouped by group g in
 * [group_offset[g], group_offset[g+1]) (unpadded; a kernel masks the tail tile
 * of each group). B is [G, N, K] fp8 e4m3, each group's N x K row-major (both
 * operands K-major, "TN"). Scales are applied per 128-wide K block kb:
 *   A: a_scale[kb * a_scale_ld + m]         (1x128, transposed: a tile's 128
 *                                             rows are contiguous)
 *   B: b_scale[(g * N/128 + n/128) * K/128 + kb]   (128x128 blocks)
 * The block product is accumulated in fp32 and promoted once per K block:
 *   acc += a_scale * b_scale * (sum over the 128 k of the block).
 *
 * Epilogues:
 *   store_bf16 / store_fp32 : C[m, n] -> c, row-major [M_total, N]
 *   swiglu_quant            : N = 2*I; B rows [0, I) are "up", [I, 2I)
 *                             "gate"; a[m, j] = silu(C[m, I+j]) * C[m, j] in
 *                             fp32, requantized per (row, 128 columns) with
 *                             scale = max(amax/448, FLT_MIN):
 *                             c = fp8 [M_total, I], c_scale[(j/128) * c_scale_ld + m].
 * Rows m >= group_offset[num_groups] are never written.
 */
#ifndef FP8MOE_GEMM_PARAMS_CUH
#define FP8MOE_GEMM_PARAMS_CUH

#include <stdint.h>

namespace fp8moe {
namespace detail {

enum class epilogue { store_bf16, store_fp32, swiglu_quant };

struct grouped_gemm_params {
  const uint8_t *a;          /* [m_total, K] */
  const float *a_scale;      /* [K/128, a_scale_ld] */
  long long a_scale_ld;
  const uint8_t *b;          /* [num_groups, N, K] */
  const float *b_scale;      /* [num_groups, N/128, K/128] */
  const int *group_offset;   /* device, [num_groups + 1], non-decreasing, group_offset[0] >= 0 */
  int num_groups;
  int m_total;               /* host-known upper bound: group_offset[num_groups] <= m_total */
  void *c;                   /* see epilogues */
  float *c_scale;            /* swiglu_quant only */
  long long c_scale_ld;
};

/* The most groups that can have rows, as the host knows it without the group
 * offsets: every such group has at least one of the m_total rows. The launch
 * heuristics size their tile counts from it. */
static inline long long groups_with_rows_bound(const grouped_gemm_params &p) {
  return p.m_total < p.num_groups ? p.m_total : p.num_groups;
}

} // namespace detail
} // namespace fp8moe

#endif /* FP8MOE_GEMM_PARAMS_CUH */
