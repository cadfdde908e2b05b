/* tests/moe_harness.cuh - what the whole-layer GPU tests share: random
 * weights and problems made on the device (copied to the host for the
 * reference), the routed input in every form, a run with poisoned output,
 * and the check against the CPU reference on sampled tokens.
 * Include after <fp8moe/fp8moe.cuh>, <fp8moe/reference.h> and gpu_util.h. */
#ifndef FP8MOE_TESTS_MOE_HARNESS_CUH
#define FP8MOE_TESTS_MOE_HARNESS_CUH

#include <stdio.h>
#include <vector>

typedef fp8moe_status (*run_fn)(const fp8moe_args *, void *, size_t, fp8moe_stream);

struct instance {
  const char *name;
  fp8moe_config c;
  size_t (*workspace_size)(int);
  run_fn run, run_routed;
  int method, n_group, topk_group;
  float scale;
  int bias;
};

/* ---- random data on the device (hash of index and seed) ---- */

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* fp8 e4m3 codes with exponent field 3..10 (|v| in [2^-4, 15]) and random
 * sign and mantissa: no NaN, roughly normal-scaled values. */
__global__ void fill_fp8(uint8_t *p, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    uint64_t r = mix64(seed + i * 0x9e3779b97f4a7c15ull);
    uint32_t e = 3 + (uint32_t)(r & 7), m = (uint32_t)(r >> 3) & 7, s = (uint32_t)(r >> 6) & 1;
    p[i] = (uint8_t)((s << 7) | (e << 3) | m);
  }
}

/* lo * 2^(range * u), u uniform in [0,1): positive scales over a range of magnitudes */
__global__ void fill_scale(float *p, size_t n, uint64_t seed, float lo, float range) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    uint64_t r = mix64(seed + i * 0x9e3779b97f4a7c15ull);
    float u = (float)(r >> 40) * (1.0f / 16777216.0f);
    p[i] = lo * exp2f(range * u);
  }
}

struct weights {
  fp8moe_config c;
  int e_loc;
  uint8_t *w1, *w2;
  float *w1s, *w2s;
  std::vector<uint8_t> h_w1, h_w2;
  std::vector<float> h_w1s, h_w2s;
};

static size_t w1_elems(const fp8moe_config &c, int el) { return (size_t)el * 2 * c.intermediate * c.hidden; }
static size_t w2_elems(const fp8moe_config &c, int el) { return (size_t)el * c.hidden * c.intermediate; }
static size_t w1s_elems(const fp8moe_config &c, int el) { return (size_t)el * (2 * c.intermediate / 128) * (c.hidden / 128); }
static size_t w2s_elems(const fp8moe_config &c, int el) { return (size_t)el * (c.hidden / 128) * (c.intermediate / 128); }

static void make_weights(weights *w, const fp8moe_config &c, int e_loc, fp8moe_rng *rng) {
  w->c = c;
  w->e_loc = e_loc;
  size_t n1 = w1_elems(c, e_loc), n2 = w2_elems(c, e_loc), s1 = w1s_elems(c, e_loc), s2 = w2s_elems(c, e_loc);
  w->w1 = dev_alloc<uint8_t>(n1);
  w->w2 = dev_alloc<uint8_t>(n2);
  w->w1s = dev_alloc<float>(s1);
  w->w2s = dev_alloc<float>(s2);
  fill_fp8<<<1024, 256>>>(w->w1, n1, rng_next(rng));
  fill_fp8<<<1024, 256>>>(w->w2, n2, rng_next(rng));
  /* |w| ~ 1 * scale; scales ~ 1/sqrt(K dim) keep activations O(1) */
  fill_scale<<<256, 256>>>(w->w1s, s1, rng_next(rng), 0.5f / sqrtf((float)c.hidden), 2.0f);
  fill_scale<<<256, 256>>>(w->w2s, s2, rng_next(rng), 0.5f / sqrtf((float)c.intermediate), 2.0f);
  CUDA_OK(cudaGetLastError());
  w->h_w1.resize(n1);
  w->h_w2.resize(n2);
  w->h_w1s.resize(s1);
  w->h_w2s.resize(s2);
  dev_download(w->h_w1.data(), w->w1, n1);
  dev_download(w->h_w2.data(), w->w2, n2);
  dev_download(w->h_w1s.data(), w->w1s, s1);
  dev_download(w->h_w2s.data(), w->w2s, s2);
}

static void free_weights(weights *w) {
  cudaFree(w->w1);
  cudaFree(w->w2);
  cudaFree(w->w1s);
  cudaFree(w->w2s);
}

/* ---- one problem instance: activations, routing inputs, output ---- */

struct problem {
  int T;
  uint8_t *x;
  float *xs;
  float *logits, *bias;
  int32_t *packed, *ids;
  float *wts;
  uint16_t *wts_bf16;
  uint16_t *out;
  int *invalid;
  void *ws;
  size_t ws_bytes;
  std::vector<uint8_t> h_x;
  std::vector<float> h_xs, h_logits, h_bias;
  std::vector<int32_t> h_ids;   /* the routed ids used (global) */
  std::vector<float> h_wts;     /* fp32 weights used */
};

/* Random distinct experts per token from [lo, lo + span) and positive weights. */
static void random_topk(fp8moe_rng *rng, int T, int K, int lo, int span, std::vector<int32_t> &ids,
                        std::vector<float> &w) {
  ids.resize((size_t)T * K);
  w.resize((size_t)T * K);
  for (int t = 0; t < T; t++)
    for (int k = 0; k < K; k++) {
      int e;
      bool dup;
      do {
        e = lo + (int)(rng_next(rng) % (uint64_t)span);
        dup = false;
        for (int j = 0; j < k; j++) dup |= ids[(size_t)t * K + j] == e;
      } while (dup);
      ids[(size_t)t * K + k] = e;
      w[(size_t)t * K + k] = 0.05f + rng_uniform(rng);
    }
}

static void make_problem(problem *p, const instance &in, int T, fp8moe_rng *rng) {
  const fp8moe_config &c = in.c;
  p->T = T;
  size_t nx = (size_t)T * c.hidden, nxs = (size_t)(c.hidden / 128) * T, nl = (size_t)T * c.num_experts;
  p->x = dev_alloc<uint8_t>(nx);
  p->xs = dev_alloc<float>(nxs);
  if (nx) fill_fp8<<<512, 256>>>(p->x, nx, rng_next(rng));
  if (nxs) fill_scale<<<64, 256>>>(p->xs, nxs, rng_next(rng), 0.25f, 2.0f);
  CUDA_OK(cudaGetLastError());
  p->h_x.resize(nx);
  p->h_xs.resize(nxs);
  dev_download(p->h_x.data(), p->x, nx);
  dev_download(p->h_xs.data(), p->xs, nxs);
  p->h_logits.resize(nl);
  for (size_t i = 0; i < nl; i++) p->h_logits[i] = rng_normal(rng) * 2.0f;
  p->h_bias.resize(c.num_experts);
  for (int e = 0; e < c.num_experts; e++) p->h_bias[e] = rng_normal(rng) * 0.1f;
  p->logits = dev_upload(p->h_logits.data(), nl);
  p->bias = dev_upload(p->h_bias.data(), (size_t)c.num_experts);
  size_t ns = (size_t)T * c.top_k;
  p->packed = dev_alloc<int32_t>(ns);
  p->ids = dev_alloc<int32_t>(ns);
  p->wts = dev_alloc<float>(ns);
  p->wts_bf16 = dev_alloc<uint16_t>(ns);
  p->out = dev_alloc<uint16_t>(nx);
  p->invalid = dev_alloc<int>(1);
  p->ws_bytes = in.workspace_size(T);
  p->ws = dev_alloc<char>(p->ws_bytes);
}

static void free_problem(problem *p) {
  cudaFree(p->x); cudaFree(p->xs); cudaFree(p->logits); cudaFree(p->bias); cudaFree(p->packed);
  cudaFree(p->ids); cudaFree(p->wts); cudaFree(p->wts_bf16); cudaFree(p->out); cudaFree(p->invalid);
  cudaFree(p->ws);
}

/* Upload routed ids/weights in every form: packed (bf16 weights), unpacked
 * fp32, unpacked bf16. p->h_wts becomes the fp32 weights. */
static void set_routing(problem *p, const instance &in, const std::vector<int32_t> &ids, const std::vector<float> &w) {
  size_t ns = (size_t)p->T * in.c.top_k;
  std::vector<int32_t> packed(ns);
  std::vector<uint16_t> wb(ns);
  for (size_t i = 0; i < ns; i++) {
    packed[i] = fp8moe_topk_pack(ids[i] & 0xffff, w[i]);
    wb[i] = fp8moe_bf16_from_float(w[i]);
  }
  p->h_ids = ids;
  p->h_wts = w;
  if (!ns) return;
  CUDA_OK(cudaMemcpy(p->packed, packed.data(), ns * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(p->ids, ids.data(), ns * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(p->wts, w.data(), ns * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(p->wts_bf16, wb.data(), ns * 2, cudaMemcpyHostToDevice));
}

enum form { PACKED, UNPACKED_FP32, UNPACKED_BF16, NONROUTED };

static fp8moe_args make_args(const problem *p, const instance &in, const weights *w, int offset, form f,
                             int enable_pdl = 0) {
  fp8moe_args a;
  memset(&a, 0, sizeof a);
  /* FP8MOE_TEST_PDL=0 or 1 overrides the test's choice (to compare the two
   * under a sanitizer) */
  const char *force_pdl = getenv("FP8MOE_TEST_PDL");
  a.enable_pdl = force_pdl && *force_pdl ? atoi(force_pdl) : enable_pdl;
  a.num_tokens = p->T;
  a.local_expert_offset = offset;
  a.local_num_experts = w->e_loc;
  a.hidden_states = p->x;
  a.hidden_states_scale = p->xs;
  a.w1 = w->w1;
  a.w1_scale = w->w1s;
  a.w2 = w->w2;
  a.w2_scale = w->w2s;
  a.output = p->out;
  a.invalid_id_count = p->invalid;
  if (f == PACKED) {
    a.topk_packed = p->packed;
  } else if (f == UNPACKED_FP32) {
    a.topk_ids = p->ids;
    a.topk_weights = p->wts;
    a.topk_weights_dtype = FP8MOE_DTYPE_FP32;
  } else if (f == UNPACKED_BF16) {
    a.topk_ids = p->ids;
    a.topk_weights = p->wts_bf16;
    a.topk_weights_dtype = FP8MOE_DTYPE_BF16;
  } else {
    a.routing_method = in.method;
    a.routing_logits = p->logits;
    a.logits_dtype = FP8MOE_DTYPE_FP32;
    a.routing_bias = in.bias ? p->bias : NULL;
    a.bias_dtype = FP8MOE_DTYPE_FP32;
    a.n_group = in.n_group;
    a.topk_group = in.topk_group;
    a.routed_scaling_factor = in.scale;
  }
  return a;
}

static void poison_output(problem *p, const instance &in) {
  size_t n = (size_t)p->T * in.c.hidden;
  std::vector<uint16_t> v(n, (uint16_t)FP8MOE_TEST_POISON_BF16);
  if (n) CUDA_OK(cudaMemcpy(p->out, v.data(), n * 2, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemset(p->invalid, 0, sizeof(int)));
}

static std::vector<uint16_t> run_layer(problem *p, const instance &in, const weights *w, int offset, form f,
                                       int enable_pdl = 0) {
  poison_output(p, in);
  fp8moe_args a = make_args(p, in, w, offset, f, enable_pdl);
  fp8moe_status s = f == NONROUTED ? in.run(&a, p->ws, p->ws_bytes, 0) : in.run_routed(&a, p->ws, p->ws_bytes, 0);
  cr_assert_eq(s, FP8MOE_OK, "%s T=%d form %d: %s", in.name, p->T, (int)f, fp8moe_status_string(s));
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<uint16_t> out((size_t)p->T * in.c.hidden);
  dev_download(out.data(), p->out, out.size());
  return out;
}

/* The tokens the reference checks: all when T <= 96, else 64 random ones
 * plus the first and the last. */
static std::vector<int> sample_tokens(fp8moe_rng *rng, int T) {
  std::vector<int> s;
  if (T <= 96) {
    for (int t = 0; t < T; t++) s.push_back(t);
    return s;
  }
  s.push_back(0);
  s.push_back(T - 1);
  while (s.size() < 66) s.push_back((int)(rng_next(rng) % (uint64_t)T));
  return s;
}

/* Check a GPU output against the reference on the sampled tokens: every
 * element written (no poison anywhere), no NaN/Inf where the reference is
 * finite, relative L2 error <= 1e-2. Returns the error. */
/* The CPU reference's input for problem p with weights w (experts from
 * `offset`) and the given top-k; the fields not set keep their defaults. */
static inline fp8moe_ref_moe_input reference_input(const problem *p, const weights *w, int offset,
                                                   const std::vector<int32_t> &ids, const std::vector<float> &wts) {
  fp8moe_ref_moe_input ri;
  memset(&ri, 0, sizeof ri);
  ri.num_tokens = p->T;
  ri.local_expert_offset = offset;
  ri.local_num_experts = w->e_loc;
  ri.hidden_states = p->h_x.data();
  ri.hidden_states_scale = p->h_xs.data();
  ri.w1 = w->h_w1.data();
  ri.w1_scale = w->h_w1s.data();
  ri.w2 = w->h_w2.data();
  ri.w2_scale = w->h_w2s.data();
  ri.topk_ids = ids.data();
  ri.topk_weights = wts.data();
  return ri;
}

static double check_against_reference(const problem *p, const instance &in, const weights *w, int offset,
                                      const std::vector<uint16_t> &out, const std::vector<int32_t> &ids,
                                      const std::vector<float> &wts, fp8moe_rng *rng, const char *what) {
  const fp8moe_config &c = in.c;
  const size_t H = (size_t)c.hidden;
  for (size_t i = 0; i < out.size(); i++)
    cr_assert_neq(out[i], (uint16_t)FP8MOE_TEST_POISON_BF16, "%s %s T=%d: output element %zu not written", in.name,
                  what, p->T, i);
  if (p->T == 0) return 0.0;
  std::vector<int> toks = sample_tokens(rng, p->T);
  const fp8moe_ref_moe_input ri = reference_input(p, w, offset, ids, wts);
  std::vector<uint16_t> ref(toks.size() * H);
  fp8moe_ref_moe(&c, &ri, toks.data(), (int)toks.size(), ref.data(), NULL);
  std::vector<float> g(toks.size() * H), r(toks.size() * H);
  for (size_t i = 0; i < toks.size(); i++)
    for (size_t h = 0; h < H; h++) {
      g[i * H + h] = fp8moe_bf16_to_float(out[(size_t)toks[i] * H + h]);
      r[i * H + h] = fp8moe_bf16_to_float(ref[i * H + h]);
      cr_assert(isfinite(g[i * H + h]) || !isfinite(r[i * H + h]), "%s %s T=%d token %d col %zu: %g vs ref %g",
                in.name, what, p->T, toks[i], h, g[i * H + h], r[i * H + h]);
    }
  double err = rel_l2(g.data(), r.data(), g.size());
  cr_log_info("%s %-22s T=%-5d rel L2 = %.3e over %zu tokens", in.name, what, p->T, err, toks.size());
  cr_assert(err <= 1e-2, "%s %s T=%d: relative L2 error %.3e > 1e-2", in.name, what, p->T, err);
  return err;
}

/* Reference routing for the non-routed path. */
static void reference_route(const problem *p, const instance &in, std::vector<int32_t> &ids, std::vector<float> &w) {
  size_t ns = (size_t)p->T * in.c.top_k;
  ids.resize(ns);
  w.resize(ns);
  if (ns)
    fp8moe_ref_route(in.method, p->T, in.c.num_experts, in.c.top_k, p->h_logits.data(),
                     in.bias ? p->h_bias.data() : NULL, in.n_group, in.topk_group, in.scale, ids.data(), w.data());
}

static uint64_t seed_and_log(const char *what) {
  uint64_t s = fp8moe_test_seed();
  cr_log_info("%s: seed 0x%llx (FP8MOE_SEED=0x%llx reproduces)", what, (unsigned long long)s, (unsigned long long)s);
  return s;
}

/* Every configuration: routed (unpacked fp32) and non-routed at each T, one
 * of the two with programmatic dependent launch (enable_pdl), alternating. */
static inline void config_sweep(const instance &in, const int *Ts, int nT) {
  fp8moe_rng rng = {seed_and_log(in.name)};
  weights w;
  make_weights(&w, in.c, in.c.num_experts, &rng);
  for (int i = 0; i < nT; i++) {
    if (fp8moe_test_skip_tokens(Ts[i], in.name)) continue;
    problem p;
    make_problem(&p, in, Ts[i], &rng);
    std::vector<int32_t> ids;
    std::vector<float> wts;
    random_topk(&rng, p.T, in.c.top_k, 0, in.c.num_experts, ids, wts);
    set_routing(&p, in, ids, wts);
    const int pdl = i & 1;
    std::vector<uint16_t> out = run_layer(&p, in, &w, 0, UNPACKED_FP32, pdl);
    check_against_reference(&p, in, &w, 0, out, ids, wts, &rng, pdl ? "routed (unpacked fp32), PDL" : "routed (unpacked fp32)");
    reference_route(&p, in, ids, wts);
    out = run_layer(&p, in, &w, 0, NONROUTED, !pdl);
    check_against_reference(&p, in, &w, 0, out, ids, wts, &rng, pdl ? "non-routed" : "non-routed, PDL");
    free_problem(&p);
  }
  free_weights(&w);
}

#endif
