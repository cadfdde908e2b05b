/* tests/gpu_test_routing.cu - routing.cuh against the CPU reference.
 *
 * Every method, fp32 and bf16 logits, with and without bias (fp32
 * and bf16), DeepSeekV3 groupings that take the kernel's fast path (groups of
 * whole power-of-two lane runs) and its general path, E from 1 to 512 with
 * partial warps and scalar loads (E = 72, 160), T in {1, 7, 1000}.
 *  - Random logits, tie-free as SPEC 6 asks: fp32 logits lie on a 2^-12 grid
 *    (distinct values differ by far more than fp32 rounding; equal ones are
 *    exact ties, which the rule decides), bf16 logits are bf16. The GPU must
 *    pick the reference's experts (as a set, then in order) and weights within
 *    1e-5 relative (1e-7 absolute for tiny ones).
 *  - Hostile logits (NaN, +-inf, all equal, all negative, fewer than K
 *    finite, -200 that underflows the softmax): no fault, ids unique and in
 *    range, the reference's ids exactly (ties included) and its weights.
 * Outputs are poisoned before every run, and guard words past the end must
 * stay poisoned. Seeds are printed; FP8MOE_SEED=<n> replays one.
 * (The quantizer's tests are in gpu_test_quantize.cu.)
 */
#include "gpu_util.h"

#include <fp8moe/reference.h>
#include <fp8moe/detail/routing.cuh>

#include <algorithm>
#include <stdio.h>
#include <vector>

using fp8moe::detail::routing_launch;
using fp8moe::detail::routing_params;

TestSuite(gpu_routing, .init = fp8moe_test_require_gpu);

namespace {

const uint32_t ID_POISON = 0xDEADBEEFu;     /* negative as int32: never an id */
const uint32_t W_POISON = 0x7FC0FFEEu;      /* a NaN payload: the kernel never writes NaN weights */
const int GUARD = 32;                       /* poisoned words past every output */

const char *method_name(int m) {
  static const char *const n[] = {"Default", "Renormalize", "DeepSeekV3", "Llama4", "RenormalizeNaive", "TopK"};
  return m >= 0 && m < 6 ? n[m] : "?";
}

/* ---- routing data --------------------------------------------------------- */

/* Tie-free random logit: N(0, 2) on a 2^-12 grid. */
float grid_logit(fp8moe_rng *r) { return roundf(rng_normal(r) * 2.0f * 4096.0f) / 4096.0f; }

enum { HOSTILE_MODES = 9 };

/* One token of hostile logits (mode picks the pattern); K for "fewer than K finite". */
void hostile_row(fp8moe_rng *r, int mode, int E, int K, float *l) {
  static const float mix[] = {NAN, INFINITY, -INFINITY, -200.0f, -3.0f, -1.0f, 0.0f, 2.5f};
  static const float eq[] = {-1000.0f, -3.0f, 0.0f, 7.0f};
  const float c = eq[rng_next(r) % 4];
  int nfin = (int)(rng_next(r) % (uint64_t)K); /* < K finite values */
  for (int e = 0; e < E; e++) {
    switch (mode) {
    case 0: l[e] = NAN; break;
    case 1: l[e] = -INFINITY; break;
    case 2: l[e] = c; break;
    case 3: l[e] = mix[rng_next(r) % 8]; break;
    case 4: l[e] = -(1.0f + roundf(rng_uniform(r) * 59.0f * 256.0f) / 256.0f); break; /* all negative */
    case 5: l[e] = (rng_next(r) & 1) ? NAN : -INFINITY; break;                       /* finite ones below */
    case 6: l[e] = (rng_next(r) % 8 == 0) ? INFINITY : grid_logit(r); break;
    case 7: l[e] = INFINITY; break;
    default: l[e] = (rng_next(r) % 4 == 0) ? NAN : -200.0f + roundf(rng_uniform(r) * 4.0f); break;
    }
  }
  if (mode == 5)
    for (int i = 0; i < nfin; i++) l[rng_next(r) % (uint64_t)E] = grid_logit(r);
}

/* A hostile bias vector. mode 0: mostly small discrete values, some NaN/inf;
 * 1: mostly -inf/NaN, fewer than K finite, so DeepSeekV3 must fill slots with
 * -inf experts, from masked groups too; 2: all equal. */
void hostile_bias(fp8moe_rng *r, int mode, int E, int K, float *b) {
  static const float fin[] = {0.0f, 0.25f, -1.0f};
  static const float spec[] = {NAN, INFINITY, -INFINITY};
  for (int e = 0; e < E; e++) {
    if (mode == 0) b[e] = rng_uniform(r) < 0.9f ? fin[rng_next(r) % 3] : spec[rng_next(r) % 3];
    else if (mode == 1) b[e] = (rng_next(r) & 1) ? NAN : -INFINITY;
    else b[e] = 0.5f;
  }
  if (mode == 1)
    for (int i = (int)(rng_next(r) % (uint64_t)K); i > 0; i--) b[rng_next(r) % (uint64_t)E] = fin[rng_next(r) % 3];
}

struct route_case {
  int method;
  fp8moe_dtype ldt;
  int bias;            /* 0 none, 1 fp32, 2 bf16 */
  int n_group, topk_group;
  float scale;
  int T;
  int hostile;
  int misalign;        /* logits pointer one element past a 16-byte boundary */
  int bias_mode;       /* hostile_bias pattern */
};

void describe(char *buf, size_t n, int E, int K, const route_case &c) {
  snprintf(buf, n, "E=%d K=%d %s logits=%s bias=%s(%d) n_group=%d topk_group=%d scale=%g T=%d%s%s", E, K,
           method_name(c.method), c.ldt == FP8MOE_DTYPE_BF16 ? "bf16" : "fp32",
           c.bias == 0 ? "none" : c.bias == 1 ? "fp32" : "bf16", c.hostile ? c.bias_mode : -1, c.n_group, c.topk_group, (double)c.scale, c.T,
           c.hostile ? " hostile" : "", c.misalign ? " misaligned-logits" : "");
}

bool weight_close(float g, float r) {
  if (r != r) return g != g;
  if (!isfinite(r)) return g == r;
  return fabsf(g - r) <= fmaxf(1e-5f * fabsf(r), 1e-7f);
}

/* Build the case's data, run reference and kernel, compare everything. */
template <int E, int K>
void run_route_case(fp8moe_rng *rng, const route_case &c) {
  char what[256];
  describe(what, sizeof what, E, K, c);
  const int T = c.T;
  const size_t TE = (size_t)T * E, TK = (size_t)T * K;

  /* host data: ref_* is what the reference sees (bf16 widened exactly) */
  std::vector<float> ref_l(TE), ref_b(E);
  std::vector<uint16_t> l16(TE), b16(E);
  for (int t = 0; t < T; t++) {
    float *row = &ref_l[(size_t)t * E];
    if (c.hostile) /* T = 1: a random pattern; more tokens: every pattern in turn */
      hostile_row(rng, T == 1 ? (int)(rng_next(rng) % HOSTILE_MODES) : t % HOSTILE_MODES, E, K, row);
    else
      for (int e = 0; e < E; e++) row[e] = grid_logit(rng);
  }
  if (c.hostile)
    hostile_bias(rng, c.bias_mode, E, K, ref_b.data());
  else
    for (int e = 0; e < E; e++) ref_b[e] = (rng_uniform(rng) - 0.5f) * 0.5f;
  if (c.ldt == FP8MOE_DTYPE_BF16)
    for (size_t i = 0; i < TE; i++) {
      l16[i] = fp8moe_bf16_from_float(ref_l[i]);
      ref_l[i] = fp8moe_bf16_to_float(l16[i]);
    }
  if (c.bias == 2)
    for (int e = 0; e < E; e++) {
      b16[e] = fp8moe_bf16_from_float(ref_b[e]);
      ref_b[e] = fp8moe_bf16_to_float(b16[e]);
    }

  std::vector<int32_t> ref_ids(TK);
  std::vector<float> ref_w(TK);
  fp8moe_ref_route(c.method, T, E, K, ref_l.data(), c.bias ? ref_b.data() : NULL, c.n_group, c.topk_group, c.scale,
                   ref_ids.data(), ref_w.data());

  /* device buffers; the logits may start one element past a 16-byte boundary */
  const size_t esz = c.ldt == FP8MOE_DTYPE_BF16 ? 2 : 4;
  char *d_l_base = dev_alloc<char>((TE + 16) * esz);
  char *d_l = d_l_base + (c.misalign ? esz : 0);
  if (TE)
    CUDA_OK(cudaMemcpy(d_l, c.ldt == FP8MOE_DTYPE_BF16 ? (const void *)l16.data() : (const void *)ref_l.data(),
                       TE * esz, cudaMemcpyHostToDevice));
  void *d_b = NULL;
  if (c.bias == 1) d_b = dev_upload(ref_b.data(), (size_t)E);
  if (c.bias == 2) d_b = dev_upload(b16.data(), (size_t)E);

  std::vector<uint32_t> ids_p(TK + GUARD, ID_POISON), w_p(TK + GUARD, W_POISON);
  uint32_t *d_ids = dev_upload(ids_p.data(), ids_p.size());
  uint32_t *d_w = dev_upload(w_p.data(), w_p.size());

  routing_params p;
  p.logits = d_l;
  p.logits_dtype = c.ldt;
  p.bias = d_b;
  p.bias_dtype = c.bias == 2 ? FP8MOE_DTYPE_BF16 : FP8MOE_DTYPE_FP32;
  p.method = c.method;
  p.n_group = c.n_group;
  p.topk_group = c.topk_group;
  p.routed_scaling_factor = c.scale;
  p.num_tokens = T;
  p.ids_out = (int32_t *)d_ids;
  p.weights_out = (float *)d_w;
  fp8moe_status st = routing_launch<E, K>(p, 0);
  cr_assert_eq(st, FP8MOE_OK, "%s: routing_launch returned %s", what, fp8moe_status_string(st));
  CUDA_OK(cudaDeviceSynchronize());

  std::vector<uint32_t> g_ids(TK + GUARD), g_w(TK + GUARD);
  dev_download(g_ids.data(), d_ids, g_ids.size());
  dev_download(g_w.data(), d_w, g_w.size());
  CUDA_OK(cudaFree(d_l_base));
  if (d_b) CUDA_OK(cudaFree(d_b));
  CUDA_OK(cudaFree(d_ids));
  CUDA_OK(cudaFree(d_w));

  for (int i = 0; i < GUARD; i++) {
    cr_assert_eq(g_ids[TK + i], ID_POISON, "%s: ids written past [T, K] at +%d", what, i);
    cr_assert_eq(g_w[TK + i], W_POISON, "%s: weights written past [T, K] at +%d", what, i);
  }
  for (int t = 0; t < T; t++) {
    const int32_t *gi = (const int32_t *)&g_ids[(size_t)t * K];
    const int32_t *ri = &ref_ids[(size_t)t * K];
    const uint32_t *gw = &g_w[(size_t)t * K];
    const float *rw = &ref_w[(size_t)t * K];
    char got[512] = "", want[512] = "";
    for (int k = 0; k < K; k++) {
      size_t a = strlen(got), b = strlen(want);
      snprintf(got + a, sizeof got - a, " %d:%.9g", gi[k], (double)fp8moe__bits_float(gw[k]));
      snprintf(want + b, sizeof want - b, " %d:%.9g", ri[k], (double)rw[k]);
    }
    for (int k = 0; k < K; k++) {
      cr_assert(gi[k] != (int32_t)ID_POISON && gw[k] != W_POISON, "%s: token %d slot %d not written", what, t, k);
      cr_assert(gi[k] >= 0 && gi[k] < E, "%s: token %d slot %d id %d out of range", what, t, k, gi[k]);
      for (int j = 0; j < k; j++) cr_assert(gi[j] != gi[k], "%s: token %d id %d chosen twice", what, t, gi[k]);
    }
    std::vector<int32_t> gs(gi, gi + K), rs(ri, ri + K);
    std::sort(gs.begin(), gs.end());
    std::sort(rs.begin(), rs.end());
    cr_assert(gs == rs, "%s: token %d selects another expert set\n  gpu:%s\n  ref:%s", what, t, got, want);
    for (int k = 0; k < K; k++) {
      cr_assert_eq(gi[k], ri[k], "%s: token %d slot %d: order differs\n  gpu:%s\n  ref:%s", what, t, k, got, want);
      cr_assert(weight_close(fp8moe__bits_float(gw[k]), rw[k]), "%s: token %d slot %d weight %.9g, reference %.9g\n  gpu:%s\n  ref:%s",
                what, t, k, (double)fp8moe__bits_float(gw[k]), (double)rw[k], got, want);
    }
  }
}

struct group_cfg {
  int n_group, topk_group;
};

/* Every method x logits dtype x bias x T for one (E, K); groups: DeepSeekV3 groupings to try. */
template <int E, int K>
void route_matrix(const char *name, int hostile, const group_cfg *groups, int ngroups) {
  uint64_t seed = fp8moe_test_announce_seed(name);
  fp8moe_rng rng = {seed};
  static const int Ts[] = {1, 7, 1000};
  static const float scales[] = {0.0f, 2.5f, 2.827f};
  int cases = 0;
  for (int m = 0; m < FP8MOE__ROUTING_COUNT; m++) {
    if (m == FP8MOE_ROUTING_LLAMA4 && K != 1) continue;
    const bool ds = m == FP8MOE_ROUTING_DEEPSEEK_V3;
    for (int d = 0; d < 2; d++) {
      for (int bias = 0; bias < (ds ? 3 : 2); bias++) { /* non-DeepSeek methods must ignore a bias */
        for (int g = 0; g < (ds ? ngroups : 1); g++) {
          for (int ti = 0; ti < 3; ti++) {
            route_case c;
            c.method = m;
            c.ldt = d ? FP8MOE_DTYPE_BF16 : FP8MOE_DTYPE_FP32;
            c.bias = bias;
            c.n_group = ds ? groups[g].n_group : 0;
            c.topk_group = ds ? groups[g].topk_group : 0;
            c.scale = ds ? scales[(g + ti) % 3] : 0.0f;
            c.T = Ts[ti];
            c.hostile = hostile;
            c.misalign = (ti == 1 && E > 1); /* T = 7 runs from a misaligned logits pointer */
            c.bias_mode = cases % 3;
            cr_assert_eq(fp8moe_validate_routing(c.method, E, K, c.n_group, c.topk_group, c.scale), FP8MOE_OK,
                         "test bug: invalid case E=%d K=%d method %d groups %d/%d", E, K, m, c.n_group,
                         c.topk_group);
            run_route_case<E, K>(&rng, c);
            cases++;
          }
        }
      }
    }
  }
  fprintf(stderr, "[%s] %d cases passed\n", name, cases);
}

const group_cfg no_groups[] = {{0, 0}, {1, 1}};

} // namespace

/* ---- routing: random, tie-free ---------------------------------------------- */

Test(gpu_routing, e1_k1) { route_matrix<1, 1>("E=1 K=1", 0, no_groups, 2); }

Test(gpu_routing, e8_k2_mixtral) {
  const group_cfg g[] = {{0, 0}, {4, 2}, {8, 5}};
  route_matrix<8, 2>("E=8 K=2", 0, g, 3);
}

Test(gpu_routing, e72_k4_partial_warp) { /* N = 3, lanes 24..31 empty; groups of 12 (fast) and 18 (general) */
  const group_cfg g[] = {{1, 1}, {6, 3}, {4, 2}};
  route_matrix<72, 4>("E=72 K=4", 0, g, 3);
}

Test(gpu_routing, e128_k1_llama4) {
  const group_cfg g[] = {{0, 0}, {8, 4}};
  route_matrix<128, 1>("E=128 K=1", 0, g, 2);
}

Test(gpu_routing, e128_k8_qwen) {
  const group_cfg g[] = {{0, 0}, {8, 4}, {32, 2}};
  route_matrix<128, 8>("E=128 K=8", 0, g, 3);
}

Test(gpu_routing, e160_k6_scalar_loads) { /* N = 5: no vector width divides it */
  const group_cfg g[] = {{0, 0}, {8, 3}, {5, 2}};
  route_matrix<160, 6>("E=160 K=6", 0, g, 3);
}

Test(gpu_routing, e256_k8_deepseek) {
  const group_cfg g[] = {{8, 4}, {1, 1}, {16, 3}, {64, 8}};
  route_matrix<256, 8>("E=256 K=8", 0, g, 4);
}

Test(gpu_routing, e384_k8_kimi) {
  const group_cfg g[] = {{1, 1}, {3, 2}, {8, 4}};
  route_matrix<384, 8>("E=384 K=8", 0, g, 3);
}

Test(gpu_routing, e512_k16) {
  const group_cfg g[] = {{0, 0}, {2, 1}, {64, 8}, {512, 16}};
  route_matrix<512, 16>("E=512 K=16", 0, g, 4);
}

/* ---- routing: hostile logits ---------------------------------------------- */

Test(gpu_routing, hostile_e8_k2) {
  const group_cfg g[] = {{0, 0}, {4, 2}};
  route_matrix<8, 2>("hostile E=8 K=2", 1, g, 2);
}

Test(gpu_routing, hostile_e72_k4) {
  const group_cfg g[] = {{6, 3}, {4, 2}};
  route_matrix<72, 4>("hostile E=72 K=4", 1, g, 2);
}

Test(gpu_routing, hostile_e128_k1) {
  const group_cfg g[] = {{8, 4}};
  route_matrix<128, 1>("hostile E=128 K=1", 1, g, 1);
}

Test(gpu_routing, hostile_e256_k8) {
  const group_cfg g[] = {{8, 4}, {0, 0}, {64, 8}};
  route_matrix<256, 8>("hostile E=256 K=8", 1, g, 3);
}

Test(gpu_routing, hostile_e384_k8) {
  const group_cfg g[] = {{1, 1}, {3, 2}};
  route_matrix<384, 8>("hostile E=384 K=8", 1, g, 2);
}

Test(gpu_routing, hostile_e512_k16) {
  const group_cfg g[] = {{2, 1}, {64, 8}};
  route_matrix<512, 16>("hostile E=512 K=16", 1, g, 2);
}

/* ---- routing: launch edge cases --------------------------------------------- */

Test(gpu_routing, launch_edges) {
  uint32_t *d_ids = dev_alloc<uint32_t>(64), *d_w = dev_alloc<uint32_t>(64);
  float *d_l = dev_alloc<float>(8 * 8);
  std::vector<uint32_t> ids_p(64, ID_POISON), w_p(64, W_POISON), back(64);
  CUDA_OK(cudaMemcpy(d_ids, ids_p.data(), 64 * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(d_w, w_p.data(), 64 * 4, cudaMemcpyHostToDevice));
  routing_params p; /* every field zero / NULL (the defaults) */
  p.logits = d_l;
  p.logits_dtype = FP8MOE_DTYPE_FP32;
  p.method = FP8MOE_ROUTING_RENORMALIZE;
  p.ids_out = (int32_t *)d_ids;
  p.weights_out = (float *)d_w;

  p.num_tokens = 0; /* T = 0: OK, nothing written */
  cr_assert_eq((routing_launch<8, 2>(p, 0)), FP8MOE_OK);
  p.num_tokens = 4;
  p.method = FP8MOE_ROUTING_LLAMA4; /* needs K = 1 */
  cr_assert_eq((routing_launch<8, 2>(p, 0)), FP8MOE_ERROR_INVALID_ROUTING_PARAMS);
  p.method = 42;
  cr_assert_eq((routing_launch<8, 2>(p, 0)), FP8MOE_ERROR_INVALID_ROUTING_METHOD);
  p.method = FP8MOE_ROUTING_RENORMALIZE;
  p.logits_dtype = (fp8moe_dtype)7;
  cr_assert_eq((routing_launch<8, 2>(p, 0)), FP8MOE_ERROR_INVALID_DTYPE);
  CUDA_OK(cudaDeviceSynchronize());
  CUDA_OK(cudaGetLastError());
  dev_download(back.data(), d_ids, 64);
  cr_assert(back == ids_p, "ids written by a run that must launch nothing");
  dev_download(back.data(), d_w, 64);
  cr_assert(back == w_p, "weights written by a run that must launch nothing");
  CUDA_OK(cudaFree(d_ids));
  CUDA_OK(cudaFree(d_w));
  CUDA_OK(cudaFree(d_l));
}
