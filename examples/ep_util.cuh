/* examples/ep_util.cuh - what the expert-parallel examples share: error
 * checks, DeepSeek-V3 weights and activations made on each GPU from a hash
 * of (seed, global index), so every GPU makes exactly its shard of the
 * global tensors and a GPU holding the whole layer has the same numbers, and
 * the error and timing helpers. Include after <fp8moe/fp8moe.cuh> and
 * <nccl.h>. */
#ifndef FP8MOE_EXAMPLES_EP_UTIL_CUH
#define FP8MOE_EXAMPLES_EP_UTIL_CUH

#include <algorithm>
#include <chrono>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <vector>

#define CUDA_CHECK(x)                                                                        \
  do {                                                                                       \
    cudaError_t e_ = (x);                                                                    \
    if (e_ != cudaSuccess) {                                                                 \
      fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));     \
      exit(1);                                                                               \
    }                                                                                        \
  } while (0)
#define NCCL_CHECK(x)                                                                        \
  do {                                                                                       \
    ncclResult_t r_ = (x);                                                                   \
    if (r_ != ncclSuccess) {                                                                 \
      fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, ncclGetErrorString(r_));     \
      exit(1);                                                                               \
    }                                                                                        \
  } while (0)
#define MOE_CHECK(x)                                                                         \
  do {                                                                                       \
    fp8moe_status s_ = (x);                                                                  \
    if (s_ != FP8MOE_OK) {                                                                   \
      fprintf(stderr, "%s: %s\n", #x, fp8moe_status_string(s_));                             \
      exit(1);                                                                               \
    }                                                                                        \
  } while (0)

namespace epx {

enum { E = 256, K = 8, H = 7168, I = 2048 }; /* DeepSeek-V3 */

static __host__ __device__ inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* fp8 e4m3 codes with |v| in [2^-4, 7.5]: element i of n is global element first + i */
__global__ void fill_fp8(uint8_t *p, size_t n, size_t first, uint64_t seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    uint64_t z = mix64(seed + (first + i) * 0x9e3779b97f4a7c15ull);
    p[i] = (uint8_t)(((z & 1) << 7) | ((3 + ((z >> 1) & 7)) << 3) | ((z >> 4) & 7));
  }
}

/* lo + span * u, u uniform in [0, 1), over columns [col0, col0 + cols) of a
 * global [rows, ld] matrix, stored as [rows, cols]: a rank's slice of the
 * [H/128, T] activation scales, or (col0 = 0, cols = ld) any whole tensor. */
__global__ void fill_uniform_cols(float *p, size_t rows, size_t cols, size_t ld, size_t col0, uint64_t seed, float lo,
                                  float span) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < rows * cols; i += (size_t)gridDim.x * blockDim.x) {
    const size_t global = (i / cols) * ld + col0 + i % cols;
    uint64_t z = mix64(seed + global * 0x9e3779b97f4a7c15ull);
    p[i] = lo + span * (float)(z >> 40) * (1.0f / 16777216.0f);
  }
}

template <class T>
static T *dev_alloc(size_t count) {
  T *p = NULL;
  CUDA_CHECK(cudaMalloc(&p, count * sizeof(T) + 16));
  return p;
}

enum : uint64_t { SEED_W1 = 1, SEED_W2 = 2, SEED_W1S = 3, SEED_W2S = 4, SEED_X = 5, SEED_XS = 6 };
static const size_t W1_PER_EXPERT = (size_t)2 * I * H, W2_PER_EXPERT = (size_t)H * I;
static const size_t W1S_PER_EXPERT = (size_t)(2 * I / 128) * (H / 128), W2S_PER_EXPERT = (size_t)(H / 128) * (I / 128);

/* The weights of experts [first, first + count) of the global layer. */
struct weights {
  uint8_t *w1, *w2;
  float *w1s, *w2s;
};

static weights make_weights(int first, int count, uint64_t seed, cudaStream_t s) {
  weights w;
  w.w1 = dev_alloc<uint8_t>(count * W1_PER_EXPERT);
  w.w2 = dev_alloc<uint8_t>(count * W2_PER_EXPERT);
  w.w1s = dev_alloc<float>(count * W1S_PER_EXPERT);
  w.w2s = dev_alloc<float>(count * W2S_PER_EXPERT);
  fill_fp8<<<2048, 256, 0, s>>>(w.w1, count * W1_PER_EXPERT, first * W1_PER_EXPERT, seed ^ (SEED_W1 << 56));
  fill_fp8<<<2048, 256, 0, s>>>(w.w2, count * W2_PER_EXPERT, first * W2_PER_EXPERT, seed ^ (SEED_W2 << 56));
  const size_t n1 = count * W1S_PER_EXPERT, n2 = count * W2S_PER_EXPERT;
  fill_uniform_cols<<<256, 256, 0, s>>>(w.w1s, 1, n1, n1, first * W1S_PER_EXPERT, seed ^ (SEED_W1S << 56),
                                        0.5f / sqrtf((float)H), 1.0f / sqrtf((float)H));
  fill_uniform_cols<<<256, 256, 0, s>>>(w.w2s, 1, n2, n2, first * W2S_PER_EXPERT, seed ^ (SEED_W2S << 56),
                                        0.5f / sqrtf((float)I), 1.0f / sqrtf((float)I));
  CUDA_CHECK(cudaGetLastError());
  return w;
}

static void free_weights(weights &w) {
  CUDA_CHECK(cudaFree(w.w1));
  CUDA_CHECK(cudaFree(w.w2));
  CUDA_CHECK(cudaFree(w.w1s));
  CUDA_CHECK(cudaFree(w.w2s));
}

/* Tokens [first, first + T) of the global activations: fp8 rows [T, H] and
 * their scales [H/128, T], out of a global [T_total, H] / [H/128, T_total]. */
static void make_tokens(uint8_t *x, float *xs, size_t first, size_t T, size_t T_total, uint64_t seed,
                        cudaStream_t s) {
  if (T == 0) return;
  fill_fp8<<<1024, 256, 0, s>>>(x, T * H, first * H, seed ^ (SEED_X << 56));
  fill_uniform_cols<<<256, 256, 0, s>>>(xs, H / 128, T, T_total, first, seed ^ (SEED_XS << 56), 0.25f, 1.0f);
  CUDA_CHECK(cudaGetLastError());
}

/* A random top-8 of distinct experts per token, packed (id << 16 | bf16 weight). */
static std::vector<int32_t> random_topk(int T, uint64_t seed) {
  std::vector<int32_t> packed((size_t)T * K);
  uint64_t st = seed * 0x9e3779b97f4a7c15ull + 7;
  for (int t = 0; t < T; t++)
    for (int k = 0; k < K; k++) {
      int e;
      bool dup;
      do {
        e = (int)(mix64(st++) % E);
        dup = false;
        for (int j = 0; j < k; j++) dup |= fp8moe_topk_id(packed[(size_t)t * K + j]) == e;
      } while (dup);
      float w = 0.05f + (float)(mix64(st++) >> 40) / 16777216.0f / K;
      packed[(size_t)t * K + k] = fp8moe_topk_pack(e, w);
    }
  return packed;
}

static double seconds_now(void) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

static float median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0f : v[v.size() / 2];
}

typedef fp8moe_status (*run_routed_fn)(const fp8moe_args *, void *, size_t, fp8moe_stream);

/* The reference: the whole layer (all E experts) on the current GPU for the
 * tokens of `a` (inputs, output set). Makes the full weights, runs 5 + timed
 * times on `ws`, copies the output to `out_host` and frees the weights (the
 * GPU needs the room for its shard); returns the median time in ms. */
static float whole_layer_reference(fp8moe_args a, run_routed_fn run, void *ws, size_t ws_bytes, uint64_t seed,
                                   cudaStream_t s, int timed, uint16_t *out_host) {
  weights full = make_weights(0, E, seed, s);
  a.local_expert_offset = 0;
  a.local_num_experts = E;
  a.w1 = full.w1;
  a.w1_scale = full.w1s;
  a.w2 = full.w2;
  a.w2_scale = full.w2s;
  cudaEvent_t e0, e1;
  CUDA_CHECK(cudaEventCreate(&e0));
  CUDA_CHECK(cudaEventCreate(&e1));
  std::vector<float> ms;
  for (int it = 0; it < 5 + timed; it++) {
    CUDA_CHECK(cudaEventRecord(e0, s));
    MOE_CHECK(run(&a, ws, ws_bytes, s));
    CUDA_CHECK(cudaEventRecord(e1, s));
    CUDA_CHECK(cudaEventSynchronize(e1));
    float m;
    CUDA_CHECK(cudaEventElapsedTime(&m, e0, e1));
    if (it >= 5) ms.push_back(m);
  }
  CUDA_CHECK(cudaMemcpy(out_host, a.output, (size_t)a.num_tokens * H * 2, cudaMemcpyDeviceToHost));
  free_weights(full);
  CUDA_CHECK(cudaEventDestroy(e0));
  CUDA_CHECK(cudaEventDestroy(e1));
  return median(ms);
}

/* Relative L2 error of bf16 got against bf16 ref; counts non-finite values of got. */
static double rel_l2(const uint16_t *got, const uint16_t *ref, size_t n, int *nonfinite) {
  double num = 0, den = 0;
  *nonfinite = 0;
  for (size_t i = 0; i < n; i++) {
    double g = fp8moe_bf16_to_float(got[i]), r = fp8moe_bf16_to_float(ref[i]);
    if (!isfinite(g)) (*nonfinite)++;
    num += (g - r) * (g - r);
    den += r * r;
  }
  return sqrt(num / (den > 0 ? den : 1));
}

} // namespace epx

#endif /* FP8MOE_EXAMPLES_EP_UTIL_CUH */
