/* examples/c_api/main.c - calling fp8moe from plain C.
 *
 * Build and run (from the repository root):
 *   nvcc -std=c++17 -O3 -Iinclude -gencode arch=compute_90a,code=sm_90a \
 *        -gencode arch=compute_89,code=sm_89 -c examples/c_api/moe_qwen3_30b.cu -o moe_qwen3_30b.o
 *   gcc -std=c11 -O2 -Wall -Iinclude -I/usr/local/cuda/include -c examples/c_api/main.c -o main.o
 *   nvcc main.o moe_qwen3_30b.o -o c_api_demo && ./c_api_demo
 *
 * The C side sees only <fp8moe/fp8moe.h> (FP8MOE_DECLARE gives the
 * prototypes), <fp8moe/reference.h> for the check, and the CUDA runtime API.
 * Runs a routed Qwen3-30B layer (packed top-8), compares with the CPU
 * reference on every token, and prints the error and the time.
 */
#include <fp8moe/fp8moe.h>
#include <fp8moe/reference.h>

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

FP8MOE_DECLARE(qwen3_30b);

enum { E = 128, K = 8, H = 2048, I = 768, T = 200 };

#define CHECK(x)                                                                   \
  do {                                                                             \
    cudaError_t e_ = (x);                                                          \
    if (e_ != cudaSuccess) {                                                       \
      fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_));                     \
      return 1;                                                                    \
    }                                                                              \
  } while (0)

static float frand(void) { return rand() / (float)RAND_MAX; }
static uint8_t rand_fp8(void) { /* |v| in [2^-4, 7.5] */
  return (uint8_t)(((rand() & 1) << 7) | ((3 + rand() % 8) << 3) | (rand() % 8));
}

static void *to_device(const void *h, size_t bytes) {
  void *d = NULL;
  if (cudaMalloc(&d, bytes) != cudaSuccess) return NULL;
  if (cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice) != cudaSuccess) return NULL;
  return d;
}

int main(void) {
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    printf("c_api_demo: no CUDA device here; nothing to run.\n");
    return 0;
  }
  srand((unsigned)time(NULL));
  size_t n1 = (size_t)E * 2 * I * H, n2 = (size_t)E * H * I, nx = (size_t)T * H;
  size_t s1 = (size_t)E * (2 * I / 128) * (H / 128), s2 = (size_t)E * (H / 128) * (I / 128), sx = (size_t)(H / 128) * T;
  uint8_t *w1 = malloc(n1), *w2 = malloc(n2), *x = malloc(nx);
  float *w1s = malloc(s1 * 4), *w2s = malloc(s2 * 4), *xs = malloc(sx * 4), *wts = malloc((size_t)T * K * 4);
  int32_t *packed = malloc((size_t)T * K * 4), *ids = malloc((size_t)T * K * 4);
  uint16_t *out = malloc(nx * 2), *ref = malloc(nx * 2);
  size_t i;
  int t, k, j;
  for (i = 0; i < n1; i++) w1[i] = rand_fp8();
  for (i = 0; i < n2; i++) w2[i] = rand_fp8();
  for (i = 0; i < nx; i++) x[i] = rand_fp8();
  for (i = 0; i < s1; i++) w1s[i] = (0.5f + frand()) / sqrtf((float)H);
  for (i = 0; i < s2; i++) w2s[i] = (0.5f + frand()) / sqrtf((float)I);
  for (i = 0; i < sx; i++) xs[i] = 0.25f + frand();
  for (t = 0; t < T; t++)
    for (k = 0; k < K; k++) {
      int e, dup;
      do {
        e = rand() % E;
        dup = 0;
        for (j = 0; j < k; j++) dup |= ids[t * K + j] == e;
      } while (dup);
      ids[t * K + k] = e;
      packed[t * K + k] = fp8moe_topk_pack(e, 0.05f + frand() / K);
      wts[t * K + k] = fp8moe_topk_weight(packed[t * K + k]); /* the bf16 value the packed form carries */
    }

  fp8moe_args a;
  memset(&a, 0, sizeof a);
  a.num_tokens = T;
  a.local_expert_offset = 0;
  a.local_num_experts = E;
  a.hidden_states = to_device(x, nx);
  a.hidden_states_scale = to_device(xs, sx * 4);
  a.w1 = to_device(w1, n1);
  a.w1_scale = to_device(w1s, s1 * 4);
  a.w2 = to_device(w2, n2);
  a.w2_scale = to_device(w2s, s2 * 4);
  a.topk_packed = to_device(packed, (size_t)T * K * 4);
  CHECK(cudaMalloc(&a.output, nx * 2));
  size_t ws_bytes = qwen3_30b_workspace_size(T);
  void *ws = NULL;
  CHECK(cudaMalloc(&ws, ws_bytes));

  fp8moe_status st = qwen3_30b_run_routed(&a, ws, ws_bytes, NULL);
  if (st != FP8MOE_OK) {
    fprintf(stderr, "qwen3_30b_run_routed: %s\n", fp8moe_status_string(st));
    return 1;
  }
  CHECK(cudaDeviceSynchronize());
  CHECK(cudaMemcpy(out, a.output, nx * 2, cudaMemcpyDeviceToHost));

  fp8moe_config cfg = {E, K, H, I};
  fp8moe_ref_moe_input ri;
  memset(&ri, 0, sizeof ri); /* the fields not set keep their defaults */
  ri.num_tokens = T;
  ri.local_num_experts = E;
  ri.hidden_states = x;
  ri.hidden_states_scale = xs;
  ri.w1 = w1;
  ri.w1_scale = w1s;
  ri.w2 = w2;
  ri.w2_scale = w2s;
  ri.topk_ids = ids;
  ri.topk_weights = wts;
  fp8moe_ref_moe(&cfg, &ri, NULL, T, ref, NULL);
  double num = 0, den = 0;
  for (i = 0; i < nx; i++) {
    double g = fp8moe_bf16_to_float(out[i]), r = fp8moe_bf16_to_float(ref[i]);
    num += (g - r) * (g - r);
    den += r * r;
  }
  double err = sqrt(num / (den > 0 ? den : 1));

  cudaEvent_t e0, e1;
  float ms = 0, best = 1e30f;
  CHECK(cudaEventCreate(&e0));
  CHECK(cudaEventCreate(&e1));
  for (j = 0; j < 20; j++) {
    CHECK(cudaEventRecord(e0, NULL));
    st = qwen3_30b_run_routed(&a, ws, ws_bytes, NULL);
    CHECK(cudaEventRecord(e1, NULL));
    CHECK(cudaEventSynchronize(e1));
    CHECK(cudaEventElapsedTime(&ms, e0, e1));
    if (j >= 3 && ms < best) best = ms;
  }
  printf("c_api_demo: Qwen3-30B routed layer, T=%d: rel L2 error vs CPU reference %.3e %s, best time %.3f ms\n", T,
         err, err <= 1e-2 ? "OK" : "FAIL", best);
  return err <= 1e-2 ? 0 : 1;
}
