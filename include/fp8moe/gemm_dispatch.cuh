/* fp8moe/gemm_dispatch.cuh - the one entry point of the grouped FP8 GEMM.
 *
 * The MoE pipeline and the standalone grouped-GEMM component call
 * grouped_gemm_launch<N, K, EPI>() and nothing else, so which kernel runs is
 * decided here alone, on the host, from the current device's compute
 * capability (read once and cached: no synchronization, no allocation):
 *
 *   cc < 89            FP8MOE_ERROR_UNSUPPORTED_DEVICE (no FP8 tensor cores)
 *   cc == 90           the Hopper TMA + wgmma path, when it takes the shape
 *                      and the binary holds sm_90a code for it
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
/* FP8MOE_DISABLE_SM90: compile the Hopper path out (the portable path then
 * runs on Hopper too; the tests use it to cover that path there). */
#ifndef FP8MOE_DISABLE_SM90
#include "gemm_sm90_e4m3_blockscale.cuh"
#endif

namespace fp8moe {
namespace detail {

template <int N, int K, epilogue EPI>
fp8moe_status grouped_gemm_launch(const grouped_gemm_params &p, cudaStream_t stream) {
  if (p.m_total <= 0 || p.num_groups <= 0) return FP8MOE_OK; /* nothing to do, no CUDA call */
  device_info dev;
  FP8MOE__CHECK_CUDA(current_device_info(&dev));
  if (dev.cc < 89) return FP8MOE_ERROR_UNSUPPORTED_DEVICE;

#ifndef FP8MOE_DISABLE_SM90
  if constexpr (gemm_sm90_supported<N, K, EPI>()) {
    if (dev.cc == 90 && sm90_image_present<N, K, EPI>()) return gemm_sm90_launch<N, K, EPI>(p, stream);
  }
#endif

  return gemm_mma_launch<N, K, EPI>(p, stream);
}

} // namespace detail
} // namespace fp8moe

#endif /* FP8MOE_GEMM_DISPATCH_CUH */
