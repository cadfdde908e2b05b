/* bench/bench_layer.cuh - one shape of the MoE layer, timed three ways.
 *
 * For each token count T of the run, on fresh random data:
 *   nonrouted      name_run: fp32 router logits in, routing inside the timed layer
 *   routed         name_run_routed: the packed top-k of the CPU reference router
 *                  of the same logits (so both rows route alike; the packed
 *                  weights are bf16, hence tiny output differences)
 *   cublaslt-peer  the same layer with cuBLASLt's block-scaled FP8 GEMM doing
 *                  the math: fp8moe's routing, decode, scan and permute in
 *                  front, one GEMM1 and one GEMM2 cublasLtMatmul per active
 *                  expert, a SwiGLU + fp8 requant kernel between them (SPEC
 *                  2.3-2.4, written here) and fp8moe's combine after. The
 *                  per-expert row counts come from a host copy of the device
 *                  routing, read before timing: an advantage the library (which
 *                  never synchronizes) does not have. Its output is checked
 *                  against fp8moe's non-routed output (rel L2 <= 1e-2).
 *
 * Timing: CUDA events around each run, warm-up first, median of many runs.
 * Every run streams its weights from HBM: when the experts one run touches
 * would fit in L2 three times over, several weight sets (same shapes, other
 * random values) are allocated and the runs rotate among them.
 *
 * cuBLASLt layouts (TN form; cuBLASLt is column-major):
 *   A = W[e] as k x m column-major (= [N, K] row-major), transa = T,
 *       scales BLK128x128_32F: [N/128][L4] row-major with L4 = K/128 rounded
 *       up to 4 (fp8moe's [N/128][K/128] is repacked once when K/128 % 4 != 0);
 *   B = rows of expert e as k x n column-major (= [n, K] row-major), n = the
 *       expert's row count, rounded up where cuBLASLt needs it (the plan),
 *       scales VEC128_32F: [K/128][n], the rows contiguous, one block per
 *       expert (fp8moe keeps one [K/128][ld] array for all rows, so the peer
 *       regroups it; the SwiGLU kernel writes GEMM2's scales this way directly);
 *   D = [count, N] row-major.
 */
#ifndef FP8MOE_BENCH_LAYER_CUH
#define FP8MOE_BENCH_LAYER_CUH

#include <fp8moe/fp8moe.cuh>
#include <fp8moe/reference.h>

#include <float.h>
#include <string>

#include "bench_moe.h"
#include "bench_util.cuh"

namespace bench {

/* The host functions FP8MOE_DEFINE generated for one shape. */
struct shape_api {
  size_t (*workspace_size)(int);
  size_t (*workspace_size_shared)(int, int);
  fp8moe_status (*run)(const fp8moe_args *, void *, size_t, fp8moe_stream);
  fp8moe_status (*run_routed)(const fp8moe_args *, void *, size_t, fp8moe_stream);
};

/* ---- peer kernels ------------------------------------------------------ */

/* The expert of GEMM row r: the last e in [0, n) with off[e] <= r. Empty
 * experts share their offset with the next one, so this lands on the
 * non-empty expert that holds r. */
static __device__ __forceinline__ int peer_row_expert(const int *off, int n, int r) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    int mid = (lo + hi + 1) >> 1;
    if (__ldg(off + mid) <= r) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/* The row count cuBLASLt sees for an expert of c rows: c rounded up to pad. */
static __host__ __device__ __forceinline__ int peer_ld(int c, int pad) { return (c + pad - 1) / pad * pad; }

/* fp8moe's x_perm_scale [K/128][ld] -> one [K/128][peer_ld(count_e)] block per
 * expert at sbase[e] (cuBLASLt's VEC128_32F layout). One thread per (kb, row). */
static __global__ void peer_regroup_scales_kernel(const float *src, long long ld, int rows, int kblocks,
                                                  const int *off, const int *sbase, int num_experts, int pad,
                                                  float *dst) {
  long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (i >= (long long)rows * kblocks) return;
  const int kb = (int)(i / rows), r = (int)(i % rows);
  const int e = peer_row_expert(off, num_experts, r);
  const int o = __ldg(off + e), c = peer_ld(__ldg(off + e + 1) - o, pad);
  dst[__ldg(sbase + e) + (long long)kb * c + (r - o)] = __ldg(src + kb * ld + r);
}

/* SwiGLU + fp8 requant (SPEC 2.3-2.4) of GEMM1's output g [rows, 2I] (fp32, or
 * bf16 when cuBLASLt offers no fp32 output): a[j] = silu(g[I+j]) * g[j],
 * scale = max(amax/448, FLT_MIN) per (row, 128 columns), q = sat_e4m3(a/scale).
 * One warp per (row, 128-column block), 4 columns per lane. */
template <int I, bool BF16_IN>
static __global__ void peer_swiglu_quant_kernel(const void *g, int rows, const int *off, const int *sbase,
                                                int num_experts, int pad, uint8_t *act, float *act_scale) {
  const long long w = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (w >= (long long)rows * (I / 128)) return; /* uniform per warp */
  const int r = (int)(w / (I / 128)), jb = (int)(w % (I / 128));
  const int j = jb * 128 + lane * 4;
  float up[4], gate[4];
  if (BF16_IN) {
    const uint16_t *p = static_cast<const uint16_t *>(g) + (long long)r * 2 * I;
    uint2 u = *reinterpret_cast<const uint2 *>(p + j), v = *reinterpret_cast<const uint2 *>(p + I + j);
    up[0] = __uint_as_float(u.x << 16), up[1] = __uint_as_float(u.x & 0xffff0000u);
    up[2] = __uint_as_float(u.y << 16), up[3] = __uint_as_float(u.y & 0xffff0000u);
    gate[0] = __uint_as_float(v.x << 16), gate[1] = __uint_as_float(v.x & 0xffff0000u);
    gate[2] = __uint_as_float(v.y << 16), gate[3] = __uint_as_float(v.y & 0xffff0000u);
  } else {
    const float *p = static_cast<const float *>(g) + (long long)r * 2 * I;
    float4 u = *reinterpret_cast<const float4 *>(p + j), v = *reinterpret_cast<const float4 *>(p + I + j);
    up[0] = u.x, up[1] = u.y, up[2] = u.z, up[3] = u.w;
    gate[0] = v.x, gate[1] = v.y, gate[2] = v.z, gate[3] = v.w;
  }
  float a[4], amax = 0.0f;
#pragma unroll
  for (int q = 0; q < 4; q++) {
    a[q] = gate[q] / (1.0f + expf(-gate[q])) * up[q];
    amax = fmaxf(amax, fabsf(a[q]));
  }
  amax = fp8moe::detail::warp_max(amax);
  const float scale = fmaxf(amax / 448.0f, FLT_MIN);
  uint32_t packed = 0;
#pragma unroll
  for (int q = 0; q < 4; q++) packed |= (uint32_t)fp8moe::detail::float_to_e4m3(a[q] / scale) << (8 * q);
  *reinterpret_cast<uint32_t *>(act + (long long)r * I + j) = packed;
  if (lane == 0) {
    const int e = peer_row_expert(off, num_experts, r);
    const int o = __ldg(off + e), c = peer_ld(__ldg(off + e + 1) - o, pad);
    act_scale[__ldg(sbase + e) + (long long)jb * c + (r - o)] = scale;
  }
}

/* [E_loc][N/128][K/128] -> [E_loc][N/128][L4] (pad with 1.0). */
static __global__ void peer_pad_scales_kernel(const float *src, float *dst, long long nrows, int kb, int l4) {
  long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (i >= nrows * l4) return;
  long long row = i / l4;
  int c = (int)(i % l4);
  dst[i] = c < kb ? src[row * kb + c] : 1.0f;
}

/* ---- cuBLASLt plumbing ------------------------------------------------- */

struct peer_plan {
  std::vector<std::vector<peer_call>> g1, g2; /* [set][active expert] */
  std::vector<cublasLtMatrixLayout_t> layouts;
  std::vector<cublasLtMatmulDesc_t> descs;
  ~peer_plan() {
    for (auto d : descs) cublasLtMatmulDescDestroy(d);
    for (auto l : layouts) cublasLtMatrixLayoutDestroy(l);
  }
};

/* ---- the per-shape harness --------------------------------------------- */

struct shape_buffers {
  std::vector<void *> owned;
  ~shape_buffers() {
    for (void *p : owned) cudaFree(p);
  }
  template <class T>
  int alloc(T **p, size_t n) {
    void *v = NULL;
    BENCH_CUDA(cudaMalloc(&v, n * sizeof(T) > 0 ? n * sizeof(T) : 16));
    owned.push_back(v);
    *p = static_cast<T *>(v);
    return 0;
  }
};

struct weight_set {
  uint8_t *w1, *w2;
  float *w1s, *w2s;
  uint8_t *sw1, *sw2;     /* one shared expert (the feature rows) */
  float *sw1s, *sw2s;
  float *w1s_lt, *w2s_lt; /* the peer's scales: same arrays, or repacked to L4 */
};

template <int E, int K, int H, int I>
static int bench_shape(const bench_config &cfg, const bench_options &opt, const bench_env &env,
                       std::vector<bench_row> &rows_out, const shape_api &api) {
  const int E_loc = cfg.local_num, e_off = cfg.local_offset;
  const int HB = H / 128, IB = I / 128;
  const int L4_1 = (HB + 3) / 4 * 4, L4_2 = (IB + 3) / 4 * 4; /* cuBLASLt pads K/128 to 4 */
  const size_t w1_n = (size_t)2 * I * H, w2_n = (size_t)H * I;
  const size_t s1_n = (size_t)(2 * I / 128) * HB, s2_n = (size_t)HB * IB;
  const double expert_bytes = (double)(w1_n + w2_n) + 4.0 * (double)(s1_n + s2_n);
  int maxT = 0;
  for (int t : opt.tokens) maxT = t > maxT ? t : maxT;
  if (maxT <= 0) return 0;
  const size_t maxRows = (size_t)maxT * K;
  cudaStream_t s;
  BENCH_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  rng R = {opt.seed ^ mix64((uint64_t)cfg.E * 1000003u + (uint64_t)cfg.local_offset * 7919u + (uint64_t)H)};

  /* ---- routing of every T on the host (the routed input, the floors) ---- */
  const bool dsv3 = cfg.method == FP8MOE_ROUTING_DEEPSEEK_V3;
  std::vector<float> bias(E);
  /* Router inputs: logits N(0, 1) and a small bias give a near-uniform expert
   * load, as a trained router with its balancing bias aims for. (Large
   * logits saturate the sigmoid and let the bias pick a few experts alone.) */
  for (auto &b : bias) b = 0.01f * R.normal();
  struct plan_t {
    int T;
    std::vector<float> logits;
    std::vector<int32_t> ids, packed;
    std::vector<float> wts;
    std::vector<int> count; /* per local expert, from the CPU router */
    long long slots;
    int active, max_count;
    int sets;
    /* the skewed load (opt.skewed): packed top-k and its counts */
    std::vector<int32_t> packed_skew;
    long long slots_skew = 0;
    int active_skew = 0, max_skew = 0;
  };
  std::vector<plan_t> plans;
  /* A trained router's load is skewed: expert e is picked with probability
   * proportional to exp(1.2 z_e), z_e ~ N(0, 1), so the most loaded of 256
   * experts gets about 12x the mean and the least about 1/30 of it (none at
   * small T); each token takes K distinct experts by sequential sampling
   * without replacement, with random positive weights. */
  std::vector<double> pop(E);
  for (auto &v : pop) v = exp(1.2 * R.normal());
  for (int T : opt.tokens) {
    plan_t p;
    p.T = T;
    p.logits.resize((size_t)T * E);
    for (auto &v : p.logits) v = R.normal();
    p.ids.resize((size_t)T * K);
    p.wts.resize((size_t)T * K);
    p.packed.resize((size_t)T * K);
    fp8moe_ref_route(cfg.method, T, E, K, p.logits.data(), dsv3 && cfg.use_bias ? bias.data() : NULL,
                     cfg.n_group, cfg.topk_group, cfg.scale, p.ids.data(), p.wts.data());
    p.count.assign(E_loc, 0);
    p.slots = 0;
    for (size_t i = 0; i < p.ids.size(); i++) {
      p.packed[i] = fp8moe_topk_pack(p.ids[i], p.wts[i]);
      int l = p.ids[i] - e_off;
      if (l >= 0 && l < E_loc) p.count[l]++, p.slots++;
    }
    p.active = 0;
    p.max_count = 0;
    for (int c : p.count) p.active += c > 0, p.max_count = std::max(p.max_count, c);
    if (opt.skewed) {
      p.packed_skew.resize((size_t)T * K);
      std::vector<int> cs(E_loc, 0);
      for (int t = 0; t < T; t++) {
        double left = 0;
        for (double v : pop) left += v;
        std::vector<char> taken(E, 0);
        for (int k = 0; k < K; k++) {
          double u = R.uniform() * left;
          int e = 0;
          for (; e < E - 1; e++) {
            if (taken[e]) continue;
            if ((u -= pop[e]) < 0) break;
          }
          while (taken[e]) e--; /* rounding at the end of the scan */
          taken[e] = 1;
          left -= pop[e];
          p.packed_skew[(size_t)t * K + k] = fp8moe_topk_pack(e, 0.05f + R.uniform());
          const int l = e - e_off;
          if (l >= 0 && l < E_loc) cs[l]++, p.slots_skew++;
        }
      }
      for (int c : cs) p.active_skew += c > 0, p.max_skew = std::max(p.max_skew, c);
    }
    const double touched = p.active * expert_bytes;
    p.sets = touched > 0 ? (int)ceil(3.0 * (double)env.l2_bytes / touched) : 1;
    p.sets = std::max(1, std::min(p.sets, opt.max_sets));
    plans.push_back(std::move(p));
  }

  /* ---- memory: everything but the weight sets, then as many sets as fit ---- */
  const size_t ws_bytes = opt.features ? api.workspace_size_shared(maxT, 1) : api.workspace_size(maxT);
  const size_t lt_ws_bytes = (size_t)32 << 20;
  /* The peer may round each expert's row count up to PEER_MAX_PAD for cuBLASLt
   * (see the plan below); its buffers get that much slack past the last row. */
  const int PEER_MAX_PAD = 128;
  const size_t peerRows = maxRows + PEER_MAX_PAD;
  const size_t peer_s1 = (size_t)HB * (maxRows + (size_t)PEER_MAX_PAD * E_loc);
  const size_t peer_s2 = (size_t)IB * (maxRows + (size_t)PEER_MAX_PAD * E_loc);
  const size_t ws_alloc = ws_bytes + (opt.peer ? (size_t)PEER_MAX_PAD * H : 0); /* padded reads of x_perm */
  size_t fixed = (size_t)maxT * H + (size_t)HB * maxT * 4 + (size_t)maxT * E * 4 + E * 4 + maxRows * 4 +
                 2 * (size_t)maxT * H * 2 + ws_alloc + 1024;
  if (opt.peer)
    fixed += peerRows * (2 * I * 4 + I + 2 * H) + (peer_s1 + peer_s2) * 4 + lt_ws_bytes + 3 * (E_loc + 1) * 4;
  const bool pad1 = L4_1 != HB, pad2 = L4_2 != IB;
  const size_t set_bytes = (size_t)(E_loc + (opt.features ? 1 : 0)) * (w1_n + w2_n + 4 * (s1_n + s2_n)) +
                           (opt.peer && pad1 ? (size_t)E_loc * (2 * I / 128) * L4_1 * 4 : 0) +
                           (opt.peer && pad2 ? (size_t)E_loc * HB * L4_2 * 4 : 0);
  size_t free_now = 0, total_now = 0;
  BENCH_CUDA(cudaMemGetInfo(&free_now, &total_now));
  const double budget = 0.92 * (double)free_now - (double)fixed;
  const int sets_fit = budget > 0 ? (int)(budget / (double)set_bytes) : 0;
  if (sets_fit < 1) {
    fprintf(stderr, "bench: %s does not fit: %.1f GB free, %.1f GB needed for one weight set and T=%d\n", cfg.name,
            free_now / 1e9, (fixed + set_bytes) / 1e9, maxT);
    cudaStreamDestroy(s);
    return -1;
  }
  int nsets = 1;
  for (auto &p : plans) {
    p.sets = std::min(p.sets, sets_fit);
    nsets = std::max(nsets, p.sets);
  }

  shape_buffers B;
  std::vector<weight_set> W(nsets);
  for (int k = 0; k < nsets; k++) {
    weight_set &w = W[k];
    if (B.alloc(&w.w1, E_loc * w1_n) || B.alloc(&w.w2, E_loc * w2_n) || B.alloc(&w.w1s, E_loc * s1_n) ||
        B.alloc(&w.w2s, E_loc * s2_n))
      return -1;
    if (fill_e4m3(w.w1, E_loc * w1_n, R.next(), s) || fill_e4m3(w.w2, E_loc * w2_n, R.next(), s) ||
        fill_uniform(w.w1s, E_loc * s1_n, R.next(), 0.5f / sqrtf((float)H), 1.5f / sqrtf((float)H), s) ||
        fill_uniform(w.w2s, E_loc * s2_n, R.next(), 0.5f / sqrtf((float)I), 1.5f / sqrtf((float)I), s))
      return -1;
    w.sw1 = w.sw2 = NULL;
    w.sw1s = w.sw2s = NULL;
    if (opt.features) {
      if (B.alloc(&w.sw1, w1_n) || B.alloc(&w.sw2, w2_n) || B.alloc(&w.sw1s, s1_n) || B.alloc(&w.sw2s, s2_n))
        return -1;
      if (fill_e4m3(w.sw1, w1_n, R.next(), s) || fill_e4m3(w.sw2, w2_n, R.next(), s) ||
          fill_uniform(w.sw1s, s1_n, R.next(), 0.5f / sqrtf((float)H), 1.5f / sqrtf((float)H), s) ||
          fill_uniform(w.sw2s, s2_n, R.next(), 0.5f / sqrtf((float)I), 1.5f / sqrtf((float)I), s))
        return -1;
    }
    w.w1s_lt = w.w1s;
    w.w2s_lt = w.w2s;
    if (opt.peer && pad1) {
      size_t nrows = (size_t)E_loc * (2 * I / 128);
      if (B.alloc(&w.w1s_lt, nrows * L4_1)) return -1;
      peer_pad_scales_kernel<<<(unsigned)((nrows * L4_1 + 255) / 256), 256, 0, s>>>(w.w1s, w.w1s_lt, nrows, HB, L4_1);
      BENCH_CUDA(cudaGetLastError());
    }
    if (opt.peer && pad2) {
      size_t nrows = (size_t)E_loc * HB;
      if (B.alloc(&w.w2s_lt, nrows * L4_2)) return -1;
      peer_pad_scales_kernel<<<(unsigned)((nrows * L4_2 + 255) / 256), 256, 0, s>>>(w.w2s, w.w2s_lt, nrows, IB, L4_2);
      BENCH_CUDA(cudaGetLastError());
    }
  }
  uint8_t *d_x;
  float *d_xs, *d_logits, *d_bias;
  int32_t *d_packed, *d_packed_one, *d_packed_skew, *d_replay_ids;
  float *d_replay_w;
  uint16_t *d_out, *d_out_peer;
  uint8_t *d_ws;
  if (B.alloc(&d_x, (size_t)maxT * H) || B.alloc(&d_xs, (size_t)HB * maxT) || B.alloc(&d_logits, (size_t)maxT * E) ||
      B.alloc(&d_bias, (size_t)E) || B.alloc(&d_packed, maxRows) || B.alloc(&d_out, (size_t)maxT * H) ||
      B.alloc(&d_out_peer, (size_t)maxT * H) || B.alloc(&d_ws, ws_alloc) || B.alloc(&d_packed_one, maxRows) ||
      B.alloc(&d_packed_skew, maxRows) || B.alloc(&d_replay_ids, maxRows) || B.alloc(&d_replay_w, maxRows))
    return -1;
  if (opt.features) {
    /* the one-expert call: slot 0 of every token on local expert 0 with weight 1, the other slots on
     * experts that are not local (they contribute nothing) */
    std::vector<int32_t> one(maxRows);
    for (size_t i = 0; i < maxRows; i++) one[i] = fp8moe_topk_pack(i % K == 0 ? 0 : (int)(i % K), 1.0f);
    BENCH_CUDA(cudaMemcpyAsync(d_packed_one, one.data(), maxRows * 4, cudaMemcpyHostToDevice, s));
  }
  BENCH_CUDA(cudaMemcpyAsync(d_bias, bias.data(), E * 4, cudaMemcpyHostToDevice, s));

  /* the peer's own buffers */
  float *p_g1 = NULL, *p_xs = NULL, *p_as = NULL;
  uint8_t *p_act = NULL;
  uint16_t *p_y = NULL;
  int *p_off = NULL, *p_sb1 = NULL, *p_sb2 = NULL;
  void *p_ltws = NULL;
  cublasLtHandle_t lt = NULL;
  if (opt.peer) {
    if (B.alloc(&p_g1, peerRows * 2 * I) || B.alloc(&p_act, peerRows * I) || B.alloc(&p_y, peerRows * H) ||
        B.alloc(&p_xs, peer_s1) || B.alloc(&p_as, peer_s2) ||
        B.alloc(&p_off, (size_t)E_loc + 1) || B.alloc(&p_sb1, (size_t)E_loc) || B.alloc(&p_sb2, (size_t)E_loc) ||
        B.alloc(reinterpret_cast<uint8_t **>(&p_ltws), lt_ws_bytes))
      return -1;
    BENCH_CUDA(cudaMemsetAsync(p_xs, 0, peer_s1 * 4, s));
    BENCH_CUDA(cudaMemsetAsync(p_as, 0, peer_s2 * 4, s));
    BENCH_CUDA(cudaMemsetAsync(p_act, 0, peerRows * I, s));
    BENCH_CUDA(cudaMemsetAsync(d_ws, 0, ws_alloc, s));
    BENCH_LT(cublasLtCreate(&lt));
  }
  BENCH_CUDA(cudaStreamSynchronize(s));
  fprintf(stderr, "[%s] %s: E=%d K=%d H=%d I=%d, local experts %d at %d; %d weight set(s) of %.2f GB allocated\n",
          cfg.name, cfg.title, E, K, H, I, E_loc, e_off, nsets, set_bytes / 1e9);

  std::vector<uint16_t> h_ref, h_tmp;
  for (plan_t &p : plans) {
    const int T = p.T;
    const double wbytes = p.active * expert_bytes;
    const double flops = 2.0 * (double)p.slots * (2.0 * I * H + (double)H * I);
    char tag[64];
    snprintf(tag, sizeof tag, "[%s T=%d]", cfg.name, T);

    /* fresh activations and routing inputs */
    if (fill_e4m3(d_x, (size_t)T * H, R.next(), s) || fill_uniform(d_xs, (size_t)HB * T, R.next(), 0.25f, 1.25f, s))
      return -1;
    BENCH_CUDA(cudaMemcpyAsync(d_logits, p.logits.data(), p.logits.size() * 4, cudaMemcpyHostToDevice, s));
    BENCH_CUDA(cudaMemcpyAsync(d_packed, p.packed.data(), p.packed.size() * 4, cudaMemcpyHostToDevice, s));
    BENCH_CUDA(cudaStreamSynchronize(s));

    fp8moe_args a;
    memset(&a, 0, sizeof a);
    a.num_tokens = T;
    a.local_expert_offset = e_off;
    a.local_num_experts = E_loc;
    a.hidden_states = d_x;
    a.hidden_states_scale = d_xs;
    a.routing_method = cfg.method;
    a.routing_logits = d_logits;
    a.logits_dtype = FP8MOE_DTYPE_FP32;
    a.routing_bias = dsv3 && cfg.use_bias ? d_bias : NULL;
    a.bias_dtype = FP8MOE_DTYPE_FP32;
    a.n_group = cfg.n_group;
    a.topk_group = cfg.topk_group;
    a.routed_scaling_factor = cfg.scale;
    a.output = d_out;
    auto use_set = [&](fp8moe_args &x, int k) {
      const weight_set &w = W[k % p.sets];
      x.w1 = w.w1, x.w1_scale = w.w1s, x.w2 = w.w2, x.w2_scale = w.w2s;
    };

    /* time one mode: a short probe (after the warm-up) picks the number of runs;
     * fp8moe modes replay CUDA graphs under --graph, the peer never does */
    auto timed = [&](const char *mode, auto run_fn, double *med, int *reps_used, bool fp8moe_mode = true) -> int {
      const bool graph = fp8moe_mode && opt.graph;
      std::vector<float> ms;
      auto go = [&](int warmup, int n) {
        return graph ? time_graph_runs(run_fn, p.sets, warmup, n, s, ms) : time_runs(run_fn, warmup, n, s, ms);
      };
      fprintf(stderr, "%s %s: %d warm-up + probe\n", tag, mode, opt.warmup);
      if (go(opt.warmup, 3)) return -1;
      int reps = median(ms) > opt.slow_ms ? opt.slow_reps : opt.reps;
      fprintf(stderr, "%s %s: %d timed runs, %d weight set(s)%s\n", tag, mode, reps, p.sets, graph ? ", graphs" : "");
      if (go(0, reps)) return -1;
      *med = median(ms);
      *reps_used = reps;
      return 0;
    };
    auto fp8moe_call = [&](int routed, int k) -> int {
      fp8moe_args x = a;
      x.enable_pdl = opt.pdl;
      use_set(x, k);
      if (routed) {
        x.topk_packed = d_packed;
      }
      fp8moe_status st = routed ? api.run_routed(&x, d_ws, ws_bytes, s) : api.run(&x, d_ws, ws_bytes, s);
      if (st != FP8MOE_OK) {
        fprintf(stderr, "%s fp8moe: %s\n", tag, fp8moe_status_string(st));
        return -1;
      }
      return 0;
    };
    const size_t outn = (size_t)T * H;

    /* ---- nonrouted ---- */
    double med = NAN;
    int reps = 0;
    bench_row row;
    row.config = cfg.name;
    row.T = T;
    if (timed("nonrouted", [&](int k) { return fp8moe_call(0, k); }, &med, &reps)) return -1;
    /* the output of weight set 0, and the device routing's choice (the replay outputs) */
    {
      fp8moe_args x = a;
      x.enable_pdl = opt.pdl;
      use_set(x, 0);
      x.topk_ids_out = d_replay_ids;
      x.topk_weights_out = d_replay_w;
      fp8moe_status st = api.run(&x, d_ws, ws_bytes, s);
      if (st != FP8MOE_OK) {
        fprintf(stderr, "%s fp8moe: %s\n", tag, fp8moe_status_string(st));
        return -1;
      }
    }
    std::vector<int32_t> dev_ids((size_t)T * K);
    h_ref.resize(outn);
    BENCH_CUDA(cudaMemcpyAsync(h_ref.data(), d_out, outn * 2, cudaMemcpyDeviceToHost, s));
    BENCH_CUDA(cudaMemcpyAsync(dev_ids.data(), d_replay_ids, dev_ids.size() * 4, cudaMemcpyDeviceToHost, s));
    BENCH_CUDA(cudaStreamSynchronize(s));
    std::vector<int> dev_count(E_loc, 0);
    for (int32_t id : dev_ids)
      if (id - cfg.local_offset >= 0 && id - cfg.local_offset < E_loc) dev_count[id - cfg.local_offset]++;
    int differ = 0;
    for (int e = 0; e < E_loc; e++) differ += dev_count[e] != p.count[e];
    char note[256];
    snprintf(note, sizeof note, "reps=%d sets=%d; %lld local slots on %d experts (max %d)%s", reps, p.sets, p.slots,
             p.active, p.max_count,
             differ ? "; device routing counts differ from CPU reference" : "");
    if (differ) fprintf(stderr, "%s WARNING: device routing gives other counts than the CPU reference for %d experts\n", tag, differ);
    row.mode = "nonrouted";
    row.time_us = med * 1e3;
    row.note = note;
    bench_fill_row(row, wbytes, flops, env);
    rows_out.push_back(row);

    /* ---- routed ---- */
    if (timed("routed", [&](int k) { return fp8moe_call(1, k); }, &med, &reps)) return -1;
    if (fp8moe_call(1, 0)) return -1;
    h_tmp.resize(outn);
    BENCH_CUDA(cudaMemcpyAsync(h_tmp.data(), d_out, outn * 2, cudaMemcpyDeviceToHost, s));
    BENCH_CUDA(cudaStreamSynchronize(s));
    const double rr = rel_l2_bf16(h_tmp, h_ref, outn);
    snprintf(note, sizeof note, "reps=%d sets=%d; relL2 vs nonrouted=%.2e (bf16 packed weights)", reps, p.sets, rr);
    fprintf(stderr, "%s routed vs nonrouted output: rel L2 = %.3e\n", tag, rr);
    row.mode = "routed";
    row.time_us = med * 1e3;
    row.note = note;
    bench_fill_row(row, wbytes, flops, env);
    rows_out.push_back(row);

    /* ---- the skewed load (--load skewed|both) ---- */
    if (opt.skewed) {
      BENCH_CUDA(cudaMemcpyAsync(d_packed_skew, p.packed_skew.data(), p.packed_skew.size() * 4, cudaMemcpyHostToDevice,
                                 s));
      auto skew_call = [&](int k) -> int {
        fp8moe_args x = a;
        x.enable_pdl = opt.pdl;
        use_set(x, k);
        x.topk_packed = d_packed_skew;
        fp8moe_status st = api.run_routed(&x, d_ws, ws_bytes, s);
        if (st != FP8MOE_OK) {
          fprintf(stderr, "%s fp8moe: %s\n", tag, fp8moe_status_string(st));
          return -1;
        }
        return 0;
      };
      if (timed("routed-skewed", skew_call, &med, &reps)) return -1;
      snprintf(note, sizeof note, "reps=%d sets=%d; skewed load: %lld local slots on %d experts (max %d, mean %.1f)",
               reps, p.sets, p.slots_skew, p.active_skew, p.max_skew,
               p.active_skew ? (double)p.slots_skew / E_loc : 0.0);
      row.mode = "routed-skewed";
      row.time_us = med * 1e3;
      row.note = note;
      bench_fill_row(row, p.active_skew * expert_bytes, 2.0 * (double)p.slots_skew * (2.0 * I * H + (double)H * I),
                     env);
      rows_out.push_back(row);
    }

    /* ---- the 0.3 features (--features): one shared expert in the call, the
     * same expert as a separate one-expert call, batch invariance ---- */
    if (opt.features) {
      const double routed_us = med * 1e3;
      auto variant = [&](int k, int shared, int one_expert, int invariant) -> int {
        fp8moe_args x = a;
        x.enable_pdl = opt.pdl;
        use_set(x, k);
        x.topk_packed = d_packed;
        x.batch_invariant = invariant;
        const weight_set &w = W[k % p.sets];
        if (shared) {
          x.num_shared_experts = 1;
          x.shared_w1 = w.sw1, x.shared_w1_scale = w.sw1s, x.shared_w2 = w.sw2, x.shared_w2_scale = w.sw2s;
        }
        if (one_expert) {
          x.local_expert_offset = 0;
          x.local_num_experts = 1;
          x.topk_packed = d_packed_one;
          x.w1 = w.sw1, x.w1_scale = w.sw1s, x.w2 = w.sw2, x.w2_scale = w.sw2s;
        }
        fp8moe_status st = api.run_routed(&x, d_ws, ws_bytes, s);
        if (st != FP8MOE_OK) {
          fprintf(stderr, "%s fp8moe: %s\n", tag, fp8moe_status_string(st));
          return -1;
        }
        return 0;
      };
      const double sh_flops = flops + 2.0 * T * (2.0 * I * H + (double)H * I);
      double shared_us = NAN, one_us = NAN;
      if (timed("routed+shared", [&](int k) { return variant(k, 1, 0, 0); }, &med, &reps)) return -1;
      shared_us = med * 1e3;
      if (timed("one-expert", [&](int k) { return variant(k, 0, 1, 0); }, &med, &reps)) return -1;
      one_us = med * 1e3;
      snprintf(note, sizeof note, "reps=%d; one shared expert in the call; routed + separate one-expert call = %.1f us (%s)",
               reps, routed_us + one_us, shared_us < routed_us + one_us ? "fused faster" : "FUSED SLOWER");
      row.mode = "routed+shared";
      row.time_us = shared_us;
      row.note = note;
      bench_fill_row(row, wbytes + expert_bytes, sh_flops, env);
      rows_out.push_back(row);
      snprintf(note, sizeof note, "reps=%d; the shared expert alone as a separate call (T rows on 1 expert)", reps);
      row.mode = "one-expert";
      row.time_us = one_us;
      row.note = note;
      bench_fill_row(row, expert_bytes, 2.0 * T * (2.0 * I * H + (double)H * I), env);
      rows_out.push_back(row);
      if (timed("routed-invariant", [&](int k) { return variant(k, 0, 0, 1); }, &med, &reps)) return -1;
      snprintf(note, sizeof note, "reps=%d; batch_invariant=1: %+.1f%% vs routed", reps,
               100.0 * (med * 1e3 - routed_us) / routed_us);
      row.mode = "routed-invariant";
      row.time_us = med * 1e3;
      row.note = note;
      bench_fill_row(row, wbytes, flops, env);
      rows_out.push_back(row);
    }

    /* ---- cuBLASLt peer ---- */
    if (!opt.peer) continue;
    row.mode = "cublaslt-peer";
    /* the rows per expert of the device routing, from fp8moe's front, which the peer runs */
    const fp8moe_workspace_layout L = fp8moe_workspace_layout_for(T, E, K, H, I);
    std::vector<int> dev_off(E_loc + 1);
    if (fp8moe::detail::moe_front<E, K, H>(&a, reinterpret_cast<char *>(d_ws), L, s, 0, false) != FP8MOE_OK)
      return -1;
    BENCH_CUDA(cudaMemcpyAsync(dev_off.data(), d_ws + L.expert_offset, (E_loc + 1) * 4, cudaMemcpyDeviceToHost, s));
    BENCH_CUDA(cudaStreamSynchronize(s));
    const int total_rows = dev_off[E_loc];
    std::vector<int> sb1(E_loc), sb2(E_loc), act_e;
    for (int e = 0; e < E_loc; e++)
      if (dev_off[e + 1] > dev_off[e]) act_e.push_back(e);

    /* The plan: one descriptor per (set, expert, GEMM), algorithms from the
     * heuristic. If cuBLASLt offers no algorithm for an expert's exact row
     * count, the counts are rounded up to a multiple of `pad`: each expert's
     * GEMM then also computes up to pad-1 rows past its own, which belong to
     * the next experts (whose GEMMs run later on the stream and overwrite
     * them) or fall in the buffers' slack; their scales are the next rows' or
     * zero. GEMM1's output is fp32 where cuBLASLt offers it, else bf16. */
    peer_plan P;
    std::string why, tried;
    cudaDataType_t g1_type = CUDA_R_32F;
    int pad = 1;
    uint8_t *ws_xperm = d_ws + L.x_perm;
    auto layout = [&](cudaDataType_t t, uint64_t r, uint64_t c, int64_t ld) -> cublasLtMatrixLayout_t {
      cublasLtMatrixLayout_t l = NULL;
      if (cublasLtMatrixLayoutCreate(&l, t, r, c, ld) != CUBLAS_STATUS_SUCCESS) return NULL;
      P.layouts.push_back(l);
      return l;
    };
    /* builds P for (pad, g1_type); returns why it cannot, or "" */
    auto build = [&]() -> std::string {
      P.g1.assign(p.sets, {});
      P.g2.assign(p.sets, {});
      int o1 = 0, o2 = 0;
      for (int e = 0; e < E_loc; e++) {
        const int c = peer_ld(dev_off[e + 1] - dev_off[e], pad);
        sb1[e] = o1, sb2[e] = o2;
        o1 += HB * peer_ld(c, 4); /* each block starts 16-byte aligned */
        o2 += IB * peer_ld(c, 4);
      }
      cublasLtMatrixLayout_t a1 = layout(CUDA_R_8F_E4M3, H, 2 * I, H), a2 = layout(CUDA_R_8F_E4M3, I, H, I);
      if (!a1 || !a2) return "cublasLtMatrixLayoutCreate failed";
      for (int e : act_e) {
        const int o = dev_off[e], n = peer_ld(dev_off[e + 1] - o, pad);
        cublasLtMatrixLayout_t b1 = layout(CUDA_R_8F_E4M3, H, n, H), d1 = layout(g1_type, 2 * I, n, 2 * I);
        cublasLtMatrixLayout_t b2 = layout(CUDA_R_8F_E4M3, I, n, I), d2 = layout(CUDA_R_16BF, H, n, H);
        if (!b1 || !d1 || !b2 || !d2) return "cublasLtMatrixLayoutCreate failed";
        for (int k = 0; k < p.sets; k++) {
          const weight_set &w = W[k];
          peer_call c1, c2;
          c1.a = a1, c1.b = b1, c1.d = d1;
          c1.A = w.w1 + (size_t)e * w1_n;
          c1.B = ws_xperm + (size_t)o * H;
          c1.D = reinterpret_cast<uint8_t *>(p_g1) + (size_t)o * 2 * I * (g1_type == CUDA_R_32F ? 4 : 2);
          c2.a = a2, c2.b = b2, c2.d = d2;
          c2.A = w.w2 + (size_t)e * w2_n;
          c2.B = p_act + (size_t)o * I;
          c2.D = p_y + (size_t)o * H;
          const float *s1a = w.w1s_lt + (size_t)e * (2 * I / 128) * L4_1, *s1b = p_xs + sb1[e];
          const float *s2a = w.w2s_lt + (size_t)e * HB * L4_2, *s2b = p_as + sb2[e];
          cublasStatus_t d1s = peer_desc(&c1.desc, s1a, s1b);
          if (d1s == CUBLAS_STATUS_SUCCESS) P.descs.push_back(c1.desc);
          cublasStatus_t d2s = peer_desc(&c2.desc, s2a, s2b);
          if (d2s == CUBLAS_STATUS_SUCCESS) P.descs.push_back(c2.desc);
          if (d1s != CUBLAS_STATUS_SUCCESS || d2s != CUBLAS_STATUS_SUCCESS)
            return "cublasLtMatmulDescCreate/SetAttribute failed (block-scale modes unknown to this cuBLASLt?)";
          if (k == 0) {
            int f1 = 0, f2 = 0;
            cublasStatus_t st1 = peer_algo(lt, c1, lt_ws_bytes, &f1);
            char b[200];
            if (st1 != CUBLAS_STATUS_SUCCESS || !f1) {
              snprintf(b, sizeof b, "GEMM1 m=%d n=%d k=%d %s-out: no algorithm (status %d)", 2 * I, n, H,
                       g1_type == CUDA_R_32F ? "fp32" : "bf16", (int)st1);
              return b;
            }
            cublasStatus_t st2 = peer_algo(lt, c2, lt_ws_bytes, &f2);
            if (st2 != CUBLAS_STATUS_SUCCESS || !f2) {
              snprintf(b, sizeof b, "GEMM2 m=%d n=%d k=%d bf16-out: no algorithm (status %d)", H, n, I, (int)st2);
              return b;
            }
          } else { /* same shapes and alignments as set 0 */
            c1.algo = P.g1[0][P.g1[k].size()].algo;
            c2.algo = P.g2[0][P.g2[k].size()].algo;
          }
          P.g1[k].push_back(c1);
          P.g2[k].push_back(c2);
        }
      }
      return "";
    };
    static const int pads[] = {1, 4, 8, 16, 32, 64, 128};
    bool planned = false;
    for (int pi = 0; pi < (int)(sizeof pads / sizeof pads[0]) && !planned; pi++) {
      for (int attempt = 0; attempt < 2 && !planned; attempt++) {
        pad = pads[pi];
        g1_type = attempt == 0 ? CUDA_R_32F : CUDA_R_16BF;
        why = build();
        if (why.empty()) {
          planned = true;
        } else {
          fprintf(stderr, "%s cublaslt-peer: rows padded to %d: %s\n", tag, pad, why.c_str());
          if (why.find("GEMM1") == std::string::npos) break; /* GEMM1's output type cannot help */
        }
      }
    }
    if (!planned) {
      fprintf(stderr, "%s cublaslt-peer: unsupported on this card / cuBLASLt\n", tag);
      row.time_us = NAN;
      row.note = "unsupported: no cuBLASLt block-scaled algorithm with rows padded to 1..128; last: " + why;
      bench_fill_row(row, wbytes, flops, env);
      rows_out.push_back(row);
      continue;
    }
    BENCH_CUDA(cudaMemcpyAsync(p_off, dev_off.data(), (E_loc + 1) * 4, cudaMemcpyHostToDevice, s));
    BENCH_CUDA(cudaMemcpyAsync(p_sb1, sb1.data(), E_loc * 4, cudaMemcpyHostToDevice, s));
    BENCH_CUDA(cudaMemcpyAsync(p_sb2, sb2.data(), E_loc * 4, cudaMemcpyHostToDevice, s));

    /* one peer run: fp8moe's front, cuBLASLt GEMMs, the SwiGLU kernel, fp8moe's combine */
    const float one = 1.0f, zero = 0.0f;
    auto peer_run = [&](int k) -> int {
      using namespace fp8moe::detail;
      char *ws = reinterpret_cast<char *>(d_ws);
      int *slot_row = reinterpret_cast<int *>(ws + L.slot_row);
      float *slot_weight = reinterpret_cast<float *>(ws + L.slot_weight);
      float *x_perm_scale = reinterpret_cast<float *>(ws + L.x_perm_scale);
      /* fp8moe's own front: routing, decode, scan, permute (no PDL, like the rest of the peer) */
      if (moe_front<E, K, H>(&a, ws, L, s, 0, false) != FP8MOE_OK) return -1;
      if (total_rows > 0) {
        long long n = (long long)total_rows * HB;
        peer_regroup_scales_kernel<<<(unsigned)((n + 255) / 256), 256, 0, s>>>(
            x_perm_scale, (long long)L.scale_ld, total_rows, HB, p_off, p_sb1, E_loc, pad, p_xs);
        BENCH_CUDA(cudaGetLastError());
        for (const peer_call &c : P.g1[k % p.sets])
          BENCH_LT(cublasLtMatmul(lt, c.desc, &one, c.A, c.a, c.B, c.b, &zero, c.D, c.d, c.D, c.d, &c.algo, p_ltws,
                                  lt_ws_bytes, s));
        long long warps = (long long)total_rows * IB;
        unsigned blocks = (unsigned)((warps * 32 + 255) / 256);
        if (g1_type == CUDA_R_32F)
          peer_swiglu_quant_kernel<I, false><<<blocks, 256, 0, s>>>(p_g1, total_rows, p_off, p_sb2, E_loc, pad, p_act,
                                                                    p_as);
        else
          peer_swiglu_quant_kernel<I, true><<<blocks, 256, 0, s>>>(p_g1, total_rows, p_off, p_sb2, E_loc, pad, p_act,
                                                                   p_as);
        BENCH_CUDA(cudaGetLastError());
        for (const peer_call &c : P.g2[k % p.sets])
          BENCH_LT(cublasLtMatmul(lt, c.desc, &one, c.A, c.a, c.B, c.b, &zero, c.D, c.d, c.D, c.d, &c.algo, p_ltws,
                                  lt_ws_bytes, s));
      }
      combine_params cp;
      cp.num_tokens = T;
      cp.slot_row = slot_row;
      cp.slot_weight = slot_weight;
      cp.y = p_y;
      cp.out = d_out_peer;
      if (combine_launch<K, H>(cp, s) != FP8MOE_OK) return -1;
      return 0;
    };

    if (timed("cublaslt-peer", peer_run, &med, &reps, false)) {
      /* a failed cublasLtMatmul says the card or this cuBLASLt cannot run it */
      cudaError_t ce = cudaStreamSynchronize(s);
      if (ce != cudaSuccess) return -1;
      row.time_us = NAN;
      row.note = "unsupported: cublasLtMatmul failed (see stderr)";
      bench_fill_row(row, wbytes, flops, env);
      rows_out.push_back(row);
      continue;
    }
    if (peer_run(0)) return -1;
    h_tmp.resize(outn);
    BENCH_CUDA(cudaMemcpyAsync(h_tmp.data(), d_out_peer, outn * 2, cudaMemcpyDeviceToHost, s));
    BENCH_CUDA(cudaStreamSynchronize(s));
    const double pr = rel_l2_bf16(h_tmp, h_ref, outn);
    const bool ok = pr <= 1e-2;
    fprintf(stderr, "%s cublaslt-peer vs fp8moe nonrouted output: rel L2 = %.3e (%s)\n", tag, pr,
            ok ? "same layer" : "MISMATCH");
    snprintf(note, sizeof note, "reps=%d sets=%d; relL2 vs fp8moe=%.2e %s; host-known counts; rows padded to %d; GEMM1 out %s",
             reps, p.sets, pr, ok ? "ok" : "MISMATCH", pad, g1_type == CUDA_R_32F ? "fp32" : "bf16");
    row.time_us = med * 1e3;
    row.note = note;
    bench_fill_row(row, wbytes, flops, env);
    rows_out.push_back(row);
  }
  if (lt) cublasLtDestroy(lt);
  cudaStreamDestroy(s);
  return 0;
}

} // namespace bench

/* Instantiates fp8moe for one shape and its harness entry point,
 * `int bench_shape_<name>(cfg, opt, env, rows)`. */
#define BENCH_SHAPE(name, NE, NK, NH, NI)                                                                 \
  FP8MOE_DEFINE(bench_##name, NE, NK, NH, NI);                                                            \
  int bench_shape_##name(const bench_config &cfg, const bench_options &opt, const bench_env &env,        \
                         std::vector<bench_row> &rows) {                                                 \
    static const bench::shape_api api = {bench_##name##_workspace_size, bench_##name##_workspace_size_shared, \
                                         bench_##name##_run, bench_##name##_run_routed};                  \
    if (cfg.E != NE || cfg.K != NK || cfg.H != NH || cfg.I != NI) return -1;                              \
    return bench::bench_shape<NE, NK, NH, NI>(cfg, opt, env, rows, api);                                  \
  }                                                                                                        \
  static_assert(true, "")

#endif /* FP8MOE_BENCH_LAYER_CUH */
