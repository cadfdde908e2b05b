/* fp8moe/detail/quantize.cuh - bf16 activations -> fp8 e4m3 + 1x128 block scales.
 *
 * For users whose activations are bf16: x [T, H] becomes x_q [T, H] (fp8
 * e4m3) and x_scale [H/128, T] (transposed: element [b][t] at b*T + t), with
 * the rule the whole library uses (SPEC 2.4, numeric.h):
 *     scale = max(amax / 448, FLT_MIN)   per (token, 128 columns)
 *     x_q   = cvt.rn.satfinite.e4m3(x / scale)
 * bit for bit equal to fp8moe_ref_quantize_activations.
 *
 * Design: a pure streaming pass, so the only goal is full-width memory
 * traffic. One half-warp owns one (token, 128-column block): each lane loads
 * 8 bf16 with a single 16-byte load, the block's amax is a 4-step shuffle
 * inside the half-warp, and each lane stores its 8 fp8 bytes with one 8-byte
 * store. A CTA covers 16 consecutive tokens of one column block (grid.y is
 * the block), so its 16 scales land in one contiguous 64-byte run of the
 * transposed scale array. The scale and the rounding are numeric.h's rule
 * (fp8moe_quant_scale, e4m3x2_quantize), exact under --use_fast_math too.
 *
 * Requirements: x_bf16 16-byte aligned, x_fp8 8-byte aligned, x_scale 4-byte
 * aligned (else FP8MOE_ERROR_MISALIGNED_POINTER); H a multiple of 128.
 */
#ifndef FP8MOE_DETAIL_QUANTIZE_CUH
#define FP8MOE_DETAIL_QUANTIZE_CUH

#include <float.h>

#include "common.cuh"

namespace fp8moe {
namespace detail {

enum { quantize_tokens_per_cta = 16 };

/* Max over the 16 lanes of a half-warp (xor offsets < 16 stay inside it). */
static __device__ __forceinline__ float half_warp_max(float v) {
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

template <int H>
__global__ void __launch_bounds__(16 * quantize_tokens_per_cta)
    quantize_activations_kernel(const uint16_t *__restrict__ x, int T, uint8_t *__restrict__ q,
                                float *__restrict__ scale) {
  static_assert(H > 0 && H % FP8MOE_BLOCK == 0, "H must be a positive multiple of 128");
  const int lane16 = threadIdx.x & 15;
  const int t = blockIdx.x * (int)(blockDim.x >> 4) + (int)(threadIdx.x >> 4);
  const int b = blockIdx.y;
  const bool active = t < T;
  /* A half-warp past the last token still joins the shuffles (full mask). */
  const size_t off = (size_t)(active ? t : 0) * H + (size_t)b * FP8MOE_BLOCK + (size_t)lane16 * 8;

  uint4 v = make_uint4(0u, 0u, 0u, 0u);
  if (active) v = __ldcs(reinterpret_cast<const uint4 *>(x + off)); /* read once: evict first */
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
  float f[8];
#pragma unroll
  for (int i = 0; i < 4; i++) {
    f[2 * i] = bf16_bits_to_float((uint16_t)(w[i] & 0xffffu));
    f[2 * i + 1] = bf16_bits_to_float((uint16_t)(w[i] >> 16));
  }

  /* amax: fmaxf drops NaN, as the reference's comparison does */
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < 8; i++) amax = fmaxf(amax, fabsf(f[i]));
  const float s = fp8moe_quant_scale(half_warp_max(amax));

  if (!active) return;
  uint32_t o[2];
#pragma unroll
  for (int i = 0; i < 2; i++) {
    uint32_t lo = e4m3x2_quantize(f[4 * i], f[4 * i + 1], s);
    uint32_t hi = e4m3x2_quantize(f[4 * i + 2], f[4 * i + 3], s);
    o[i] = lo | (hi << 16);
  }
  *reinterpret_cast<uint2 *>(q + off) = make_uint2(o[0], o[1]);
  if (lane16 == 0) scale[(size_t)b * T + t] = s;
}

/* bf16 [T, H] -> fp8 e4m3 [T, H] + fp32 scales [H/128, T]. T = 0 launches
 * nothing. No allocation, no synchronization. */
template <int H>
static fp8moe_status quantize_activations_launch(const void *x_bf16, int T, void *x_fp8, float *x_scale,
                                                 cudaStream_t stream) {
  if (T < 0) return FP8MOE_ERROR_INVALID_NUM_TOKENS;
  if (T == 0) return FP8MOE_OK;
  if (!x_bf16 || !x_fp8 || !x_scale) return FP8MOE_ERROR_NULL_ARGUMENT;
  if (((uintptr_t)x_bf16 & 15u) || ((uintptr_t)x_fp8 & 7u) || ((uintptr_t)x_scale & 3u))
    return FP8MOE_ERROR_MISALIGNED_POINTER;
  /* Small T (decode): shrink the CTA to whole warps that have work. */
  const int tokens = T < quantize_tokens_per_cta ? (T + 1) & ~1 : (int)quantize_tokens_per_cta;
  const dim3 grid((unsigned)ceil_div(T, tokens), (unsigned)(H / FP8MOE_BLOCK));
  quantize_activations_kernel<H><<<grid, 16 * tokens, 0, stream>>>(static_cast<const uint16_t *>(x_bf16), T,
                                                                   static_cast<uint8_t *>(x_fp8), x_scale);
  FP8MOE__CHECK_LAUNCH();
  return FP8MOE_OK;
}

} // namespace detail
} // namespace fp8moe

#endif /* FP8MOE_DETAIL_QUANTIZE_CUH */
