/* examples/routed_moe.cu - the routed entry point: you bring the top-k.
 *
 * Build and run (from the repository root; pick the -gencode of your GPU):
 *   nvcc -std=c++17 -O3 -Iinclude -Xcompiler -fopenmp \
 *        -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_89,code=sm_89 \
 *        examples/routed_moe.cu -o routed_moe -lgomp && ./routed_moe [num_tokens]
 *
 * A DeepSeek-V3-shaped layer (E=256, K=8, H=7168, I=2048) with random FP8
 * weights and activations, and a random top-8 per token given twice: packed
 * (id << 16 | bf16 weight) and unpacked (int32 ids + fp32 weights). Then the
 * unpacked form once more with a SwiGLU variant, per expert e
 *     g = min(gate, limit[e]),  u = clamp(up, -limit[e], limit[e]),
 *     a = g * sigmoid(alpha[e] * g) * (u + beta[e])
 * (GPT-OSS-style clamped SwiGLU; FlashInfer's gemm1_alpha, gemm1_beta,
 * gemm1_clamp_limit), from three fp32 device arrays [E_loc] in
 * swiglu_alpha / swiglu_beta / swiglu_limit. Checks all three against the CPU
 * reference on a sample of tokens and times the layer, plain and with the
 * variant.
 */
#include <fp8moe/fp8moe.cuh>
#include <fp8moe/reference.h>

#include <algorithm>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <vector>

FP8MOE_DEFINE(dsv3, 256, 8, 7168, 2048);
enum { E = 256, K = 8, H = 7168, I = 2048 };

#define CHECK(x)                                                                   \
  do {                                                                             \
    cudaError_t e_ = (x);                                                          \
    if (e_ != cudaSuccess) {                                                       \
      fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      exit(1);                                                                     \
    }                                                                              \
  } while (0)
#define CHECK_MOE(x)                                                               \
  do {                                                                             \
    fp8moe_status s_ = (x);                                                        \
    if (s_ != FP8MOE_OK) {                                                         \
      fprintf(stderr, "%s: %s\n", #x, fp8moe_status_string(s_));                   \
      exit(1);                                                                     \
    }                                                                              \
  } while (0)

static uint64_t rng_state = 0x243f6a8885a308d3ull;
static uint64_t rnd(void) {
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static float rnd_unit(void) { return (float)(rnd() >> 40) / 16777216.0f; }

/* fp8 codes with |v| in [2^-4, 7.5] from a hash of the index */
__global__ void fill_fp8(uint8_t *p, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    uint64_t z = seed + i * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    p[i] = (uint8_t)(((z & 1) << 7) | ((3 + ((z >> 1) & 7)) << 3) | ((z >> 4) & 7));
  }
}

static uint8_t *random_fp8_on_device(std::vector<uint8_t> &host) {
  uint8_t *d;
  CHECK(cudaMalloc(&d, host.size() + 16));
  fill_fp8<<<1024, 256>>>(d, host.size(), rnd());
  CHECK(cudaGetLastError());
  CHECK(cudaMemcpy(host.data(), d, host.size(), cudaMemcpyDeviceToHost));
  return d;
}

template <class T>
static T *upload(const std::vector<T> &h) {
  T *d;
  CHECK(cudaMalloc(&d, h.size() * sizeof(T) + 1));
  CHECK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

int main(int argc, char **argv) {
  const int T = argc > 1 ? atoi(argv[1]) : 256;
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    printf("routed_moe: no CUDA device here; nothing to run.\n");
    return 0;
  }
  rng_state ^= (uint64_t)time(NULL);
  printf("routed_moe: E=%d K=%d H=%d I=%d T=%d\n", E, K, H, I, T);

  /* random fp8 weights and activations, made on the GPU (11 GB of fp8 at
   * this shape), then copied to the host for the reference */
  std::vector<uint8_t> w1((size_t)E * 2 * I * H), w2((size_t)E * H * I), x((size_t)T * H);
  std::vector<float> w1s((size_t)E * (2 * I / 128) * (H / 128)), w2s((size_t)E * (H / 128) * (I / 128));
  std::vector<float> xs((size_t)(H / 128) * T);
  uint8_t *d_w1 = random_fp8_on_device(w1), *d_w2 = random_fp8_on_device(w2), *d_x = random_fp8_on_device(x);
  for (auto &v : w1s) v = (0.5f + rnd_unit()) / sqrtf((float)H);
  for (auto &v : w2s) v = (0.5f + rnd_unit()) / sqrtf((float)I);
  for (auto &v : xs) v = 0.25f + rnd_unit();

  /* a random top-8 of distinct experts per token, positive weights */
  std::vector<int32_t> ids((size_t)T * K), packed((size_t)T * K);
  std::vector<float> wts((size_t)T * K), wts_bf16((size_t)T * K);
  for (int t = 0; t < T; t++)
    for (int k = 0; k < K; k++) {
      int e;
      bool dup;
      do {
        e = (int)(rnd() % E);
        dup = false;
        for (int j = 0; j < k; j++) dup |= ids[(size_t)t * K + j] == e;
      } while (dup);
      size_t i = (size_t)t * K + k;
      ids[i] = e;
      wts[i] = 0.05f + rnd_unit() / K;
      packed[i] = fp8moe_topk_pack(e, wts[i]);
      wts_bf16[i] = fp8moe_topk_weight(packed[i]); /* what the packed form carries */
    }

  /* the SwiGLU variant, one (alpha, beta, limit) per local expert; limits of
   * 10 to 30, around the size of GEMM1's outputs with these data (RMS about
   * 19), so a good share of the gate and up values clamp */
  std::vector<float> alpha(E), beta(E), limit(E);
  for (int e = 0; e < E; e++) {
    alpha[e] = 1.0f + rnd_unit();
    beta[e] = rnd_unit();
    limit[e] = 10.0f + 20.0f * rnd_unit();
  }

  /* device buffers and the workspace: size it once for the largest T you will run */
  float *d_w1s = upload(w1s), *d_w2s = upload(w2s), *d_xs = upload(xs), *d_wts = upload(wts);
  float *d_alpha = upload(alpha), *d_beta = upload(beta), *d_limit = upload(limit);
  int32_t *d_ids = upload(ids), *d_packed = upload(packed);
  uint16_t *d_out;
  CHECK(cudaMalloc(&d_out, (size_t)T * H * 2 + 16));
  size_t ws_bytes = dsv3_workspace_size(T);
  void *d_ws;
  CHECK(cudaMalloc(&d_ws, ws_bytes));
  printf("workspace: %.1f MB for T=%d\n", ws_bytes / 1e6, T);

  fp8moe_args a;
  memset(&a, 0, sizeof a);
  a.num_tokens = T;
  a.local_expert_offset = 0;
  a.local_num_experts = E;
  a.hidden_states = d_x;
  a.hidden_states_scale = d_xs;
  a.w1 = d_w1;
  a.w1_scale = d_w1s;
  a.w2 = d_w2;
  a.w2_scale = d_w2s;
  a.output = d_out;

  /* the CPU reference on a sample of tokens */
  const int nsample = T < 32 ? T : 32;
  std::vector<int> sample(nsample);
  for (int i = 0; i < nsample; i++) sample[i] = (int)((long long)i * T / nsample);
  fp8moe_config cfg = {E, K, H, I};
  fp8moe_ref_moe_input ri = {}; /* zero: the fields not set keep their defaults */
  ri.num_tokens = T;
  ri.local_num_experts = E;
  ri.hidden_states = x.data();
  ri.hidden_states_scale = xs.data();
  ri.w1 = w1.data();
  ri.w1_scale = w1s.data();
  ri.w2 = w2.data();
  ri.w2_scale = w2s.data();
  ri.topk_ids = ids.data();
  std::vector<uint16_t> out((size_t)T * H), ref((size_t)nsample * H), plain_out;

  /* form 0: packed; 1: unpacked; 2: unpacked with the SwiGLU variant */
  static const char *const form_name[] = {"packed", "unpacked", "swiglu"};
  for (int form = 0; form < 3; form++) {
    const bool variant = form == 2;
    a.topk_packed = form == 0 ? d_packed : NULL;
    a.topk_ids = form >= 1 ? d_ids : NULL;
    a.topk_weights = form >= 1 ? d_wts : NULL;
    a.topk_weights_dtype = FP8MOE_DTYPE_FP32;
    a.swiglu_alpha = variant ? d_alpha : NULL; /* NULL: alpha 1, beta 0, no clamp */
    a.swiglu_beta = variant ? d_beta : NULL;
    a.swiglu_limit = variant ? d_limit : NULL;
    CHECK_MOE(dsv3_run_routed(&a, d_ws, ws_bytes, 0));
    CHECK(cudaDeviceSynchronize());
    CHECK(cudaMemcpy(out.data(), d_out, out.size() * 2, cudaMemcpyDeviceToHost));
    ri.topk_weights = form == 0 ? wts_bf16.data() : wts.data();
    ri.swiglu_alpha = variant ? alpha.data() : NULL; /* the same arrays on the host */
    ri.swiglu_beta = variant ? beta.data() : NULL;
    ri.swiglu_limit = variant ? limit.data() : NULL;
    fp8moe_ref_moe(&cfg, &ri, sample.data(), nsample, ref.data(), NULL);
    double num = 0, den = 0;
    for (int i = 0; i < nsample; i++)
      for (int h = 0; h < H; h++) {
        double g = fp8moe_bf16_to_float(out[(size_t)sample[i] * H + h]), r = fp8moe_bf16_to_float(ref[(size_t)i * H + h]);
        num += (g - r) * (g - r);
        den += r * r;
      }
    double err = sqrt(num / (den > 0 ? den : 1));
    printf("%-8s: rel L2 error vs CPU reference = %.3e over %d tokens  %s\n", form_name[form], err, nsample,
           err <= 1e-2 ? "OK" : "FAIL");
    if (!(err <= 1e-2)) return 1;
    if (form == 1) plain_out = out;
    if (variant) { /* how far the variant moves the layer's output */
      double dn = 0, dd = 0;
      for (int i = 0; i < nsample; i++)
        for (int h = 0; h < H; h++) {
          size_t j = (size_t)sample[i] * H + h;
          double v = fp8moe_bf16_to_float(out[j]), p = fp8moe_bf16_to_float(plain_out[j]);
          dn += (v - p) * (v - p);
          dd += p * p;
        }
      printf("%-8s: differs from the plain SwiGLU output by %.3e (rel L2)\n", "swiglu", sqrt(dn / (dd > 0 ? dd : 1)));
    }
  }

  /* time: warm-up, then the median of 20 runs; plain, then with the variant */
  cudaEvent_t e0, e1;
  CHECK(cudaEventCreate(&e0));
  CHECK(cudaEventCreate(&e1));
  for (int variant = 0; variant < 2; variant++) {
    a.swiglu_alpha = variant ? d_alpha : NULL;
    a.swiglu_beta = variant ? d_beta : NULL;
    a.swiglu_limit = variant ? d_limit : NULL;
    std::vector<float> ms;
    for (int it = 0; it < 25; it++) {
      CHECK(cudaEventRecord(e0));
      CHECK_MOE(dsv3_run_routed(&a, d_ws, ws_bytes, 0));
      CHECK(cudaEventRecord(e1));
      CHECK(cudaEventSynchronize(e1));
      float m;
      CHECK(cudaEventElapsedTime(&m, e0, e1));
      if (it >= 5) ms.push_back(m);
    }
    std::sort(ms.begin(), ms.end());
    printf("time: %.3f ms per layer%s (median of %zu, T=%d)\n", ms[ms.size() / 2], variant ? ", SwiGLU variant" : "",
           ms.size(), T);
  }
  return 0;
}
