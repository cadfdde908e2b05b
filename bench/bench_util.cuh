/* bench/bench_util.cuh - small helpers of the benchmark: error checks, random
 * data made on the GPU, event timing, cuBLASLt status names.
 *
 * Everything here is `static`, so each translation unit gets its own copy and
 * the kernels never clash at link time.
 */
#ifndef FP8MOE_BENCH_UTIL_CUH
#define FP8MOE_BENCH_UTIL_CUH

#include <cuda_runtime.h>
#include <cublasLt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <algorithm>
#include <vector>

/* Report a failed CUDA call and return -1 from the enclosing int function. */
#define BENCH_CUDA(x)                                                                                  \
  do {                                                                                                 \
    cudaError_t e_ = (x);                                                                              \
    if (e_ != cudaSuccess) {                                                                           \
      fprintf(stderr, "bench: %s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));       \
      return -1;                                                                                       \
    }                                                                                                  \
  } while (0)

#define BENCH_LT(x)                                                                                    \
  do {                                                                                                 \
    cublasStatus_t s_ = (x);                                                                           \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                                                 \
      fprintf(stderr, "bench: %s:%d: %s: cuBLAS status %d\n", __FILE__, __LINE__, #x, (int)s_);        \
      return -1;                                                                                       \
    }                                                                                                  \
  } while (0)

namespace bench {

/* splitmix64, the generator of the tests (tests/gpu_util.h). */
static inline __host__ __device__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
struct rng {
  uint64_t s;
  uint64_t next() { return mix64(s += 0x9e3779b97f4a7c15ull); }
  float uniform() { return (float)((next() >> 40) * (1.0 / 16777216.0)); } /* [0, 1) */
  float normal() {
    float u1 = uniform() + 1e-7f, u2 = uniform();
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
  }
};

/* Random e4m3 codes: random sign, exponent field 3..10, random mantissa, so
 * |v| is in [2^-4, 15] and never zero or NaN (timing on zeros flatters). */
static __global__ void fill_e4m3_kernel(uint8_t *p, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    uint64_t z = mix64(seed + i * 0x9e3779b97f4a7c15ull);
    p[i] = (uint8_t)(((z & 1) << 7) | ((3 + ((z >> 1) & 7)) << 3) | ((z >> 4) & 7));
  }
}

/* Uniform fp32 in [lo, hi). */
static __global__ void fill_uniform_kernel(float *p, size_t n, uint64_t seed, float lo, float hi) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    uint64_t z = mix64(seed + i * 0x9e3779b97f4a7c15ull);
    p[i] = lo + (hi - lo) * (float)((z >> 40) * (1.0 / 16777216.0));
  }
}

static inline int fill_e4m3(void *p, size_t n, uint64_t seed, cudaStream_t s) {
  if (n == 0) return 0;
  fill_e4m3_kernel<<<2048, 256, 0, s>>>(static_cast<uint8_t *>(p), n, seed);
  BENCH_CUDA(cudaGetLastError());
  return 0;
}

static inline int fill_uniform(float *p, size_t n, uint64_t seed, float lo, float hi, cudaStream_t s) {
  if (n == 0) return 0;
  fill_uniform_kernel<<<1024, 256, 0, s>>>(p, n, seed, lo, hi);
  BENCH_CUDA(cudaGetLastError());
  return 0;
}

/* Time `reps` runs of f(i) (i = warmup, warmup+1, ...) after `warmup` untimed
 * ones, an event pair around each run, no host synchronization between runs.
 * f returns 0 on success. Milliseconds per run go to `ms`. */
template <class F>
static int time_runs(F f, int warmup, int reps, cudaStream_t s, std::vector<float> &ms) {
  for (int i = 0; i < warmup; i++)
    if (f(i)) return -1;
  std::vector<cudaEvent_t> ev(2 * (size_t)reps);
  for (auto &e : ev) BENCH_CUDA(cudaEventCreate(&e));
  int rc = 0;
  for (int i = 0; i < reps && !rc; i++) {
    BENCH_CUDA(cudaEventRecord(ev[2 * i], s));
    rc = f(warmup + i);
    BENCH_CUDA(cudaEventRecord(ev[2 * i + 1], s));
  }
  BENCH_CUDA(cudaStreamSynchronize(s));
  ms.clear();
  for (int i = 0; i < reps && !rc; i++) {
    float t = 0;
    BENCH_CUDA(cudaEventElapsedTime(&t, ev[2 * i], ev[2 * i + 1]));
    ms.push_back(t);
  }
  for (auto &e : ev) cudaEventDestroy(e);
  return rc;
}

/* Largest power of two (<= 256) dividing a pointer: what cuBLASLt's
 * MIN_ALIGNMENT preferences ask for. */
static inline uint32_t ptr_alignment(const void *p) {
  uintptr_t v = (uintptr_t)p;
  uint32_t a = 256;
  while (a > 1 && (v % a)) a >>= 1;
  return a;
}

/* bf16 bits -> float on the host. */
static inline float bf16f(uint16_t b) {
  uint32_t u = (uint32_t)b << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* Relative L2 distance ||a - b|| / ||b|| of two bf16 arrays; NaN if either has
 * a NaN or Inf. */
static inline double rel_l2_bf16(const std::vector<uint16_t> &a, const std::vector<uint16_t> &b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    double x = bf16f(a[i]), y = bf16f(b[i]);
    if (!isfinite(x) || !isfinite(y)) return NAN;
    num += (x - y) * (x - y);
    den += y * y;
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

} // namespace bench

#endif /* FP8MOE_BENCH_UTIL_CUH */
