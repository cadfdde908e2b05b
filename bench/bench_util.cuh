/* bench/bench_util.cuh - small helpers of the benchmark: error checks, random
 * data made on the GPU, event timing, the cuBLASLt block-scaled call of the
 * peers, and the two floors (copy bandwidth, FP8 tensor rate).
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
#include <string>
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

/* The non-empty words of a comma-separated command-line list. */
static inline std::vector<std::string> split(const char *s) {
  std::vector<std::string> out;
  std::string cur;
  for (const char *p = s;; p++) {
    if (*p == ',' || *p == 0) {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
      if (!*p) break;
    } else {
      cur += *p;
    }
  }
  return out;
}

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

/* time_runs over CUDA graphs: graph j holds one run of f(j) (j < n),
 * captured once; timed run i replays graph i % n. What serving engines do at
 * decode: the host's launch cost is left out of the time. */
template <class F>
static int time_graph_runs(F f, int n, int warmup, int reps, cudaStream_t s, std::vector<float> &ms) {
  std::vector<cudaGraphExec_t> exec((size_t)n, nullptr);
  int rc = 0;
  for (int j = 0; j < n && !rc; j++) {
    cudaGraph_t g = nullptr;
    BENCH_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    rc = f(j);
    BENCH_CUDA(cudaStreamEndCapture(s, &g));
    if (!rc) BENCH_CUDA(cudaGraphInstantiate(&exec[j], g, 0));
    cudaGraphDestroy(g);
  }
  if (!rc)
    rc = time_runs([&](int i) { return cudaGraphLaunch(exec[i % n], s) == cudaSuccess ? 0 : -1; }, warmup, reps, s,
                   ms);
  for (cudaGraphExec_t e : exec)
    if (e) cudaGraphExecDestroy(e);
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


/* Median of a vector (copied, sorted); NaN when empty. */
static inline double median(std::vector<float> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * ((double)v[n / 2 - 1] + v[n / 2]);
}

/* ---- cuBLASLt's block-scaled FP8 GEMM (the peers) ---- */

struct peer_call {
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t a, b, d;
  cublasLtMatmulAlgo_t algo;
  const void *A, *B;
  void *D;
};

/* A block-scaled TN descriptor: A = weights (128x128), B = activations (1x128). */
static cublasStatus_t peer_desc(cublasLtMatmulDesc_t *d, const float *a_scale, const float *b_scale) {
  cublasStatus_t st = cublasLtMatmulDescCreate(d, CUBLAS_COMPUTE_32F, CUDA_R_32F);
  if (st != CUBLAS_STATUS_SUCCESS) return st;
  cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  int32_t am = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, bm = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
  if ((st = cublasLtMatmulDescSetAttribute(*d, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta))) return st;
  if ((st = cublasLtMatmulDescSetAttribute(*d, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb))) return st;
  if ((st = cublasLtMatmulDescSetAttribute(*d, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &am, sizeof am))) return st;
  if ((st = cublasLtMatmulDescSetAttribute(*d, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &bm, sizeof bm))) return st;
  if ((st = cublasLtMatmulDescSetAttribute(*d, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a_scale, sizeof a_scale)))
    return st;
  return cublasLtMatmulDescSetAttribute(*d, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &b_scale, sizeof b_scale);
}

/* The heuristic's first choice for this call, with the pointers' real
 * alignments declared; *found = 0 when it offers none. */
static cublasStatus_t peer_algo(cublasLtHandle_t lt, peer_call &c, size_t ws_bytes, int *found) {
  cublasLtMatmulPreference_t pref;
  cublasStatus_t st = cublasLtMatmulPreferenceCreate(&pref);
  if (st != CUBLAS_STATUS_SUCCESS) return st;
  uint32_t al[4] = {ptr_alignment(c.A), ptr_alignment(c.B), ptr_alignment(c.D), ptr_alignment(c.D)};
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof ws_bytes);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al[0], 4);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al[1], 4);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al[2], 4);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al[3], 4);
  cublasLtMatmulHeuristicResult_t res;
  memset(&res, 0, sizeof res);
  *found = 0;
  st = cublasLtMatmulAlgoGetHeuristic(lt, c.desc, c.a, c.b, c.d, c.d, pref, 1, &res, found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st == CUBLAS_STATUS_SUCCESS && *found > 0) c.algo = res.algo;
  if (st == CUBLAS_STATUS_NOT_SUPPORTED) { *found = 0; st = CUBLAS_STATUS_SUCCESS; }
  return st;
}

/* ---- the floors: measured at start-up, in the same process, on the same card ---- */

static int measure_copy(double *Bps, double *ms_out) {
  const size_t bytes = (size_t)2 << 30;
  void *a = NULL, *b = NULL;
  BENCH_CUDA(cudaMalloc(&a, bytes));
  BENCH_CUDA(cudaMalloc(&b, bytes));
  if (bench::fill_e4m3(a, bytes, 12345, 0)) return -1;
  std::vector<float> ms;
  auto copy = [&](int) -> int {
    BENCH_CUDA(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, 0));
    return 0;
  };
  if (bench::time_runs(copy, 2, 10, 0, ms)) return -1;
  const double med = median(ms);
  *ms_out = med;
  *Bps = 2.0 * (double)bytes / (med * 1e-3);
  cudaFree(a);
  cudaFree(b);
  return 0;
}

/* FP8 e4m3 GEMM n^3 through cuBLASLt; *flops = best median rate over the
 * heuristic's candidates; *algos = how many were tried. */
static int measure_fp8(int fast_accum, double *flops, int *algos) {
  const int n = 8192;
  const size_t ab = (size_t)n * n;
  void *A = NULL, *B = NULL, *D = NULL, *ws = NULL;
  const size_t ws_bytes = (size_t)64 << 20;
  BENCH_CUDA(cudaMalloc(&A, ab));
  BENCH_CUDA(cudaMalloc(&B, ab));
  BENCH_CUDA(cudaMalloc(&D, ab * 2));
  BENCH_CUDA(cudaMalloc(&ws, ws_bytes));
  if (bench::fill_e4m3(A, ab, 777, 0) || bench::fill_e4m3(B, ab, 778, 0)) return -1;
  cublasLtHandle_t lt;
  BENCH_LT(cublasLtCreate(&lt));
  cublasLtMatmulDesc_t desc;
  BENCH_LT(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  int8_t fa = (int8_t)fast_accum;
  BENCH_LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  BENCH_LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  BENCH_LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fa, sizeof fa));
  cublasLtMatrixLayout_t la, lb, ld;
  BENCH_LT(cublasLtMatrixLayoutCreate(&la, CUDA_R_8F_E4M3, n, n, n));
  BENCH_LT(cublasLtMatrixLayoutCreate(&lb, CUDA_R_8F_E4M3, n, n, n));
  BENCH_LT(cublasLtMatrixLayoutCreate(&ld, CUDA_R_16BF, n, n, n));
  cublasLtMatmulPreference_t pref;
  BENCH_LT(cublasLtMatmulPreferenceCreate(&pref));
  BENCH_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes,
                                                sizeof ws_bytes));
  cublasLtMatmulHeuristicResult_t res[8];
  int found = 0;
  BENCH_LT(cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, ld, ld, pref, 8, res, &found));
  const float one = 1.0f, zero = 0.0f;
  double best_ms = INFINITY;
  int best = -1;
  for (int pass = 0; pass < 2; pass++) {
    /* pass 0: 3 runs of each candidate; pass 1: 20 runs of the fastest */
    for (int i = 0; i < found; i++) {
      if (pass == 1 && i != best) continue;
      std::vector<float> ms;
      auto run = [&](int) -> int {
        BENCH_LT(cublasLtMatmul(lt, desc, &one, A, la, B, lb, &zero, D, ld, D, ld, &res[i].algo, ws, ws_bytes, 0));
        return 0;
      };
      if (bench::time_runs(run, 2, pass ? 20 : 3, 0, ms)) continue;
      double m = median(ms);
      if (pass == 0 && m < best_ms) best_ms = m, best = i;
      if (pass == 1) best_ms = m;
    }
    if (best < 0) break;
  }
  *algos = found;
  *flops = best >= 0 ? 2.0 * n * (double)n * n / (best_ms * 1e-3) : NAN;
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatrixLayoutDestroy(la);
  cublasLtMatrixLayoutDestroy(lb);
  cublasLtMatrixLayoutDestroy(ld);
  cublasLtMatmulDescDestroy(desc);
  cublasLtDestroy(lt);
  cudaFree(A), cudaFree(B), cudaFree(D), cudaFree(ws);
  return best >= 0 ? 0 : -1;
}
} // namespace bench

#endif /* FP8MOE_BENCH_UTIL_CUH */
