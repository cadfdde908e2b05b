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
 * routed_scaling_factor 2.5) inside dsv3_run; and DeepSeek-V3's shared
 * expert, which every token takes with weight 1, in the same call
 * (num_shared_experts = 1, its weights in shared_w1 / shared_w2, the
 * workspace from dsv3_workspace_size_shared).
 *
 * The run also writes its routing (routing replay): the chosen global expert
 * ids and fp32 weights, [T, K] each, to topk_ids_out / topk_weights_out.
 * Given back to dsv3_run_routed as topk_ids + fp32 topk_weights they give the
 * same output bit for bit, which the example checks on the GPU. Then it
 * checks the output against the CPU reference (fp8moe_reference_run, which
 * routes, runs the routed experts and adds the shared expert) on a sample of
 * tokens, and times the layer (routing and the shared expert included).
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
enum { E = 256, K = 8, H = 7168, I = 2048, S = 1 }; /* S: shared experts */

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
  printf("moe: DeepSeek-V3 layer, E=%d K=%d H=%d I=%d T=%d, DeepSeekV3 routing, %d shared expert\n", E, K, H, I, T,
         S);

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

  /* the shared expert: the routed experts' formats, [S, 2I, H] and [S, H, I] */
  const size_t n1s = (size_t)S * 2 * I * H, n2s = (size_t)S * H * I;
  const size_t s1s = (size_t)S * (2 * I / 128) * (H / 128), s2s = (size_t)S * (H / 128) * (I / 128);
  uint8_t *d_sw1, *d_sw2;
  float *d_sw1s, *d_sw2s;
  CHECK(cudaMalloc(&d_sw1, n1s));
  CHECK(cudaMalloc(&d_sw2, n2s));
  fill_fp8<<<1024, 256>>>(d_sw1, n1s, (uint64_t)rand() << 32 | rand());
  fill_fp8<<<1024, 256>>>(d_sw2, n2s, (uint64_t)rand() << 32 | rand());
  CHECK(cudaGetLastError());
  std::vector<uint8_t> sw1(n1s), sw2(n2s);
  CHECK(cudaMemcpy(sw1.data(), d_sw1, n1s, cudaMemcpyDeviceToHost));
  CHECK(cudaMemcpy(sw2.data(), d_sw2, n2s, cudaMemcpyDeviceToHost));
  std::vector<float> sw1s(s1s), sw2s(s2s);
  for (auto &v : sw1s) v = (0.5f + rand() / (float)RAND_MAX) / sqrtf((float)H);
  for (auto &v : sw2s) v = (0.5f + rand() / (float)RAND_MAX) / sqrtf((float)I);
  CHECK(cudaMalloc(&d_sw1s, s1s * 4));
  CHECK(cudaMalloc(&d_sw2s, s2s * 4));
  CHECK(cudaMemcpy(d_sw1s, sw1s.data(), s1s * 4, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(d_sw2s, sw2s.data(), s2s * 4, cudaMemcpyHostToDevice));

  /* bf16 activations, bf16 logits, fp32 bias */
  std::vector<uint16_t> x_bf16((size_t)T * H), logits((size_t)T * E);
  std::vector<float> bias(E);
  for (auto &v : x_bf16) v = fp8moe_bf16_from_float(gauss());
  for (auto &v : logits) v = fp8moe_bf16_from_float(2.0f * gauss());
  for (auto &v : bias) v = 0.1f * gauss();
  uint16_t *d_xb, *d_logits, *d_out, *d_out_replay;
  float *d_bias, *d_xs, *d_replay_w;
  int32_t *d_replay_ids;
  uint8_t *d_x;
  CHECK(cudaMalloc(&d_xb, x_bf16.size() * 2));
  CHECK(cudaMalloc(&d_logits, logits.size() * 2));
  CHECK(cudaMalloc(&d_bias, E * 4));
  CHECK(cudaMalloc(&d_x, (size_t)T * H));
  CHECK(cudaMalloc(&d_xs, (size_t)(H / 128) * T * 4));
  CHECK(cudaMalloc(&d_out, (size_t)T * H * 2));
  CHECK(cudaMalloc(&d_out_replay, (size_t)T * H * 2));
  CHECK(cudaMalloc(&d_replay_ids, (size_t)T * K * 4)); /* routing replay: [T, K] global ids */
  CHECK(cudaMalloc(&d_replay_w, (size_t)T * K * 4));   /* and their fp32 weights */
  CHECK(cudaMemcpy(d_xb, x_bf16.data(), x_bf16.size() * 2, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(d_logits, logits.data(), logits.size() * 2, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(d_bias, bias.data(), E * 4, cudaMemcpyHostToDevice));

  /* with shared experts the GEMMs take T*(K + S) rows: size the workspace for them */
  size_t ws_bytes = dsv3_workspace_size_shared(T, S);
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
  a.num_shared_experts = S;
  a.shared_w1 = d_sw1;
  a.shared_w1_scale = d_sw1s;
  a.shared_w2 = d_sw2;
  a.shared_w2_scale = d_sw2s;
  a.topk_ids_out = d_replay_ids;
  a.topk_weights_out = d_replay_w;

  CHECK_MOE(dsv3_quantize_activations(d_xb, T, d_x, d_xs, 0));
  CHECK_MOE(dsv3_run(&a, d_ws, ws_bytes, 0));

  /* routing replay: the recorded top-k through the routed entry point */
  fp8moe_args replay = a; /* its routing fields and replay outputs are not read by a routed run */
  replay.topk_ids = d_replay_ids;
  replay.topk_weights = d_replay_w;
  replay.topk_weights_dtype = FP8MOE_DTYPE_FP32;
  replay.output = d_out_replay;
  CHECK_MOE(dsv3_run_routed(&replay, d_ws, ws_bytes, 0));
  CHECK(cudaDeviceSynchronize());
  std::vector<uint16_t> out((size_t)T * H), out_replay((size_t)T * H);
  CHECK(cudaMemcpy(out.data(), d_out, out.size() * 2, cudaMemcpyDeviceToHost));
  CHECK(cudaMemcpy(out_replay.data(), d_out_replay, out_replay.size() * 2, cudaMemcpyDeviceToHost));
  const bool replay_same = memcmp(out.data(), out_replay.data(), out.size() * 2) == 0;
  printf("routing replay: the routed run on the recorded top-k %s  %s\n",
         replay_same ? "reproduces the output bit for bit" : "DIFFERS from the output", replay_same ? "OK" : "FAIL");
  if (!replay_same) return 1;

  /* the CPU reference on a sample of tokens. Routing, the experts and the
   * activation quantization are per token, so the sampled tokens form a batch
   * of their own: fp8moe_reference_run takes the same fp8moe_args with host
   * pointers, routes it, runs the routed experts and adds the shared expert. */
  const int nsample = T < 32 ? T : 32;
  std::vector<int> sample(nsample);
  for (int i = 0; i < nsample; i++) sample[i] = (int)((long long)i * T / nsample);
  std::vector<uint16_t> sx_bf16((size_t)nsample * H), slogits((size_t)nsample * E), ref((size_t)nsample * H);
  for (int i = 0; i < nsample; i++) {
    memcpy(&sx_bf16[(size_t)i * H], &x_bf16[(size_t)sample[i] * H], (size_t)H * 2);
    memcpy(&slogits[(size_t)i * E], &logits[(size_t)sample[i] * E], (size_t)E * 2);
  }
  std::vector<uint8_t> sx((size_t)nsample * H);
  std::vector<float> sxs((size_t)(H / 128) * nsample); /* stride nsample, the T of this batch */
  fp8moe_ref_quantize_activations(nsample, H, sx_bf16.data(), sx.data(), sxs.data());
  fp8moe_args host = a; /* the same call, host pointers */
  host.num_tokens = nsample;
  host.hidden_states = sx.data();
  host.hidden_states_scale = sxs.data();
  host.w1 = w1.data();
  host.w1_scale = w1s.data();
  host.w2 = w2.data();
  host.w2_scale = w2s.data();
  host.routing_logits = slogits.data();
  host.routing_bias = bias.data();
  host.shared_w1 = sw1.data();
  host.shared_w1_scale = sw1s.data();
  host.shared_w2 = sw2.data();
  host.shared_w2_scale = sw2s.data();
  std::vector<int32_t> ref_ids((size_t)nsample * K);
  std::vector<float> ref_w((size_t)nsample * K);
  host.topk_ids_out = ref_ids.data(); /* the reference router's choice, as the GPU recorded its own */
  host.topk_weights_out = ref_w.data();
  host.output = ref.data();
  fp8moe_config cfg = {E, K, H, I};
  CHECK_MOE(fp8moe_reference_run(&cfg, &host, 0));

  /* what the GPU recorded for the sampled tokens: the reference's experts
   * (ties within fp32 rounding aside), weights within 1e-5 */
  std::vector<int32_t> gpu_ids((size_t)T * K);
  std::vector<float> gpu_w((size_t)T * K);
  CHECK(cudaMemcpy(gpu_ids.data(), d_replay_ids, gpu_ids.size() * 4, cudaMemcpyDeviceToHost));
  CHECK(cudaMemcpy(gpu_w.data(), d_replay_w, gpu_w.size() * 4, cudaMemcpyDeviceToHost));
  int same_ids = 0;
  float max_dw = 0.0f;
  for (int i = 0; i < nsample; i++)
    for (int k = 0; k < K; k++) {
      const size_t g = (size_t)sample[i] * K + k, c = (size_t)i * K + k;
      if (gpu_ids[g] != ref_ids[c]) continue;
      same_ids++;
      max_dw = fmaxf(max_dw, fabsf(gpu_w[g] - ref_w[c]) / (fabsf(ref_w[c]) + 1e-30f));
    }
  printf("routing replay: %d of %d sampled slots pick the reference's expert, weights within %.1e relative\n",
         same_ids, nsample * K, max_dw);
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
  printf("time: %.3f ms per layer incl. routing and the shared expert (median of %zu, T=%d)\n", ms[ms.size() / 2],
         ms.size(), T);
  return 0;
}
