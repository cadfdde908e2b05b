/* fp8moe/gemm_dispatch.cuh - the one entry point of the grouped FP8 GEMM.
 *
 * The MoE pipeline and the standalone grouped-GEMM component call
 * grouped_gemm_launch<N, K, EPI>() and nothing else, so which kernel runs is
 * decided here alone, on the host, from the current device's compute
 * capability (read once and cached: no synchronization, no allocation):
 *
 *   cc < 89            FP8MOE_ERROR_UNSUPPORTED_DEVICE (no FP8 tensor cores)
 *   cc == 90           the Hopper TMA + wgmma path, when it takes the shape,
 *                      the binary holds sm_90a code for it, and the groups
 *                      average at least FP8MOE_SM90_MIN_ROWS_PER_GROUP rows;
 *                      decode-sized groups (a few rows per expert) stream
 *                      the weights faster through the portable path's
 *                      16-row tiles (docs/performance.md, H200: e.g.
 *                      Qwen3-235B T=128 at 87% of the floor vs 80%,
 *                      Kimi-K2 T=16 at 91% vs 86%), while from ~16 rows on
 *                      the Hopper path's single 128-row tile wins by far
 *                      (Kimi-K2 T=1024, 21 rows: 87% vs 51%)
 *   otherwise          the portable mma.sync path (sm_89, sm_90, sm_100, ...)
 *
 * Both kernels follow gemm_params.cuh, so they are interchangeable bit for
 * bit in layout and semantics (not in rounding: accumulation orders differ).
 */
#ifndef FP8MOE_GEMM_DISPATCH_CUH
#define FP8MOE_GEMM_DISPATCH_CUH

#include "common.cuh"
#include "gemm_params.cuh"
#include "gemm_mma_e4m3_blockscale.cuh"
/* Mean rows per group from which the Hopper path takes over on cc 9.0. The
 * pipeline knows only the upper bound m_total = T*K on the host (no sync),
 * so this is a bound on the mean, which is exact without expert parallelism.
 * Cost of a wrong choice: 5-10% of the layer below the boundary, up to 40%
 * above it (the portable path then needs two 16-row tiles per expert). */
#ifndef FP8MOE_SM90_MIN_ROWS_PER_GROUP
#define FP8MOE_SM90_MIN_ROWS_PER_GROUP 16
#endif

/* FP8MOE_DISABLE_SM90: compile the Hopper path out (the portable path then
 * runs on Hopper too; the tests use it to cover that path there). */
#ifndef FP8MOE_DISABLE_SM90
#include "gemm_sm90_e4m3_blockscale.cuh"
#endif

namespace fp8moe {
namespace detail {

template <int N, int K, epilogue EPI>
fp8moe_status grouped_gemm_launch(const grouped_gemm_params &p, cudaStream_t stream, bool pdl = false) {
  if (p.m_total <= 0 || p.num_groups <= 0) return FP8MOE_OK; /* nothing to do, no CUDA call */
  device_info dev;
  FP8MOE__CHECK_CUDA(current_device_info(&dev));
  if (dev.cc < 89) return FP8MOE_ERROR_UNSUPPORTED_DEVICE;

#ifndef FP8MOE_DISABLE_SM90
  if constexpr (gemm_sm90_supported<N, K, EPI>()) {
    if (dev.cc == 90 && (long long)p.m_total >= (long long)FP8MOE_SM90_MIN_ROWS_PER_GROUP * p.num_groups &&
        sm90_image_present<N, K, EPI>())
      return gemm_sm90_launch<N, K, EPI>(p, stream, pdl);
  }
#endif

  return gemm_mma_launch<N, K, EPI>(p, stream, pdl);
}

} // namespace detail
} // namespace fp8moe

#endif /* FP8MOE_GEMM_DISPATCH_CUH */
