/* bench/bench_digest.cu - a digest of every output the library computes, on
 * fixed data, to compare two builds (two versions, two compilers, two flag
 * sets) bit for bit.
 *
 * Prints one line per case, "<case> <64-bit FNV-1a of the output bytes>":
 * the whole layer (routed packed / fp32 / bf16 and non-routed, PDL off and
 * on, several T on each side of the GEMM dispatch threshold, an EP shard) for
 * three shapes, both grouped-GEMM paths with every epilogue and tile variant
 * on groups with empty and partial tiles, and the activation quantizer. The
 * inputs are a pure function of the case, so two builds that compute the
 * same function print the same lines: `diff` the two outputs
 * (scripts/compare-builds.sh). It uses only what every fp8moe release since
 * 0.2 has, so an older release's headers build it too.
 *
 *   nvcc -std=c++17 -O3 -Iinclude -gencode arch=compute_90a,code=sm_90a \
 *        bench/bench_digest.cu -o bench_digest && ./bench_digest
 */
#include <fp8moe/fp8moe.cuh>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

FP8MOE_DEFINE(dg_dsv3, 256, 8, 7168, 2048);
FP8MOE_DEFINE(dg_qwen30, 128, 8, 2048, 768);
FP8MOE_DEFINE(dg_wide, 512, 16, 1024, 256);

#define DG_CUDA(x)                                                                          \
  do {                                                                                      \
    cudaError_t e_ = (x);                                                                   \
    if (e_ != cudaSuccess) {                                                                \
      fprintf(stderr, "bench_digest: %s: %s (line %d)\n", #x, cudaGetErrorString(e_), __LINE__); \
      exit(1);                                                                              \
    }                                                                                       \
  } while (0)

static __device__ __host__ uint64_t dg_mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* fp8 codes with |v| in [2^-4, 15], random sign and mantissa */
static __global__ void dg_fill_fp8(uint8_t *p, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const uint64_t r = dg_mix(seed ^ (i * 0x2545f4914f6cdd1dull));
    p[i] = (uint8_t)((((r >> 6) & 1) << 7) | ((3 + (r & 7)) << 3) | ((r >> 3) & 7));
  }
}

/* lo * 2^(range * u) */
static __global__ void dg_fill_scale(float *p, size_t n, uint64_t seed, float lo, float range) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const uint64_t r = dg_mix(seed ^ (i * 0x2545f4914f6cdd1dull));
    p[i] = lo * exp2f(range * (float)(r >> 40) * (1.0f / 16777216.0f));
  }
}

/* bf16 of a normal-ish value times 2^(-8..8) */
static __global__ void dg_fill_bf16(uint16_t *p, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const uint64_t r = dg_mix(seed ^ (i * 0x2545f4914f6cdd1dull));
    const float u = ((float)(r >> 40) * (1.0f / 16777216.0f) - 0.5f) * exp2f((float)((int)((r >> 8) & 15) - 8));
    p[i] = (uint16_t)(__float_as_uint(u) >> 16);
  }
}

static uint64_t fnv(const void *data, size_t n) {
  const uint8_t *b = static_cast<const uint8_t *>(data);
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

template <class T>
static T *dg_alloc(size_t n) {
  void *p = NULL;
  DG_CUDA(cudaMalloc(&p, n * sizeof(T) > 0 ? n * sizeof(T) : 16));
  return static_cast<T *>(p);
}

static uint64_t device_digest(const void *d, size_t bytes) {
  std::vector<uint8_t> h(bytes);
  if (bytes) DG_CUDA(cudaMemcpy(h.data(), d, bytes, cudaMemcpyDeviceToHost));
  return fnv(h.data(), bytes);
}

static int failures = 0;

static void line(const char *name, uint64_t h) { printf("%-64s %016llx\n", name, (unsigned long long)h); }

static void status_line(const char *name, fp8moe_status s) {
  if (s != FP8MOE_OK) {
    printf("%-64s FAILED %s\n", name, fp8moe_status_string(s));
    failures++;
  }
}

/* ---- the whole layer ---- */

struct layer_api {
  const char *name;
  int E, K, H, I, method, n_group, topk_group;
  float scale;
  size_t (*ws)(int);
  fp8moe_status (*run)(const fp8moe_args *, void *, size_t, fp8moe_stream);
  fp8moe_status (*run_routed)(const fp8moe_args *, void *, size_t, fp8moe_stream);
};

static void layer_cases(const layer_api &L, const std::vector<int> &Ts, int e_off, int e_loc, uint64_t seed) {
  const size_t w1n = (size_t)e_loc * 2 * L.I * L.H, w2n = (size_t)e_loc * L.H * L.I;
  const size_t s1n = (size_t)e_loc * (2 * L.I / 128) * (L.H / 128), s2n = (size_t)e_loc * (L.H / 128) * (L.I / 128);
  uint8_t *w1 = dg_alloc<uint8_t>(w1n), *w2 = dg_alloc<uint8_t>(w2n);
  float *s1 = dg_alloc<float>(s1n), *s2 = dg_alloc<float>(s2n);
  dg_fill_fp8<<<1024, 256>>>(w1, w1n, seed + 1);
  dg_fill_fp8<<<1024, 256>>>(w2, w2n, seed + 2);
  dg_fill_scale<<<256, 256>>>(s1, s1n, seed + 3, 0.5f / sqrtf((float)L.H), 2.0f);
  dg_fill_scale<<<256, 256>>>(s2, s2n, seed + 4, 0.5f / sqrtf((float)L.I), 2.0f);
  DG_CUDA(cudaGetLastError());
  for (int T : Ts) {
    const size_t TK = (size_t)T * L.K;
    uint8_t *x = dg_alloc<uint8_t>((size_t)T * L.H);
    float *xs = dg_alloc<float>((size_t)(L.H / 128) * T), *logits = dg_alloc<float>((size_t)T * L.E);
    float *bias = dg_alloc<float>(L.E), *wf = dg_alloc<float>(TK);
    int32_t *ids = dg_alloc<int32_t>(TK), *packed = dg_alloc<int32_t>(TK);
    uint16_t *wb = dg_alloc<uint16_t>(TK), *out = dg_alloc<uint16_t>((size_t)T * L.H);
    dg_fill_fp8<<<512, 256>>>(x, (size_t)T * L.H, seed * 31 + T);
    dg_fill_scale<<<64, 256>>>(xs, (size_t)(L.H / 128) * T, seed * 37 + T, 0.25f, 2.0f);
    /* logits and bias: N(0,1)-ish from uniform sums, on the host for portability */
    std::vector<float> hl((size_t)T * L.E), hb(L.E);
    for (size_t i = 0; i < hl.size(); i++) {
      uint64_t r = dg_mix(seed * 41 + i);
      hl[i] = ((float)(r & 0xffff) + (float)((r >> 16) & 0xffff) + (float)((r >> 32) & 0xffff)) / 65536.0f - 1.5f;
      hl[i] *= 2.0f;
    }
    for (int e = 0; e < L.E; e++) hb[e] = ((float)(dg_mix(seed * 43 + e) & 0xffff) / 65536.0f - 0.5f) * 0.2f;
    /* routed input: distinct experts per token, positive weights */
    std::vector<int32_t> hid(TK), hp(TK);
    std::vector<float> hw(TK);
    std::vector<uint16_t> hwb(TK);
    for (int t = 0; t < T; t++)
      for (int k = 0; k < L.K; k++) {
        int e;
        bool dup;
        uint64_t salt = 0;
        do {
          e = (int)(dg_mix(seed * 47 + (uint64_t)t * 64 + k + (salt++ << 40)) % (uint64_t)L.E);
          dup = false;
          for (int j = 0; j < k; j++) dup |= hid[(size_t)t * L.K + j] == e;
        } while (dup);
        hid[(size_t)t * L.K + k] = e;
        hw[(size_t)t * L.K + k] = 0.05f + (float)(dg_mix(seed * 53 + (uint64_t)t * 64 + k) & 0xffff) / 65536.0f;
        hp[(size_t)t * L.K + k] = fp8moe_topk_pack(e, hw[(size_t)t * L.K + k]);
        hwb[(size_t)t * L.K + k] = fp8moe_bf16_from_float(hw[(size_t)t * L.K + k]);
      }
    DG_CUDA(cudaMemcpy(logits, hl.data(), hl.size() * 4, cudaMemcpyHostToDevice));
    DG_CUDA(cudaMemcpy(bias, hb.data(), hb.size() * 4, cudaMemcpyHostToDevice));
    DG_CUDA(cudaMemcpy(ids, hid.data(), TK * 4, cudaMemcpyHostToDevice));
    DG_CUDA(cudaMemcpy(packed, hp.data(), TK * 4, cudaMemcpyHostToDevice));
    DG_CUDA(cudaMemcpy(wf, hw.data(), TK * 4, cudaMemcpyHostToDevice));
    DG_CUDA(cudaMemcpy(wb, hwb.data(), TK * 2, cudaMemcpyHostToDevice));
    const size_t ws_bytes = L.ws(T);
    void *ws = dg_alloc<char>(ws_bytes);
    static const char *forms[] = {"packed", "ids+fp32", "ids+bf16", "nonrouted"};
    for (int f = 0; f < 4; f++)
      for (int pdl = 0; pdl < 2; pdl++) {
        fp8moe_args a;
        memset(&a, 0, sizeof a);
        a.num_tokens = T;
        a.local_expert_offset = e_off;
        a.local_num_experts = e_loc;
        a.hidden_states = x;
        a.hidden_states_scale = xs;
        a.w1 = w1, a.w1_scale = s1, a.w2 = w2, a.w2_scale = s2;
        a.output = out;
        a.enable_pdl = pdl;
        if (f == 0) a.topk_packed = packed;
        if (f == 1) a.topk_ids = ids, a.topk_weights = wf, a.topk_weights_dtype = FP8MOE_DTYPE_FP32;
        if (f == 2) a.topk_ids = ids, a.topk_weights = wb, a.topk_weights_dtype = FP8MOE_DTYPE_BF16;
        if (f == 3) {
          a.routing_method = L.method, a.routing_logits = logits, a.logits_dtype = FP8MOE_DTYPE_FP32;
          a.routing_bias = L.method == FP8MOE_ROUTING_DEEPSEEK_V3 ? bias : NULL;
          a.bias_dtype = FP8MOE_DTYPE_FP32;
          a.n_group = L.n_group, a.topk_group = L.topk_group, a.routed_scaling_factor = L.scale;
        }
        DG_CUDA(cudaMemset(out, 0xFF, (size_t)T * L.H * 2));
        char name[128];
        snprintf(name, sizeof name, "layer %s%s T=%d %s pdl=%d", L.name, e_loc < L.E ? " (EP shard)" : "", T, forms[f],
                 pdl);
        fp8moe_status s = f == 3 ? L.run(&a, ws, ws_bytes, 0) : L.run_routed(&a, ws, ws_bytes, 0);
        status_line(name, s);
        DG_CUDA(cudaDeviceSynchronize());
        line(name, device_digest(out, (size_t)T * L.H * 2));
      }
    cudaFree(x), cudaFree(xs), cudaFree(logits), cudaFree(bias), cudaFree(wf), cudaFree(ids), cudaFree(packed);
    cudaFree(wb), cudaFree(out), cudaFree(ws);
  }
  cudaFree(w1), cudaFree(w2), cudaFree(s1), cudaFree(s2);
}

/* ---- the grouped GEMMs, kernel by kernel ---- */

using fp8moe::detail::epilogue;
using fp8moe::detail::grouped_gemm_params;
typedef fp8moe_status (*gemm_fn)(const grouped_gemm_params &, cudaStream_t, bool);

template <int N, int K, epilogue EPI>
static void gemm_case(const char *variant, gemm_fn launch, const std::vector<int> &rows, uint64_t seed) {
  const int G = (int)rows.size();
  std::vector<int> offs(1, 0);
  for (int r : rows) offs.push_back(offs.back() + r);
  const int M = offs.back();
  const int NC = EPI == epilogue::swiglu_quant ? N / 2 : N;
  const size_t cbytes = (size_t)M * NC * (EPI == epilogue::store_fp32 ? 4 : EPI == epilogue::store_bf16 ? 2 : 1);
  const long long ld = (M + 3) / 4 * 4;
  uint8_t *a = dg_alloc<uint8_t>((size_t)M * K), *b = dg_alloc<uint8_t>((size_t)G * N * K);
  float *sa = dg_alloc<float>((size_t)(K / 128) * M), *sb = dg_alloc<float>((size_t)G * (N / 128) * (K / 128));
  float *cs = dg_alloc<float>((size_t)(NC / 128) * ld);
  int *d_off = dg_alloc<int>(offs.size());
  uint8_t *c = dg_alloc<uint8_t>(cbytes);
  dg_fill_fp8<<<256, 256>>>(a, (size_t)M * K, seed + 1);
  dg_fill_fp8<<<256, 256>>>(b, (size_t)G * N * K, seed + 2);
  dg_fill_scale<<<64, 256>>>(sa, (size_t)(K / 128) * M, seed + 3, 0.25f, 2.0f);
  dg_fill_scale<<<64, 256>>>(sb, (size_t)G * (N / 128) * (K / 128), seed + 4, 0.5f / sqrtf((float)K), 2.0f);
  DG_CUDA(cudaMemcpy(d_off, offs.data(), offs.size() * 4, cudaMemcpyHostToDevice));
  DG_CUDA(cudaMemset(c, 0xEE, cbytes));
  DG_CUDA(cudaMemset(cs, 0xEE, (size_t)(NC / 128) * ld * 4));
  grouped_gemm_params p;
  p.a = a, p.a_scale = sa, p.a_scale_ld = M, p.b = b, p.b_scale = sb, p.group_offset = d_off;
  p.num_groups = G, p.m_total = M, p.c = c;
  p.c_scale = EPI == epilogue::swiglu_quant ? cs : NULL;
  p.c_scale_ld = EPI == epilogue::swiglu_quant ? ld : 0;
  char name[128];
  snprintf(name, sizeof name, "gemm %s N=%d K=%d epi=%d rows=%d groups=%d", variant, N, K, (int)EPI, M, G);
  status_line(name, launch(p, 0, false));
  DG_CUDA(cudaDeviceSynchronize());
  uint64_t h = device_digest(c, cbytes);
  if (EPI == epilogue::swiglu_quant) h ^= dg_mix(device_digest(cs, (size_t)(NC / 128) * ld * 4));
  line(name, h);
  cudaFree(a), cudaFree(b), cudaFree(sa), cudaFree(sb), cudaFree(cs), cudaFree(d_off), cudaFree(c);
}

template <int N, int K, epilogue EPI>
static void gemm_all_variants(const std::vector<int> &rows, uint64_t seed, bool sm90) {
  using namespace fp8moe::detail;
  gemm_case<N, K, EPI>("mma 64x128", gemm_mma_launch_bm<N, K, EPI, 64>, rows, seed);
  gemm_case<N, K, EPI>("mma 16x128", gemm_mma_launch_bm<N, K, EPI, 16>, rows, seed);
  if constexpr (EPI != epilogue::swiglu_quant)
    gemm_case<N, K, EPI>("mma 16x64", gemm_mma_launch_bm<N, K, EPI, 16, 64>, rows, seed);
#ifndef FP8MOE_DISABLE_SM90
  if (sm90) gemm_case<N, K, EPI>("sm90", gemm_sm90_launch<N, K, EPI>, rows, seed);
#else
  (void)sm90;
#endif
}

int main(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    fprintf(stderr, "bench_digest: no CUDA device\n");
    return 1;
  }
  cudaDeviceProp prop;
  DG_CUDA(cudaGetDeviceProperties(&prop, 0));
  const bool sm90 = prop.major == 9 && prop.minor == 0;
  fprintf(stderr, "bench_digest: %s (cc %d.%d), fp8moe %s\n", prop.name, prop.major, prop.minor, FP8MOE_VERSION_STRING);

  const layer_api dsv3 = {"dsv3", 256, 8, 7168, 2048, FP8MOE_ROUTING_DEEPSEEK_V3, 8, 4, 2.5f,
                          dg_dsv3_workspace_size, dg_dsv3_run, dg_dsv3_run_routed};
  const layer_api qwen30 = {"qwen30", 128, 8, 2048, 768, FP8MOE_ROUTING_RENORMALIZE, 0, 0, 0.0f,
                            dg_qwen30_workspace_size, dg_qwen30_run, dg_qwen30_run_routed};
  const layer_api wide = {"e512k16", 512, 16, 1024, 256, FP8MOE_ROUTING_DEFAULT, 0, 0, 0.0f,
                          dg_wide_workspace_size, dg_wide_run, dg_wide_run_routed};
  layer_cases(dsv3, {1, 7, 16, 128, 333, 1024, 4096}, 0, 256, 1000);
  layer_cases(dsv3, {1, 128, 1024}, 64, 32, 2000);
  layer_cases(qwen30, {1, 16, 128, 1000}, 0, 128, 3000);
  layer_cases(wide, {1, 300}, 0, 512, 4000);

  const std::vector<int> rows = {37, 0, 1, 130, 64, 200, 3, 0, 129};
  gemm_all_variants<512, 256, epilogue::swiglu_quant>(rows, 5000, sm90);
  gemm_all_variants<384, 256, epilogue::store_fp32>(rows, 6000, sm90);
  gemm_all_variants<512, 384, epilogue::store_bf16>(rows, 7000, sm90);
  gemm_all_variants<4096, 7168, epilogue::swiglu_quant>({300, 0, 17, 1000}, 8000, sm90);
  gemm_all_variants<7168, 2048, epilogue::store_bf16>({300, 0, 17, 1000}, 9000, sm90);

  for (int T : {1, 5, 64, 1000}) {
    uint16_t *x = dg_alloc<uint16_t>((size_t)T * 7168);
    uint8_t *q = dg_alloc<uint8_t>((size_t)T * 7168);
    float *s = dg_alloc<float>((size_t)56 * T);
    dg_fill_bf16<<<256, 256>>>(x, (size_t)T * 7168, 10000 + T);
    char name[64];
    snprintf(name, sizeof name, "quantize H=7168 T=%d", T);
    status_line(name, dg_dsv3_quantize_activations(x, T, q, s, 0));
    DG_CUDA(cudaDeviceSynchronize());
    line(name, device_digest(q, (size_t)T * 7168) ^ dg_mix(device_digest(s, (size_t)56 * T * 4)));
    cudaFree(x), cudaFree(q), cudaFree(s);
  }
  fprintf(stderr, "bench_digest: done, %d failed call(s)\n", failures);
  return failures ? 1 : 0;
}
