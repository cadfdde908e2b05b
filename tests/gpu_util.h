/* tests/gpu_util.h - shared helpers of the GPU tests (CUDA C++ + Criterion).
 *
 * Every GPU test suite uses `.init = fp8moe_test_require_gpu`, so on a
 * machine without a GPU each test is reported as [SKIP], never as passed.
 */
#ifndef FP8MOE_TESTS_GPU_UTIL_H
#define FP8MOE_TESTS_GPU_UTIL_H

#include <criterion/criterion.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline void fp8moe_test_require_gpu(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    (void)cudaGetLastError();
    cr_skip_test("no CUDA device on this machine");
  }
}

#define CUDA_OK(expr)                                                                       \
  do {                                                                                      \
    cudaError_t e_ = (expr);                                                                \
    cr_assert_eq(e_, cudaSuccess, "%s failed: %s", #expr, cudaGetErrorString(e_));          \
  } while (0)

/* splitmix64: fresh random data every run, seed printed on failure. */
typedef struct { uint64_t s; } fp8moe_rng;
static inline uint64_t rng_next(fp8moe_rng *r) {
  uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static inline float rng_uniform(fp8moe_rng *r) { return (float)((rng_next(r) >> 40) * (1.0 / 16777216.0)); } /* [0,1) */
static inline float rng_normal(fp8moe_rng *r) {
  float u1 = rng_uniform(r) + 1e-7f, u2 = rng_uniform(r);
  return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}
static inline uint64_t fp8moe_test_seed(void) {
  const char *s = getenv("FP8MOE_SEED");
  if (s) return strtoull(s, NULL, 0);
  struct timespec ts;
  timespec_get(&ts, TIME_UTC);
  return (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20);
}

/* The largest token count a layer test runs: FP8MOE_TEST_MAX_TOKENS when
 * set (runs under compute-sanitizer, which slows kernels 10-100x:
 * scripts/gpu-sanitize.sh), else no limit. fp8moe_test_skip_tokens says
 * on stderr which counts a test leaves out. */
static inline int fp8moe_test_max_tokens(void) {
  const char *s = getenv("FP8MOE_TEST_MAX_TOKENS");
  const long v = s ? strtol(s, NULL, 10) : 0;
  return v > 0 && v < 0x7fffffffL ? (int)v : 0x7fffffff;
}

static inline bool fp8moe_test_skip_tokens(int T, const char *what) {
  const int cap = fp8moe_test_max_tokens();
  if (T <= cap) return false;
  fprintf(stderr, "[%s] T = %d left out (FP8MOE_TEST_MAX_TOKENS=%d)\n", what, T, cap);
  return true;
}

/* The seed of a test's data, printed so that FP8MOE_SEED=<it> replays it. */
static inline uint64_t fp8moe_test_announce_seed(const char *what) {
  const uint64_t s = fp8moe_test_seed();
  fprintf(stderr, "[%s] seed %llu (FP8MOE_SEED=%llu to replay)\n", what, (unsigned long long)s,
          (unsigned long long)s);
  return s;
}

template <class T>
static inline T *dev_alloc(size_t n) {
  void *p = NULL;
  CUDA_OK(cudaMalloc(&p, n * sizeof(T) > 0 ? n * sizeof(T) : 1));
  return (T *)p;
}
template <class T>
static inline T *dev_upload(const T *h, size_t n) {
  T *d = dev_alloc<T>(n);
  if (n) CUDA_OK(cudaMemcpy(d, h, n * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}
template <class T>
static inline void dev_download(T *h, const T *d, size_t n) {
  if (n) CUDA_OK(cudaMemcpy(h, d, n * sizeof(T), cudaMemcpyDeviceToHost));
}

/* Poison value for bf16 outputs: a NaN pattern the kernels never produce
 * (their NaN is 0x7FFF), so "every element written" is checkable. */
#define FP8MOE_TEST_POISON_BF16 0xFFC1u

/* Relative L2 error ||a-b|| / ||b|| in double. */
static inline double rel_l2(const float *a, const float *b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    double d = (double)a[i] - (double)b[i];
    num += d * d;
    den += (double)b[i] * (double)b[i];
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* The GPU test programs' main: Criterion runs every test (each skips itself
 * without a GPU), and a program whose tests were all skipped for want of a
 * GPU exits 77, which meson reports as SKIP rather than OK. */
int main(int argc, char *argv[]) {
  struct criterion_test_set *tests = criterion_initialize();
  int result = 0;
  if (criterion_handle_args(argc, argv, true)) result = !criterion_run_all_tests(tests);
  criterion_finalize(tests);
  int n = 0;
  if (result == 0 && (cudaGetDeviceCount(&n) != cudaSuccess || n == 0)) return 77;
  return result;
}

#endif
