/* fp8moe/detail/routing.cuh - router logits -> top-K expert ids and fp32 weights.
 *
 * SPEC section 4, rule for rule as the CPU reference fp8moe_ref_route_token
 * (reference.h) states it: NaN logits become -inf first; experts are ranked by
 * a per-method key, higher first, equal keys to the lower index; -inf keys
 * (NaN, -inf, DeepSeekV3's masked groups) rank last, so when fewer than K keys
 * are above -inf the lowest-indexed experts not yet chosen fill the slots; a
 * softmax whose maximum is not finite is its limit (the maxima share the mass).
 *
 * Design: one warp per token, nothing in shared memory. Lane l holds the
 * N = ceil(E/32) contiguous experts [l*N, l*N + N) in registers, loaded with
 * 16-byte vectors where the shape allows. A key is the order-preserving
 * uint32 image of the fp32 ranking value (-0 folded into +0, so they tie as
 * they compare), never 0: 0 marks "taken" and the padding lanes past E. Each
 * of the K rounds is one warp argmax over (key << 32 | ~index), a 64-bit max
 * whose tie rule is exactly "lower index wins"; only the lane that owned the
 * winner rescans its N registers. DeepSeekV3 groups: when a group is a
 * power-of-two run of whole lanes (DeepSeek-V3: 8 groups of 32 = 4 lanes of 8)
 * a group's top-2 is a register scan plus log2(lanes) shuffles; any other
 * valid grouping takes a general path (one warp reduction per group). The
 * selected groups are again warp argmax rounds. Weights use the selected
 * values in slot order, as the reference does (sums run slot 0, 1, ...).
 *
 * Exactness: divisions are __fdiv_rn and exp is correctly rounded (through
 * fp64, see FP8MOE_ROUTING_EXACT_EXP in tunables.h), so the ranking values are bit-equal to
 * a correctly rounded libm's; the reference's expf (glibc: < 0.502 ulp)
 * agrees on all but ~0.1% of arguments, and then by one ulp. The full-E
 * softmax sum (Default, RenormalizeNaive) is a warp tree here and a serial
 * loop there: those weights agree to a few ulp, far inside SPEC's 1e-5.
 *
 * Cost: one launch, T warps, no atomics; each round is 5 shuffle steps.
 */
#ifndef FP8MOE_DETAIL_ROUTING_CUH
#define FP8MOE_DETAIL_ROUTING_CUH

#include <math.h>

#include "common.cuh"

namespace fp8moe {
namespace detail {

struct routing_params {
  const void *logits = nullptr;  fp8moe_dtype logits_dtype = FP8MOE_DTYPE_FP32;  /* [T, E] fp32 or bf16 */
  const void *bias = nullptr;    fp8moe_dtype bias_dtype = FP8MOE_DTYPE_FP32;    /* [E] or NULL (DeepSeekV3 only) */
  int method = 0, n_group = 0, topk_group = 0;   /* validated (validate.h) */
  float routed_scaling_factor = 0.0f;
  int num_tokens = 0;
  int32_t *ids_out = nullptr;          /* [T, K] global expert ids, selection order (best first) */
  float *weights_out = nullptr;        /* [T, K] fp32 weights */
  int32_t *replay_ids = nullptr;       /* optional second copy of ids_out (routing replay) */
  float *replay_weights = nullptr;     /* optional second copy of weights_out */
};

/* ---- scalar pieces -------------------------------------------------------- */

static __device__ __forceinline__ float routing_exp(float x) {
#if FP8MOE_ROUTING_EXACT_EXP
  return __double2float_rn(exp((double)x));
#else
  return expf(x);
#endif
}

/* 1 / (1 + exp(-x)), as the reference writes it: sigmoid(-inf) = 0, sigmoid(+inf) = 1. */
static __device__ __forceinline__ float routing_sigmoid(float x) {
  return __fdiv_rn(1.0f, __fadd_rn(1.0f, routing_exp(-x)));
}

static __device__ __forceinline__ float sanitize_nan(float v) { return v != v ? -INFINITY : v; }

/* Order-preserving map of a non-NaN float to a nonzero uint32 (-0 ties +0). */
static __device__ __forceinline__ uint32_t rank_key(float v) {
  uint32_t u = __float_as_uint(v);
  if (u == 0x80000000u) u = 0u;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static __device__ __forceinline__ float to_float(float v) { return v; }
static __device__ __forceinline__ float to_float(uint16_t v) { return bf16_bits_to_float(v); }

/* Top-2 values of a multiset, t0 >= t1 (no NaN). */
static __device__ __forceinline__ void top2_push(float &t0, float &t1, float x) {
  if (x > t0) {
    t1 = t0;
    t0 = x;
  } else if (x > t1) {
    t1 = x;
  }
}
static __device__ __forceinline__ void top2_merge(float &t0, float &t1, float u0, float u1) {
  const float lo = fminf(t0, u0);
  t0 = fmaxf(t0, u0);
  t1 = fmaxf(lo, fmaxf(t1, u1));
}

/* ---- warp pieces ---------------------------------------------------------- */

static __device__ __forceinline__ uint64_t warp_max_u64(uint64_t v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const uint64_t w = __shfl_xor_sync(0xffffffffu, v, o);
    v = w > v ? w : v;
  }
  return v;
}

/* This lane's best (key, index) as one 64-bit rank: the key on top, ~index
 * below, so a larger rank is a larger key or, on equal keys, a lower index. */
template <int N>
static __device__ __forceinline__ uint64_t lane_best(const uint32_t (&key)[N], int lane) {
  uint32_t bk = key[0];
  int bi = 0;
#pragma unroll
  for (int i = 1; i < N; i++)
    if (key[i] > bk) {
      bk = key[i];
      bi = i;
    }
  return ((uint64_t)bk << 32) | (uint32_t)~(uint32_t)(lane * N + bi);
}

/* One selection round: the warp's best candidate (uniform result), removed
 * from its owner's registers. `val` is broadcast from the owner as `picked`. */
template <int N>
static __device__ __forceinline__ int warp_pop_best(uint32_t (&key)[N], const float (&val)[N], uint64_t &best,
                                                    int lane, float &picked) {
  const int idx = (int)~(uint32_t)warp_max_u64(best);
  float v = 0.0f;
  if (idx / N == lane) {
#pragma unroll
    for (int i = 0; i < N; i++)
      if (lane * N + i == idx) {
        v = val[i];
        key[i] = 0u;
      }
    best = lane_best(key, lane);
  }
  picked = __shfl_sync(0xffffffffu, v, idx / N);
  return idx;
}

/* Sum over lanes 0..K-1 of x, in slot order (the reference's loop). */
template <int K>
static __device__ __forceinline__ float slot_sum(float x) {
  float s = 0.0f;
#pragma unroll
  for (int k = 0; k < K; k++) s = __fadd_rn(s, __shfl_sync(0xffffffffu, x, k));
  return s;
}

/* ---- loading -------------------------------------------------------------- */

/* Widest vector (elements, at most 16 bytes) that tiles both a lane's run of
 * N and a row of E, so every vector is wholly inside [0, E) or outside. */
template <int E, int N, typename In>
__host__ __device__ constexpr int routing_vec_width() {
  int v = 16 / (int)sizeof(In);
  while (v > 1 && (N % v != 0 || E % v != 0)) v /= 2;
  return v;
}

template <typename In, int V>
struct alignas(V * sizeof(In)) routing_vec {
  In e[V];
};

/* The lane's N values of one row; positions past E read as -inf. */
template <int E, int N, typename In>
static __device__ __forceinline__ void load_lane(const In *__restrict__ row, int lane, bool vec_ok, float (&v)[N]) {
  constexpr int V = routing_vec_width<E, N, In>();
  const int base = lane * N;
  if (V > 1 && vec_ok) {
#pragma unroll
    for (int j = 0; j < N / V; j++) {
      if (base + j * V < E) {
        const routing_vec<In, V> x = *reinterpret_cast<const routing_vec<In, V> *>(row + base + j * V);
#pragma unroll
        for (int q = 0; q < V; q++) v[j * V + q] = to_float(x.e[q]);
      } else {
#pragma unroll
        for (int q = 0; q < V; q++) v[j * V + q] = -INFINITY;
      }
    }
  } else {
#pragma unroll
    for (int i = 0; i < N; i++) v[i] = base + i < E ? to_float(row[base + i]) : -INFINITY;
  }
}

template <int E, int N, typename In>
static __device__ __forceinline__ bool vec_aligned(const void *p) {
  constexpr int V = routing_vec_width<E, N, In>();
  return ((uintptr_t)p & (uintptr_t)(V * sizeof(In) - 1)) == 0;
}

/* ---- DeepSeekV3 groups ---------------------------------------------------- */

/* keep[i]: expert lane*N+i is in one of the topk_group best groups, a group's
 * score being the sum of its top-2 b (top-1 for groups of one). */
template <int E, int N>
static __device__ __forceinline__ void deepseek_keep_groups(const float (&b)[N], int lane, int n_group,
                                                            int topk_group, bool (&keep)[N]) {
  const int gs = E / n_group;
#pragma unroll
  for (int i = 0; i < N; i++) keep[i] = false;

  if (gs % N == 0 && ((gs / N) & (gs / N - 1)) == 0) {
    /* Fast path: a group is L = gs/N whole lanes, L a power of two, so the
     * group's lanes are an aligned xor-closed block. */
    const int L = gs / N;
    const bool has = lane < E / N;
    float t0 = -INFINITY, t1 = -INFINITY;
    if (has) {
#pragma unroll
      for (int i = 0; i < N; i++) top2_push(t0, t1, b[i]);
    }
    for (int o = L >> 1; o > 0; o >>= 1)
      top2_merge(t0, t1, __shfl_xor_sync(0xffffffffu, t0, o), __shfl_xor_sync(0xffffffffu, t1, o));
    const float score = sanitize_nan(gs > 1 ? t0 + t1 : t0 + 0.0f);
    /* the group's first lane stands for it: lower lane = lower group */
    const uint32_t gkey = has && (lane & (L - 1)) == 0 ? rank_key(score) : 0u;
    uint64_t best = ((uint64_t)gkey << 32) | (uint32_t)~(uint32_t)lane;
    bool kept = false;
    for (int r = 0; r < topk_group; r++) {
      const int wl = (int)~(uint32_t)warp_max_u64(best);
      if (lane / L == wl / L) kept = true;
      if (lane == wl) best = (uint32_t)~(uint32_t)lane; /* key 0: taken */
    }
#pragma unroll
    for (int i = 0; i < N; i++) keep[i] = kept;
    return;
  }

  /* General path: one warp reduction per group; group g's score lands in
   * lane g/N, register g%N, so the groups rank like experts. */
  uint32_t gkey[N];
  int gid[N];
  float unused[N];
#pragma unroll
  for (int i = 0; i < N; i++) {
    gkey[i] = 0u;
    gid[i] = lane * N + i < E ? (lane * N + i) / gs : -1;
    unused[i] = 0.0f;
  }
  for (int g = 0; g < n_group; g++) {
    float t0 = -INFINITY, t1 = -INFINITY;
#pragma unroll
    for (int i = 0; i < N; i++)
      if (gid[i] == g) top2_push(t0, t1, b[i]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
      top2_merge(t0, t1, __shfl_xor_sync(0xffffffffu, t0, o), __shfl_xor_sync(0xffffffffu, t1, o));
    const float score = sanitize_nan(gs > 1 ? t0 + t1 : t0 + 0.0f);
    if (lane == g / N) {
#pragma unroll
      for (int i = 0; i < N; i++)
        if (i == g % N) gkey[i] = rank_key(score);
    }
  }
  uint64_t best = lane_best(gkey, lane);
  for (int r = 0; r < topk_group; r++) {
    float ignored;
    const int wg = warp_pop_best(gkey, unused, best, lane, ignored);
#pragma unroll
    for (int i = 0; i < N; i++)
      if (gid[i] == wg) keep[i] = true;
  }
}

/* ---- the kernel ----------------------------------------------------------- */

template <int E, int K, int METHOD, typename In>
__global__ void __launch_bounds__(32 * FP8MOE_ROUTING_WARPS) routing_kernel(const routing_params p) {
  static_assert(E >= 1 && E <= FP8MOE_MAX_EXPERTS, "E must be in [1, 512]");
  static_assert(K >= 1 && K <= E && K <= FP8MOE_MAX_TOP_K, "K must be in [1, min(E, 16)]");
  constexpr int N = (E + 31) / 32; /* experts per lane */
  griddep_wait(); /* launched without PDL (the first kernel of a run): returns at once */
  griddep_launch_dependents();
  const int lane = (int)(threadIdx.x & 31);
  const int t = (int)blockIdx.x * FP8MOE_ROUTING_WARPS + (int)(threadIdx.x >> 5);
  if (t >= p.num_tokens) return; /* whole warps only */

  /* Phase 1: the lane's logits, NaN -> -inf (padding is already -inf). */
  const In *logits = static_cast<const In *>(p.logits);
  float l[N];
  load_lane<E, N>(logits + (size_t)t * E, lane, vec_aligned<E, N, In>(logits), l);
#pragma unroll
  for (int i = 0; i < N; i++) l[i] = sanitize_nan(l[i]);

  /* Phase 2: per-method ranking key and the value the weight is made of. */
  uint32_t key[N];
  float val[N];
  if constexpr (METHOD == FP8MOE_ROUTING_DEFAULT || METHOD == FP8MOE_ROUTING_RENORMALIZE_NAIVE) {
    float m = -INFINITY;
#pragma unroll
    for (int i = 0; i < N; i++) m = fmaxf(m, l[i]);
    m = warp_max(m);
    const bool finite = m - m == 0.0f;
    float part = 0.0f;
#pragma unroll
    for (int i = 0; i < N; i++) {
      const bool real = lane * N + i < E;
      val[i] = !real ? 0.0f : finite ? routing_exp(__fsub_rn(l[i], m)) : (l[i] == m ? 1.0f : 0.0f);
      part = __fadd_rn(part, val[i]);
    }
    const float sum = warp_sum(part); /* >= 1: the maximum contributes exp(0) */
#pragma unroll
    for (int i = 0; i < N; i++) {
      val[i] = __fdiv_rn(val[i], sum);
      key[i] = lane * N + i < E ? rank_key(val[i]) : 0u;
    }
  } else if constexpr (METHOD == FP8MOE_ROUTING_DEEPSEEK_V3) {
    float b[N];
#pragma unroll
    for (int i = 0; i < N; i++) b[i] = val[i] = routing_sigmoid(l[i]);
    if (p.bias) {
      float bias[N];
      if (p.bias_dtype == FP8MOE_DTYPE_BF16) {
        const uint16_t *bp = static_cast<const uint16_t *>(p.bias);
        load_lane<E, N>(bp, lane, vec_aligned<E, N, uint16_t>(bp), bias);
      } else {
        const float *bp = static_cast<const float *>(p.bias);
        load_lane<E, N>(bp, lane, vec_aligned<E, N, float>(bp), bias);
      }
#pragma unroll
      for (int i = 0; i < N; i++) b[i] = __fadd_rn(b[i], bias[i]);
    }
#pragma unroll
    for (int i = 0; i < N; i++) {
      b[i] = sanitize_nan(b[i]);
      key[i] = lane * N + i < E ? rank_key(b[i]) : 0u;
    }
    if (p.n_group > 1) {
      bool keep[N];
      deepseek_keep_groups<E, N>(b, lane, p.n_group, p.topk_group, keep);
#pragma unroll
      for (int i = 0; i < N; i++)
        if (key[i] != 0u && !keep[i]) key[i] = rank_key(-INFINITY);
    }
  } else { /* Renormalize, Llama4, TopK: rank by the logit itself */
#pragma unroll
    for (int i = 0; i < N; i++) {
      val[i] = l[i];
      key[i] = lane * N + i < E ? rank_key(l[i]) : 0u;
    }
  }

  /* Phase 3: K argmax rounds; lane r keeps slot r. */
  uint64_t best = lane_best(key, lane);
  int my_id = 0;
  float my_val = 0.0f;
#pragma unroll
  for (int r = 0; r < K; r++) {
    float v;
    const int idx = warp_pop_best(key, val, best, lane, v);
    if (lane == r) {
      my_id = idx;
      my_val = v;
    }
  }

  /* Phase 4: weights, sums in slot order. */
  float w;
  if constexpr (METHOD == FP8MOE_ROUTING_DEFAULT) {
    w = my_val;
  } else if constexpr (METHOD == FP8MOE_ROUTING_RENORMALIZE_NAIVE) {
    w = __fdiv_rn(my_val, slot_sum<K>(my_val));
  } else if constexpr (METHOD == FP8MOE_ROUTING_RENORMALIZE) {
    /* softmax over the K chosen logits; slot 0 holds their maximum */
    const float m = __shfl_sync(0xffffffffu, my_val, 0);
    const float e = m - m == 0.0f ? routing_exp(__fsub_rn(my_val, m)) : (my_val == m ? 1.0f : 0.0f);
    w = __fdiv_rn(e, slot_sum<K>(e));
  } else if constexpr (METHOD == FP8MOE_ROUTING_LLAMA4) {
    w = routing_sigmoid(my_val);
  } else if constexpr (METHOD == FP8MOE_ROUTING_TOPK) {
    w = my_val;
  } else { /* DeepSeekV3: s * scale / (sum of the chosen s + 1e-20) */
    const float scale = p.routed_scaling_factor == 0.0f ? 1.0f : p.routed_scaling_factor;
    w = __fdiv_rn(__fmul_rn(my_val, scale), __fadd_rn(slot_sum<K>(my_val), 1e-20f));
  }
  if (lane < K) {
    p.ids_out[(size_t)t * K + lane] = my_id;
    p.weights_out[(size_t)t * K + lane] = w;
    if (p.replay_ids) p.replay_ids[(size_t)t * K + lane] = my_id;
    if (p.replay_weights) p.replay_weights[(size_t)t * K + lane] = w;
  }
}

template <int E, int K, int METHOD>
static fp8moe_status routing_launch_method(const routing_params &p, cudaStream_t stream) {
  const int warps = p.num_tokens < FP8MOE_ROUTING_WARPS ? p.num_tokens : FP8MOE_ROUTING_WARPS;
  const unsigned grid = (unsigned)ceil_div(p.num_tokens, FP8MOE_ROUTING_WARPS);
  if (p.logits_dtype == FP8MOE_DTYPE_BF16)
    routing_kernel<E, K, METHOD, uint16_t><<<grid, 32 * warps, 0, stream>>>(p);
  else
    routing_kernel<E, K, METHOD, float><<<grid, 32 * warps, 0, stream>>>(p);
  FP8MOE__CHECK_LAUNCH();
  return FP8MOE_OK;
}

/* Routes p.num_tokens tokens: ids_out / weights_out [T, K]. T = 0 launches
 * nothing. The parameters were validated by the caller; the checks repeated
 * here are host arithmetic only (no launch happens on a bad value). */
template <int E, int K>
static fp8moe_status routing_launch(const routing_params &p, cudaStream_t stream) {
  if (p.num_tokens < 0) return FP8MOE_ERROR_INVALID_NUM_TOKENS;
  if (p.num_tokens == 0) return FP8MOE_OK;
  fp8moe_status st = fp8moe_validate_routing(p.method, E, K, p.n_group, p.topk_group, p.routed_scaling_factor);
  if (st != FP8MOE_OK) return st;
  if (!fp8moe__dtype_ok(p.logits_dtype) || (p.bias && !fp8moe__dtype_ok(p.bias_dtype)))
    return FP8MOE_ERROR_INVALID_DTYPE;
  if (!p.logits || !p.ids_out || !p.weights_out) return FP8MOE_ERROR_NULL_ARGUMENT;
  switch (p.method) {
  case FP8MOE_ROUTING_DEFAULT: return routing_launch_method<E, K, FP8MOE_ROUTING_DEFAULT>(p, stream);
  case FP8MOE_ROUTING_RENORMALIZE: return routing_launch_method<E, K, FP8MOE_ROUTING_RENORMALIZE>(p, stream);
  case FP8MOE_ROUTING_DEEPSEEK_V3: return routing_launch_method<E, K, FP8MOE_ROUTING_DEEPSEEK_V3>(p, stream);
  case FP8MOE_ROUTING_LLAMA4:
    if constexpr (K == 1) return routing_launch_method<E, K, FP8MOE_ROUTING_LLAMA4>(p, stream);
    return FP8MOE_ERROR_INVALID_ROUTING_PARAMS;
  case FP8MOE_ROUTING_RENORMALIZE_NAIVE:
    return routing_launch_method<E, K, FP8MOE_ROUTING_RENORMALIZE_NAIVE>(p, stream);
  default: return routing_launch_method<E, K, FP8MOE_ROUTING_TOPK>(p, stream);
  }
}

} // namespace detail
} // namespace fp8moe

#endif /* FP8MOE_DETAIL_ROUTING_CUH */
