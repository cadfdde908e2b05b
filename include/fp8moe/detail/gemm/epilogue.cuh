/* fp8moe/detail/gemm/epilogue.cuh - the epilogue math both GEMM paths share.
 *
 * Both paths end a tile with the fp32 accumulators in registers, in the
 * tensor-core fragment layout: a thread holds pairs of adjacent columns of a
 * few rows, and the 4 lanes of a quad together hold 8 consecutive columns of
 * a row. What differs between the paths is only which registers hold which
 * (row, column); the math on them is here, once:
 *  - store_pair: one pair of adjacent columns as bf16x2 (4 bytes) or float2;
 *  - swiglu_segment: the gated activation (numeric.h's fp8moe_swiglu) of a
 *    thread's columns of one row, in place over the "up" values, returning
 *    their largest magnitude;
 *  - quad_max: that maximum over the quad, i.e. the row's 8-column groups the
 *    four lanes hold (the portable path then reduces across its N-warps);
 *  - e4m3x2_quantize (common.cuh): one pair requantized with the row
 *    block's scale, fp8moe_quant_scale(amax), the rule every quantizer uses.
 */
#ifndef FP8MOE_DETAIL_GEMM_EPILOGUE_CUH
#define FP8MOE_DETAIL_GEMM_EPILOGUE_CUH

#include "../common.cuh"
#include "params.cuh"

namespace fp8moe {
namespace detail {

/* C[off], C[off + 1] = a, b for the store epilogues (C row-major, off even). */
template <epilogue EPI>
static __device__ __forceinline__ void store_pair(void *c, long long off, float a, float b) {
  static_assert(EPI == epilogue::store_bf16 || EPI == epilogue::store_fp32, "a store epilogue");
  if constexpr (EPI == epilogue::store_fp32) {
    *reinterpret_cast<float2 *>(static_cast<float *>(c) + off) = make_float2(a, b);
  } else {
    *reinterpret_cast<uint32_t *>(static_cast<uint16_t *>(c) + off) =
        (uint32_t)float_to_bf16_bits(a) | ((uint32_t)float_to_bf16_bits(b) << 16);
  }
}

/* up[i] = fp8moe_swiglu(gate[i], up[i], s) for the NV columns a thread holds
 * of one row; returns max |up[i]| (0 for an all-NaN segment, as fmaxf drops
 * NaN). */
template <int NV>
static __device__ __forceinline__ float swiglu_segment(float (&up)[NV], const float (&gate)[NV],
                                                       const swiglu_coeffs &s) {
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < NV; i++) {
    up[i] = fp8moe_swiglu(gate[i], up[i], s.alpha, s.beta, s.limit);
    amax = fmaxf(amax, fabsf(up[i]));
  }
  return amax;
}

/* Max over the 4 lanes of this lane's quad (lanes 4q .. 4q+3). */
static __device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
  return v;
}

} // namespace detail
} // namespace fp8moe

#endif /* FP8MOE_DETAIL_GEMM_EPILOGUE_CUH */
