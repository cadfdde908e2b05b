/* fp8moe/detail/gemm/epilogue.cuh - the epilogue math both GEMM paths share.
 *
 * Both paths end a tile with the fp32 accumulators in registers, in the
 * tensor-core fragment layout: a thread holds pairs of adjacent columns of a
 * few rows, and the 4 lanes of a quad together hold 8 consecutive columns of
 * a row. What differs between the paths is only which registers hold which
 * (row, column); the math on them is here, once:
 *  - store_pair: one pair of adjacent columns as bf16x2 (4 bytes) or float2;
 *  - store_row_segment: a thread's column pairs of one row of a slice, with
 *    bf16 pairs swapped between neighbouring lanes so that each store is 8
 *    bytes and a quad fills whole 32-byte sectors;
 *  - swiglu_segment: the gated activation (numeric.h's fp8moe_swiglu) of a
 *    thread's columns of one row, in place over the "up" values, returning
 *    their largest magnitude;
 *  - quad_max: that maximum over the quad, i.e. the row's 8-column groups the
 *    four lanes hold (the portable path then reduces across its N-warps);
 *    quad_position_max: over the 8 lanes at one position of their quads (a
 *    Hopper swapped tile, whose rows lie along the fragment's columns);
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

/* The column pairs a thread holds of one row of a W-column slice, stored at
 * c + row_off (row_off: the element offset of the slice's column 0 in that
 * row): lane q of a quad holds columns 8j + 2q, +1 of each 8-column group j
 * in acc[4j + e], acc[4j + e + 1] (e = 0 for the thread's first row, 2 for
 * its second). bf16: per two groups, lanes q and q ^ 1 trade one packed pair
 * (one shuffle), so each lane stores 4 adjacent columns (8 bytes: columns
 * 16m + 8(q & 1) + 2(q & 2) .. + 3) and each quad writes 32 contiguous bytes
 * of the row: whole sectors, half the store instructions of 4-byte pairs.
 * fp32 pairs are 8 bytes already. Only the first `cols` columns of the slice
 * are stored (a tile past column N; a multiple of 16). Every lane of the
 * warp must call it (the shuffle); `valid` masks the stores (a row past the
 * group's end). The values are those of store_pair. */
template <epilogue EPI, int W>
static __device__ __forceinline__ void store_row_segment(void *c, long long row_off, const float (&acc)[W / 2], int e,
                                                         int lane, bool valid, int cols) {
  static_assert(W % 16 == 0, "slices of whole 16-column pieces");
  if constexpr (EPI == epilogue::store_fp32) {
    const int cq = 2 * (lane % 4);
#pragma unroll
    for (int j = 0; j < W / 8; j++)
      if (valid && 8 * j < cols) store_pair<EPI>(c, row_off + 8 * j + cq, acc[4 * j + e], acc[4 * j + e + 1]);
  } else {
    static_assert(EPI == epilogue::store_bf16, "a store epilogue");
    const bool odd = (lane & 1) != 0;
    const int off = 8 * (lane & 1) + 2 * (lane & 2);
    uint16_t *row = static_cast<uint16_t *>(c) + row_off;
#pragma unroll
    for (int m = 0; m < W / 16; m++) {
      const uint32_t x0 = (uint32_t)float_to_bf16_bits(acc[8 * m + e]) |
                          ((uint32_t)float_to_bf16_bits(acc[8 * m + e + 1]) << 16); /* group 2m */
      const uint32_t x1 = (uint32_t)float_to_bf16_bits(acc[8 * m + 4 + e]) |
                          ((uint32_t)float_to_bf16_bits(acc[8 * m + 4 + e + 1]) << 16); /* group 2m + 1 */
      /* even lanes keep group 2m and take the odd neighbour's; odd lanes the reverse */
      const uint32_t got = __shfl_xor_sync(0xffffffffu, odd ? x0 : x1, 1);
      if (valid && 16 * m < cols)
        *reinterpret_cast<uint2 *>(row + 16 * m + off) = odd ? make_uint2(got, x1) : make_uint2(x0, got);
    }
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

/* Max over the 8 lanes that hold the same position in their quads (lanes
 * l % 4, l % 4 + 4, ..., + 28). */
static __device__ __forceinline__ float quad_position_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 4));
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 8));
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 16));
  return v;
}

} // namespace detail
} // namespace fp8moe

#endif /* FP8MOE_DETAIL_GEMM_EPILOGUE_CUH */
