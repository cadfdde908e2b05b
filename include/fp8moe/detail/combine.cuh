/* fp8moe/detail/combine.cuh - the weighted sum of a token's expert outputs.
 *
 * out[t, h] = bf16( sum over slots k = 0..K-1 in order, where the slot is
 * local, of w_k * y[row(t,k), h], then + y[shared row of (s, t), h] for the
 * shared experts s = 0..S-1 in order ), the sum in fp32 (SPEC 2.6 and 5.1).
 * A token with no local slot and no shared expert gets exact zeros, so every
 * output element is written. One pass: each thread owns 8 consecutive
 * columns (16-byte loads and stores) and walks the token's rows of y, which
 * GEMM2 wrote in expert order. The result of a token depends on its own rows
 * only, in a fixed order.
 */
#ifndef FP8MOE_DETAIL_COMBINE_CUH
#define FP8MOE_DETAIL_COMBINE_CUH

#include "common.cuh"

namespace fp8moe {
namespace detail {

struct combine_params {
  int num_tokens = 0;
  const int *slot_row = nullptr;       /* [T*K]: row of y, or -1 */
  const float *slot_weight = nullptr;  /* [T*K] */
  const uint16_t *y = nullptr;         /* bf16 [rows, H] */
  uint16_t *out = nullptr;             /* bf16 [T, H] */
  int num_shared = 0;                  /* S */
  const int *shared_row0 = nullptr;    /* device: row of (shared expert 0, token 0); (s, t) is + s*T + t */
};

enum { combine_threads = 128 };

/* The combine's arithmetic on 8 columns of one token, shared with the
 * small-T layer: a local slot's row adds w * y with fmaf, a shared expert's
 * row adds y, in fp32; the sum is rounded to bf16 once. */
static __device__ __forceinline__ void combine_add_slot(float (&acc)[8], float w, const float (&y)[8]) {
#pragma unroll
  for (int i = 0; i < 8; i++) acc[i] = fmaf(w, y[i], acc[i]);
}

static __device__ __forceinline__ void combine_add_shared(float (&acc)[8], const float (&y)[8]) {
#pragma unroll
  for (int i = 0; i < 8; i++) acc[i] = __fadd_rn(acc[i], y[i]);
}

/* 8 bf16 values (16 bytes) -> 8 floats, exact. */
static __device__ __forceinline__ void unpack_bf16x8(uint4 q, float (&y)[8]) {
  const uint32_t u[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
  for (int j = 0; j < 4; j++) {
    y[2 * j] = __uint_as_float(u[j] << 16);
    y[2 * j + 1] = __uint_as_float(u[j] & 0xffff0000u);
  }
}

static __device__ __forceinline__ uint4 pack_bf16x8(const float (&acc)[8]) {
  uint32_t o[4];
#pragma unroll
  for (int j = 0; j < 4; j++)
    o[j] = (uint32_t)float_to_bf16_bits(acc[2 * j]) | ((uint32_t)float_to_bf16_bits(acc[2 * j + 1]) << 16);
  return make_uint4(o[0], o[1], o[2], o[3]);
}

template <int K, int H>
__global__ void __launch_bounds__(combine_threads) combine_kernel(combine_params p) {
  griddep_wait(); /* y, slot_row, slot_weight: written by the kernels before */
  griddep_launch_dependents();
  const long long t = blockIdx.x;
  const int v = blockIdx.y * combine_threads + threadIdx.x; /* 8-column vector index */
  if (v >= H / 8) return;
  float acc[8];
#pragma unroll
  for (int j = 0; j < 8; j++) acc[j] = 0.0f;
#pragma unroll
  for (int k = 0; k < K; k++) {
    const int r = __ldg(p.slot_row + t * K + k);
    if (r < 0) continue;
    float y[8];
    unpack_bf16x8(__ldg(reinterpret_cast<const uint4 *>(p.y + (long long)r * H) + v), y);
    combine_add_slot(acc, __ldg(p.slot_weight + t * K + k), y);
  }
  if (p.num_shared > 0) {
    const long long r0 = __ldg(p.shared_row0) + t;
    for (int sh = 0; sh < p.num_shared; sh++) {
      float y[8];
      unpack_bf16x8(__ldg(reinterpret_cast<const uint4 *>(p.y + (r0 + (long long)sh * p.num_tokens) * H) + v), y);
      combine_add_shared(acc, y);
    }
  }
  reinterpret_cast<uint4 *>(p.out + t * H)[v] = pack_bf16x8(acc);
}

template <int K, int H>
static inline fp8moe_status combine_launch(const combine_params &p, cudaStream_t s, bool pdl = false) {
  static_assert(H % 8 == 0, "8 columns per thread");
  if (p.num_tokens == 0) return FP8MOE_OK;
  dim3 grid((unsigned)p.num_tokens, (unsigned)ceil_div(H / 8, combine_threads));
  FP8MOE__CHECK_CUDA(launch_kernel(combine_kernel<K, H>, grid, dim3(combine_threads), 0, s, pdl, p));
  return FP8MOE_OK;
}

} // namespace detail
} // namespace fp8moe

#endif /* FP8MOE_DETAIL_COMBINE_CUH */
