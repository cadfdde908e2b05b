/* fp8moe/detail/gemm/dispatch.cuh - the one entry point of the grouped FP8
 * GEMM.
 *
 * The MoE pipeline and the standalone grouped-GEMM component call
 * grouped_gemm_launch<N, K, EPI>() and nothing else, so which kernel runs is
 * decided here alone, on the host, from the current device's compute
 * capability (read once and cached: no synchronization, no allocation):
 *
 *   cc < 89            FP8MOE_ERROR_UNSUPPORTED_DEVICE (no FP8 tensor cores)
 *   cc == 90           the Hopper TMA + wgmma path, when it takes the shape,
 *                      the binary holds sm_90a code for it, and either the
 *                      groups average at least FP8MOE_SM90_MIN_ROWS_PER_GROUP
 *                      rows (tunables.h: decode-sized groups stream the
 *                      weights faster through the portable path's 16-row
 *                      tiles) or the caller pins the path (batch invariance)
 *   otherwise          the portable mma.sync path (sm_89, sm_90, sm_100, ...)
 *
 * Both kernels follow params.cuh, so they are interchangeable in layout and
 * semantics, not in rounding: their accumulation orders differ. Within one
 * path a row's result depends only on its own A row and B (params.cuh), so a
 * caller that pins the path gets results independent of the other rows.
 */
#ifndef FP8MOE_DETAIL_GEMM_DISPATCH_CUH
#define FP8MOE_DETAIL_GEMM_DISPATCH_CUH

#include "../common.cuh"
#include "mma_e4m3_blockscale.cuh"
#include "params.cuh"

#ifndef FP8MOE_DISABLE_SM90
#include "sm90_e4m3_blockscale.cuh"
#endif

namespace fp8moe {
namespace detail {

/* Whether a call of m_total rows in num_groups groups takes the Hopper
 * path on the current device. pin_path: take the path the device's best
 * kernel would take at every size (Hopper: the wgmma path whatever the
 * rows per group), so that which kernel computes a row never depends on
 * the rest of the call. */
template <int N, int K, epilogue EPI>
bool grouped_gemm_takes_sm90(const device_info &dev, long long m_total, int num_groups, bool pin_path) {
#ifndef FP8MOE_DISABLE_SM90
  if constexpr (gemm_sm90_supported<N, K, EPI>()) {
    return dev.cc == 90 && (pin_path || m_total >= (long long)FP8MOE_SM90_MIN_ROWS_PER_GROUP * num_groups) &&
           sm90_image_present<N, K, EPI>();
  }
#endif
  (void)dev; (void)m_total; (void)num_groups; (void)pin_path;
  return false;
}

template <int N, int K, epilogue EPI>
fp8moe_status grouped_gemm_launch(const grouped_gemm_params &p, cudaStream_t stream, bool pdl = false,
                                  bool pin_path = false) {
  if (p.m_total <= 0 || p.num_groups <= 0) return FP8MOE_OK; /* nothing to do, no CUDA call */
  device_info dev;
  FP8MOE__GET_DEVICE_INFO(dev);
  if (dev.cc < 89) return FP8MOE_ERROR_UNSUPPORTED_DEVICE;
#ifndef FP8MOE_DISABLE_SM90
  if (grouped_gemm_takes_sm90<N, K, EPI>(dev, p.m_total, p.num_groups, pin_path))
    return gemm_sm90_launch<N, K, EPI>(p, stream, pdl);
#endif
  return gemm_mma_launch<N, K, EPI>(p, stream, pdl);
}

} // namespace detail
} // namespace fp8moe

#endif /* FP8MOE_DETAIL_GEMM_DISPATCH_CUH */
