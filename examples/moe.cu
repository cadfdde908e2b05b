/* examples/moe.cu - the non-routed entry point: router logits in, the layer out.
 *
 * Build and run (from the repository root; pick the -gencode of your GPU):
 *   nvcc -std=c++17 -O3 -Iinclude -Xcompiler -fopenmp \
 *        -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_89,code=sm_89 \
 *        examples/moe.cu -o moe -lgomp && ./moe [num_tokens]
 *
 * A DeepSeek-V3 layer as a model runs it: bf16 hidden states, quantized to
 * fp8 with 1x128 scales by dsv3_quantize_activations; bf16 router logits and
 * the e_score_correction bias; DeepSeekV3 routing (n_group 8, topk_group 4,
 * routed_scaling_factor 2.5) inside dsv3_run. Checks the routing-to-output
 * result against the CPU reference on a sample of tokens, then times the
 * layer (routing included).
 */
#include <fp8moe/fp8moe.cuh>
#include <fp8moe/reference.h>

#include <algorithm>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <vector>

FP8MOE_DEFINE(dsv3, 256, 8, 7168, 2048);
enum { E = 256, K = 8, H = 7168, I = 2048 };

#define CHECK(x)                                                                              \
  do {                                                                                        \
    cudaError_t e_ = (x);                                                                     \
    if (e_ != cudaSuccess) {                                                                  \
      fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));      \
      exit(1);                                                                                \
    }                                                                                         \
  } while (0)
#define CHECK_MOE(x)                                                                          \
  do {                                                                                        \
    fp8moe_status s_ = (x);                                                                   \
    if (s_ != FP8MOE_OK) {                                                                    \
      fprintf(stderr, "%s: %s\n", #x, fp8moe_status_string(s_));                              \
      exit(1);                                                                                \
    }                                                                                         \
  } while (0)

/* A weight generator on the GPU: fp8 codes with |v| in [2^-4, 7.5]. */
__global__ void fill_fp8(uint8_t *p, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    uint64_t z = seed + i * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    p[i] = (uint8_t)(((z & 1) << 7) | ((3 + ((z >> 1) & 7)) << 3) | ((z >> 4) & 7));
  }
}

static float gauss(void) { /* Box-Muller on rand(): fine for an example */
  float u1 = (rand() + 1.0f) / (RAND_MAX + 2.0f), u2 = rand() / (RAND_MAX + 1.0f);
  return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

int main(int argc, char **argv) {
  const int T = argc > 1 ? atoi(argv[1]) : 512;
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    printf("moe: no CUDA device here; nothing to run.\n");
    return 0;
  }
  srand((unsigned)time(NULL));
  printf("moe: DeepSeek-V3 layer, E=%d K=%d H=%d I=%d T=%d, DeepSeekV3 routing\n", E, K, H, I, T);

  /* weights on the device, a copy on the host for the reference */
  const size_t n1 = (size_t)E * 2 * I * H, n2 = (size_t)E * H * I;
  const size_t s1 = (size_t)E * (2 * I / 128) * (H / 128), s2 = (size_t)E * (H / 128) * (I / 128);
  uint8_t *d_w1, *d_w2;
  float *d_w1s, *d_w2s;
  CHECK(cudaMalloc(&d_w1, n1));
  CHECK(cudaMalloc(&d_w2, n2));
  fill_fp8<<<1024, 256>>>(d_w1, n1, (uint64_t)rand() << 32 | rand());
  fill_fp8<<<1024, 256>>>(d_w2, n2, (uint64_t)rand() << 32 | rand());
  CHECK(cudaGetLastError());
  std::vector<uint8_t> w1(n1), w2(n2);
  CHECK(cudaMemcpy(w1.data(), d_w1, n1, cudaMemcpyDeviceToHost));
  CHECK(cudaMemcpy(w2.data(), d_w2, n2, cudaMemcpyDeviceToHost));
  std::vector<float> w1s(s1), w2s(s2);
  for (auto &v : w1s) v = (0.5f + rand() / (float)RAND_MAX) / sqrtf((float)H);
  for (auto &v : w2s) v = (0.5f + rand() / (float)RAND_MAX) / sqrtf((float)I);
  CHECK(cudaMalloc(&d_w1s, s1 * 4));
  CHECK(cudaMalloc(&d_w2s, s2 * 4));
  CHECK(cudaMemcpy(d_w1s, w1s.data(), s1 * 4, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(d_w2s, w2s.data(), s2 * 4, cudaMemcpyHostToDevice));

  /* bf16 activations, bf16 logits, fp32 bias */
  std::vector<uint16_t> x_bf16((size_t)T * H), logits((size_t)T * E);
  std::vector<float> bias(E);
  for (auto &v : x_bf16) v = fp8moe_bf16_from_float(gauss());
  for (auto &v : logits) v = fp8moe_bf16_from_float(2.0f * gauss());
  for (auto &v : bias) v = 0.1f * gauss();
  uint16_t *d_xb, *d_logits, *d_out;
  float *d_bias, *d_xs;
  uint8_t *d_x;
  CHECK(cudaMalloc(&d_xb, x_bf16.size() * 2));
  CHECK(cudaMalloc(&d_logits, logits.size() * 2));
  CHECK(cudaMalloc(&d_bias, E * 4));
  CHECK(cudaMalloc(&d_x, (size_t)T * H));
  CHECK(cudaMalloc(&d_xs, (size_t)(H / 128) * T * 4));
  CHECK(cudaMalloc(&d_out, (size_t)T * H * 2));
  CHECK(cudaMemcpy(d_xb, x_bf16.data(), x_bf16.size() * 2, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(d_logits, logits.data(), logits.size() * 2, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(d_bias, bias.data(), E * 4, cudaMemcpyHostToDevice));

  size_t ws_bytes = dsv3_workspace_size(T);
  void *d_ws;
  CHECK(cudaMalloc(&d_ws, ws_bytes));

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
  a.routing_method = FP8MOE_ROUTING_DEEPSEEK_V3;
  a.routing_logits = d_logits;
  a.logits_dtype = FP8MOE_DTYPE_BF16;
  a.routing_bias = d_bias;
  a.bias_dtype = FP8MOE_DTYPE_FP32;
  a.n_group = 8;
  a.topk_group = 4;
  a.routed_scaling_factor = 2.5f;
  a.output = d_out;

  CHECK_MOE(dsv3_quantize_activations(d_xb, T, d_x, d_xs, 0));
  CHECK_MOE(dsv3_run(&a, d_ws, ws_bytes, 0));
  CHECK(cudaDeviceSynchronize());

  /* reference: quantize, route and run the sampled tokens on the CPU */
  std::vector<uint8_t> x((size_t)T * H);
  std::vector<float> xs((size_t)(H / 128) * T), lf(logits.size());
  fp8moe_ref_quantize_activations(T, H, x_bf16.data(), x.data(), xs.data());
  for (size_t i = 0; i < lf.size(); i++) lf[i] = fp8moe_bf16_to_float(logits[i]);
  std::vector<int32_t> ids((size_t)T * K);
  std::vector<float> wts((size_t)T * K);
  fp8moe_ref_route(FP8MOE_ROUTING_DEEPSEEK_V3, T, E, K, lf.data(), bias.data(), 8, 4, 2.5f, ids.data(), wts.data());
  const int nsample = T < 32 ? T : 32;
  std::vector<int> sample(nsample);
  for (int i = 0; i < nsample; i++) sample[i] = (int)((long long)i * T / nsample);
  fp8moe_config cfg = {E, K, H, I};
  fp8moe_ref_moe_input ri = {T, 0, E, x.data(), xs.data(), w1.data(), w1s.data(), w2.data(), w2s.data(),
                             ids.data(), wts.data()};
  std::vector<uint16_t> out((size_t)T * H), ref((size_t)nsample * H);
  fp8moe_ref_moe(&cfg, &ri, sample.data(), nsample, ref.data(), NULL);
  CHECK(cudaMemcpy(out.data(), d_out, out.size() * 2, cudaMemcpyDeviceToHost));
  double num = 0, den = 0;
  for (int i = 0; i < nsample; i++)
    for (int h = 0; h < H; h++) {
      double g = fp8moe_bf16_to_float(out[(size_t)sample[i] * H + h]);
      double r = fp8moe_bf16_to_float(ref[(size_t)i * H + h]);
      num += (g - r) * (g - r);
      den += r * r;
    }
  double err = sqrt(num / (den > 0 ? den : 1));
  printf("rel L2 error vs CPU reference = %.3e over %d tokens  %s\n", err, nsample, err <= 1e-2 ? "OK" : "FAIL");
  if (!(err <= 1e-2)) return 1;

  cudaEvent_t e0, e1;
  CHECK(cudaEventCreate(&e0));
  CHECK(cudaEventCreate(&e1));
  std::vector<float> ms;
  for (int it = 0; it < 25; it++) {
    CHECK(cudaEventRecord(e0));
    CHECK_MOE(dsv3_run(&a, d_ws, ws_bytes, 0));
    CHECK(cudaEventRecord(e1));
    CHECK(cudaEventSynchronize(e1));
    float m;
    CHECK(cudaEventElapsedTime(&m, e0, e1));
    if (it >= 5) ms.push_back(m);
  }
  std::sort(ms.begin(), ms.end());
  printf("time: %.3f ms per layer incl. routing (median of %zu, T=%d)\n", ms[ms.size() / 2], ms.size(), T);
  return 0;
}
