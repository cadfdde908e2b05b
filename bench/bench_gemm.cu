/* bench/bench_gemm.cu - the grouped FP8 GEMM alone, at the DeepSeek-V3 shapes.
 *
 *   GEMM1  N 4096, K 7168, the SwiGLU + fp8 requantization epilogue
 *   GEMM2  N 7168, K 2048, bf16 store
 *
 * each on 256 groups of R rows (R in 8, 64, 512, 2048 by default), with
 * every tile configuration of the Hopper kernel this file names (the
 * default first, then the default with its CTAs claiming work items from a
 * counter, as in the MoE layer, with and without half tiles in every call,
 * and with tiles of <= 32 or <= 64 rows computed with the operands swapped,
 * FP8MOE_SM90_SWAP_TAIL_ROWS), the portable mma.sync kernel, and cuBLASLt's
 * block-scaled FP8 GEMM as the peer: one cublasLtMatmul per group on the
 * same operands (the weights as operand A with 128x128 scales, the rows as
 * operand B with 1x128 scales), bf16 output; GEMM1's peer has no SwiGLU
 * epilogue (it writes the [R, 4096] product), which is less work than the
 * fused kernel.
 *
 * Each row: median time of --reps runs, TFLOP/s = 2 * rows * N * K / time,
 * the weights' read rate (weight bytes / time), and both set against the
 * floors measured in the same run (the FP8 tensor rate of a dense cuBLASLt
 * 8192^3 GEMM, the device copy rate). The variants of one (GEMM, R) run in
 * turn, one run each per round, each round starting one variant later, so
 * drift and the card's clock hit them alike. Weights are 3.8-7.5 GB, far
 * beyond L2.
 *
 * Checks: every Hopper configuration's output (and GEMM1's output scales)
 * must equal the default configuration's bit for bit, and the portable
 * kernel's and the peer's GEMM2 output must be within 1e-2 relative L2 of
 * it; a failed check marks the row and makes the exit status 1. Where the
 * Hopper kernel cannot run (another GPU, or no sm_90a code in the binary),
 * the portable kernel is the reference.
 *
 * --gemm 3 adds a Mixtral-style GEMM2 (N 4096, K 14336, bf16 store), and
 * --active A gives rows to only A of the 256 groups (evenly spaced), as at
 * decode, where a call touches few experts: DeepSeek-V3 at T = 1 is
 * --active 8 --rows 1.
 *
 * --skip WORD,... leaves out the variants whose name contains one of the
 * words (the default configuration, the checks' reference, always runs):
 * --skip portable,cublaslt,cluster,192,128,64 times the Hopper defaults
 * alone, the quick inner loop.
 *
 * Usage: bench_gemm [--gemm 1,2,3] [--rows 8,64,512,2048] [--active A] [--reps N] [--skip WORD,...]
 *                   [--csv FILE]
 */
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <string>
#include <vector>

#include <fp8moe/detail/gemm/dispatch.cuh>

#include "bench_util.cuh"

using namespace fp8moe::detail;

namespace {

constexpr int G = 256; /* groups: DeepSeek-V3's experts */

typedef fp8moe_status (*launch_fn)(const grouped_gemm_params &, cudaStream_t);

struct variant {
  const char *name;
  launch_fn fn;     /* NULL: the cuBLASLt peer */
  bool same_bits;   /* must equal the default configuration bit for bit */
};

template <int N, int K, epilogue EPI, class CFG>
fp8moe_status launch_sm90(const grouped_gemm_params &p, cudaStream_t s) {
  return gemm_sm90_launch_config<N, K, EPI, CFG>(p, s);
}
/* Words of --skip: variants whose name contains one are not run. */
std::vector<std::string> g_skip;

/* Two device ints, zero between runs (the kernel leaves them so): the
 * work counter of the dynamic-schedule variant. */
int *g_tile_counter = nullptr;
template <int N, int K, epilogue EPI, class CFG>
fp8moe_status launch_sm90_dynamic(const grouped_gemm_params &p, cudaStream_t s) {
  grouped_gemm_params q = p;
  q.tile_counter = g_tile_counter;
  return gemm_sm90_launch_config<N, K, EPI, CFG>(q, s);
}
template <int N, int K, epilogue EPI>
fp8moe_status launch_mma(const grouped_gemm_params &p, cudaStream_t s) {
  return gemm_mma_launch<N, K, EPI>(p, s);
}

/* The Hopper configurations compared (sm90_config: columns per tile, wgmma
 * slices per K block, stages, cluster size, half tiles); the default comes first. */
template <int N, int K, epilogue EPI>
std::vector<variant> variants(bool hopper) {
  using D = typename sm90_tiling<N, EPI>::config;
  if (!hopper) /* no Hopper kernel: the portable one is the reference */
    return {{"portable mma.sync", launch_mma<N, K, EPI>, false}, {"cublaslt (per group)", NULL, false}};
  using S32 = sm90_config<D::bn, D::nsub, D::stages, 1, D::half, 32>;
  using S64 = sm90_config<D::bn, D::nsub, D::stages, 1, D::half, 64>;
  std::vector<variant> v = {{"sm90 default", launch_sm90<N, K, EPI, D>, true},
                            {"sm90 default, dynamic", launch_sm90_dynamic<N, K, EPI, D>, true},
                            {"sm90 dynamic, half tiles always",
                             launch_sm90_dynamic<N, K, EPI, sm90_config<D::bn, D::nsub, D::stages, 1, 2>>, true},
                            {"sm90 dynamic, swapped tails 32", launch_sm90_dynamic<N, K, EPI, S32>, true},
                            {"sm90 dynamic, swapped tails 64", launch_sm90_dynamic<N, K, EPI, S64>, true}};
  v.push_back({"sm90 dynamic, 4 slices of 64 pipelined",
               launch_sm90_dynamic<N, K, EPI, sm90_config<256, 4, 4, 1, D::half, 0, 1>>, true});
  using C2 = sm90_config<256, 2, 4, 2>;
  v.push_back({"sm90 256, cluster 2, dynamic", launch_sm90_dynamic<N, K, EPI, C2>, true});
  if constexpr (EPI == epilogue::swiglu_quant) {
    v.push_back({"sm90 256, no half tiles", launch_sm90<N, K, EPI, sm90_config<256, 2, 4, 1, 0>>, true});
  } else {
    v.push_back({"sm90 256, no half tiles", launch_sm90<N, K, EPI, sm90_config<256, 2, 4, 1, 0>>, true});
    v.push_back({"sm90 256, cluster 2", launch_sm90<N, K, EPI, C2>, true});
    v.push_back({"sm90 192, one batch", launch_sm90<N, K, EPI, sm90_config<192, 1, 5>>, true});
    v.push_back({"sm90 128", launch_sm90<N, K, EPI, sm90_config<128, 1, 6, 1, 1>>, true});
    v.push_back({"sm90 192 x 128, 3 consumer warpgroups, dynamic",
                 launch_sm90_dynamic<N, K, EPI, sm90_config_3wg>, true});
    v.push_back({"sm90 64, 8 stages", launch_sm90<N, K, EPI, sm90_config<64, 1, 8>>, true});
  }
  v.push_back({"portable mma.sync", launch_mma<N, K, EPI>, false});
  v.push_back({"cublaslt (per group)", NULL, false});
  return v;
}

__global__ void count_diff_kernel(const uint8_t *a, const uint8_t *b, size_t n, unsigned long long *out) {
  unsigned long long c = 0;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    c += a[i] != b[i];
  if (c) atomicAdd(out, c);
}

/* Relative L2 distance of two bf16 arrays on the device: sums of (a-b)^2 and b^2. */
__global__ void rel_l2_kernel(const uint16_t *a, const uint16_t *b, size_t n, double *sums) {
  double num = 0, den = 0;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const float x = __uint_as_float((uint32_t)a[i] << 16), y = __uint_as_float((uint32_t)b[i] << 16);
    num += (double)(x - y) * (x - y);
    den += (double)y * y;
  }
  atomicAdd(&sums[0], num);
  atomicAdd(&sums[1], den);
}

/* The peer's 1x128 row scales: [K/128][R] per active group, from fp8moe's [K/128][m_total]. */
__global__ void regroup_scales_kernel(const float *src, float *dst, int groups, int kb, int rows, long long m_total) {
  const long long n = (long long)groups * kb * rows;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const long long g = i / ((long long)kb * rows), rem = i % ((long long)kb * rows);
    const long long k = rem / rows, r = rem % rows;
    dst[i] = src[k * m_total + g * rows + r];
  }
}

struct row_out {
  std::string gemm, variant, note;
  int rows;
  double us, tflops, wGBps, pct_fp8, vs_default;
  bool ok;
};

struct env {
  double copy_Bps, fp8_flops;
};

template <class T>
int dalloc(T **p, size_t n, std::vector<void *> &owned) {
  void *v = NULL;
  BENCH_CUDA(cudaMalloc(&v, n * sizeof(T)));
  owned.push_back(v);
  *p = static_cast<T *>(v);
  return 0;
}

template <int N, int K, epilogue EPI>
int bench_gemm(const char *gname, int R, int active, int reps, bool hopper, const env &E, std::vector<row_out> &out,
               bool *failed) {
  constexpr int KB = K / 128;
  const long long M = (long long)active * R;
  const int spacing = G / active; /* group g has rows when g % spacing == 0 */
  const bool swiglu = EPI == epilogue::swiglu_quant;
  const size_t c_bytes = swiglu ? (size_t)M * (N / 2) : (size_t)M * N * 2;
  const size_t cs_n = swiglu ? (size_t)(N / 256) * M : 0;
  std::vector<void *> owned;
  struct cleanup {
    std::vector<void *> &o;
    ~cleanup() {
      for (void *p : o) cudaFree(p);
    }
  } cl{owned};

  uint8_t *A, *B, *C, *Cref;
  float *as, *bs, *cs = NULL, *cs_ref = NULL, *as_peer;
  uint16_t *Cpeer;
  int *off;
  if (dalloc(&A, (size_t)M * K, owned) || dalloc(&B, (size_t)G * N * K, owned) || dalloc(&as, (size_t)KB * M, owned) ||
      dalloc(&bs, (size_t)G * (N / 128) * KB, owned) || dalloc(&C, c_bytes, owned) || dalloc(&Cref, c_bytes, owned) ||
      dalloc(&off, G + 1, owned) || dalloc(&as_peer, (size_t)KB * M, owned) || dalloc(&Cpeer, (size_t)M * N, owned))
    return -1;
  if (swiglu && (dalloc(&cs, cs_n, owned) || dalloc(&cs_ref, cs_n, owned))) return -1;
  if (bench::fill_e4m3(A, (size_t)M * K, 11 + R, 0) || bench::fill_e4m3(B, (size_t)G * N * K, 12 + N, 0) ||
      bench::fill_uniform(as, (size_t)KB * M, 13, 0.25f, 1.25f, 0) ||
      bench::fill_uniform(bs, (size_t)G * (N / 128) * KB, 14, 0.5f / sqrtf((float)K), 1.5f / sqrtf((float)K), 0))
    return -1;
  std::vector<int> h_off(G + 1);
  for (int g = 0; g <= G; g++) h_off[g] = ((g + spacing - 1) / spacing) * R;
  BENCH_CUDA(cudaMemcpy(off, h_off.data(), (G + 1) * sizeof(int), cudaMemcpyHostToDevice));
  regroup_scales_kernel<<<1024, 256>>>(as, as_peer, active, KB, R, M);
  BENCH_CUDA(cudaGetLastError());

  grouped_gemm_params p;
  p.a = A, p.a_scale = as, p.a_scale_ld = M;
  p.b = B, p.b_scale = bs;
  p.group_offset = off, p.num_groups = G, p.m_total = (int)M;
  p.c = C, p.c_scale = cs, p.c_scale_ld = M;

  /* the peer: one call per group, the heuristic's choice for (N, R, K) */
  cublasLtHandle_t lt;
  BENCH_LT(cublasLtCreate(&lt));
  const size_t ws_bytes = (size_t)32 << 20;
  uint8_t *ws;
  if (dalloc(&ws, ws_bytes, owned)) return -1;
  std::vector<bench::peer_call> calls(active);
  cublasLtMatrixLayout_t la = NULL, lb = NULL, ld = NULL;
  BENCH_LT(cublasLtMatrixLayoutCreate(&la, CUDA_R_8F_E4M3, K, N, K));
  BENCH_LT(cublasLtMatrixLayoutCreate(&lb, CUDA_R_8F_E4M3, K, R, K));
  BENCH_LT(cublasLtMatrixLayoutCreate(&ld, CUDA_R_16BF, N, R, N));
  std::string peer_why;
  for (int j = 0; j < active && peer_why.empty(); j++) {
    const int g = j * spacing; /* the j-th group with rows */
    bench::peer_call &c = calls[j];
    c.a = la, c.b = lb, c.d = ld;
    c.A = B + (size_t)g * N * K;
    c.B = A + (size_t)j * R * K;
    c.D = Cpeer + (size_t)j * R * N;
    if (bench::peer_desc(&c.desc, bs + (size_t)g * (N / 128) * KB, as_peer + (size_t)j * KB * R)) {
      peer_why = "block-scaled descriptor refused";
      break;
    }
    int found = 0;
    if (j == 0) {
      if (bench::peer_algo(lt, c, ws_bytes, &found) || !found) peer_why = "no cuBLASLt algorithm for this shape";
    } else {
      c.algo = calls[0].algo;
    }
  }
  const float one = 1.0f, zero = 0.0f;
  auto run_peer = [&]() -> int {
    for (int j = 0; j < active; j++) {
      const bench::peer_call &c = calls[j];
      BENCH_LT(cublasLtMatmul(lt, c.desc, &one, c.A, c.a, c.B, c.b, &zero, c.D, c.d, c.D, c.d, &c.algo, ws, ws_bytes,
                              0));
    }
    return 0;
  };

  std::vector<variant> V = variants<N, K, EPI>(hopper);
  /* --skip: leave out the variants whose name contains one of the words
   * (never the first, the reference of the checks) */
  for (size_t i = V.size(); i-- > 1;)
    for (const std::string &w : g_skip)
      if (strstr(V[i].name, w.c_str())) {
        V.erase(V.begin() + (long)i);
        break;
      }
  auto run = [&](const variant &v) -> int {
    if (!v.fn) return peer_why.empty() ? run_peer() : 0;
    const fp8moe_status s = v.fn(p, 0);
    if (s != FP8MOE_OK) {
      fprintf(stderr, "bench_gemm: %s: %s\n", v.name, fp8moe_status_string(s));
      return -1;
    }
    return 0;
  };

  /* checks, before timing: the default's output is the reference */
  std::vector<std::string> check(V.size());
  std::vector<bool> ok(V.size(), true);
  unsigned long long *d_cnt;
  double *d_sums;
  if (dalloc(&d_cnt, 1, owned) || dalloc(&d_sums, 2, owned)) return -1;
  for (size_t i = 0; i < V.size(); i++) {
    BENCH_CUDA(cudaMemset(C, 0xFF, c_bytes));
    if (run(V[i])) return -1;
    BENCH_CUDA(cudaDeviceSynchronize());
    if (i == 0) {
      BENCH_CUDA(cudaMemcpy(Cref, C, c_bytes, cudaMemcpyDeviceToDevice));
      if (swiglu) BENCH_CUDA(cudaMemcpy(cs_ref, cs, cs_n * 4, cudaMemcpyDeviceToDevice));
      check[i] = "reference";
      continue;
    }
    if (V[i].same_bits) {
      BENCH_CUDA(cudaMemset(d_cnt, 0, 8));
      count_diff_kernel<<<1024, 256>>>(C, Cref, c_bytes, d_cnt);
      if (swiglu) count_diff_kernel<<<1024, 256>>>((const uint8_t *)cs, (const uint8_t *)cs_ref, cs_n * 4, d_cnt);
      unsigned long long diff = 0;
      BENCH_CUDA(cudaMemcpy(&diff, d_cnt, 8, cudaMemcpyDeviceToHost));
      ok[i] = diff == 0;
      char b[96];
      snprintf(b, sizeof b, diff ? "%llu bytes differ from default" : "same bits as default", diff);
      check[i] = b;
    } else if (!swiglu && (V[i].fn || peer_why.empty())) {
      BENCH_CUDA(cudaMemset(d_sums, 0, 16));
      rel_l2_kernel<<<1024, 256>>>(V[i].fn ? (const uint16_t *)C : Cpeer, (const uint16_t *)Cref, (size_t)M * N,
                                   d_sums);
      double h[2];
      BENCH_CUDA(cudaMemcpy(h, d_sums, 16, cudaMemcpyDeviceToHost));
      const double e = h[1] > 0 ? sqrt(h[0] / h[1]) : NAN;
      ok[i] = e <= 1e-2;
      char b[96];
      snprintf(b, sizeof b, "rel L2 %.2e vs default", e);
      check[i] = b;
    } else {
      check[i] = V[i].fn ? "-" : (peer_why.empty() ? "plain GEMM, no SwiGLU" : peer_why);
    }
  }

  /* timing: rounds of one run per variant, an event pair each */
  const int warm = 2;
  std::vector<std::vector<float>> ms(V.size());
  std::vector<cudaEvent_t> ev(2 * V.size() * (size_t)(reps + warm));
  for (auto &e : ev) BENCH_CUDA(cudaEventCreate(&e));
  /* each round starts at the next variant, so no variant always follows the
   * same one (a long GEMM after a light one finds the card cooler and its
   * clock higher) */
  for (int r = 0; r < reps + warm; r++)
    for (size_t j = 0; j < V.size(); j++) {
      const size_t i = (j + (size_t)r) % V.size();
      const size_t k = 2 * (r * V.size() + i);
      BENCH_CUDA(cudaEventRecord(ev[k], 0));
      if (run(V[i])) return -1;
      BENCH_CUDA(cudaEventRecord(ev[k + 1], 0));
    }
  BENCH_CUDA(cudaDeviceSynchronize());
  for (int r = warm; r < reps + warm; r++)
    for (size_t i = 0; i < V.size(); i++) {
      const size_t k = 2 * (r * V.size() + i);
      float t = 0;
      BENCH_CUDA(cudaEventElapsedTime(&t, ev[k], ev[k + 1]));
      ms[i].push_back(t);
    }
  for (auto &e : ev) cudaEventDestroy(e);

  const double flops = 2.0 * (double)M * N * K;
  const double wbytes = (double)active * ((double)N * K + (double)(N / 128) * KB * 4);
  double t_default = NAN;
  for (size_t i = 0; i < V.size(); i++) {
    row_out o;
    o.gemm = gname;
    o.variant = V[i].name;
    o.rows = R;
    const bool skipped = !V[i].fn && !peer_why.empty();
    o.us = skipped ? NAN : bench::median(ms[i]) * 1e3;
    if (i == 0) t_default = o.us;
    o.tflops = flops / (o.us * 1e-6) / 1e12;
    o.wGBps = wbytes / (o.us * 1e-6) / 1e9;
    o.pct_fp8 = 100.0 * flops / (o.us * 1e-6) / E.fp8_flops;
    o.vs_default = t_default / o.us;
    o.ok = ok[i];
    o.note = check[i];
    if (!ok[i]) *failed = true;
    out.push_back(o);
    printf("%-6s %6d  %-30s %11.1f %8.1f %9.1f %7.1f%% %7.1f%% %6.3f  %s%s\n", gname, R, o.variant.c_str(), o.us,
           o.tflops, o.wGBps, o.pct_fp8, 100.0 * o.wGBps * 1e9 / E.copy_Bps, o.vs_default, ok[i] ? "" : "FAIL ",
           o.note.c_str());
    fflush(stdout);
  }
  for (auto &c : calls)
    if (c.desc) cublasLtMatmulDescDestroy(c.desc);
  cublasLtMatrixLayoutDestroy(la);
  cublasLtMatrixLayoutDestroy(lb);
  cublasLtMatrixLayoutDestroy(ld);
  cublasLtDestroy(lt);
  return 0;
}

std::vector<int> parse_list(const char *s) {
  std::vector<int> v;
  for (const char *q = s; *q;) {
    v.push_back(atoi(q));
    const char *c = strchr(q, ',');
    if (!c) break;
    q = c + 1;
  }
  return v;
}

} // namespace

int main(int argc, char **argv) {
  std::vector<int> gemms = {1, 2}, rows = {8, 64, 512, 2048};
  int reps = 10, active = G;
  const char *csv = NULL;
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    if (a == "--gemm" && i + 1 < argc) gemms = parse_list(argv[++i]);
    else if (a == "--rows" && i + 1 < argc) rows = parse_list(argv[++i]);
    else if (a == "--reps" && i + 1 < argc) reps = atoi(argv[++i]);
    else if (a == "--active" && i + 1 < argc) active = atoi(argv[++i]);
    else if (a == "--csv" && i + 1 < argc) csv = argv[++i];
    else if (a == "--skip" && i + 1 < argc) g_skip = bench::split(argv[++i]);
    else {
      fprintf(stderr, "usage: bench_gemm [--gemm 1,2,3] [--rows 8,64,512,2048] [--active A] [--reps N] "
                      "[--skip WORD,...] [--csv FILE]\n");
      return 2;
    }
  }
  if (active < 1 || active > G || G % active != 0) {
    fprintf(stderr, "bench_gemm: --active must divide %d\n", G);
    return 2;
  }
  if (reps < 1) reps = 1;
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
    printf("bench_gemm: skipped (no CUDA device)\n");
    return 0;
  }
  BENCH_CUDA(cudaMalloc(&g_tile_counter, 2 * sizeof(int)));
  BENCH_CUDA(cudaMemset(g_tile_counter, 0, 2 * sizeof(int)));
  int clock_khz = 0;
  cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0);
  env E;
  double copy_ms, fp8_fast = 0, fp8_slow = 0;
  int n_fast = 0, n_slow = 0;
  if (bench::measure_copy(&E.copy_Bps, &copy_ms)) return 1;
  if (bench::measure_fp8(1, &fp8_fast, &n_fast)) fprintf(stderr, "bench_gemm: FP8 GEMM (fast accumulation) failed\n");
  if (bench::measure_fp8(0, &fp8_slow, &n_slow)) fprintf(stderr, "bench_gemm: FP8 GEMM failed\n");
  E.fp8_flops = fp8_fast > fp8_slow ? fp8_fast : fp8_slow;
  printf("# card: %s, %d SMs, %.0f MB L2, SM clock %d MHz; cuBLASLt %zu\n", prop.name, prop.multiProcessorCount,
         prop.l2CacheSize / 1e6, clock_khz / 1000, cublasLtGetVersion());
  printf("# floors: copy %.0f GB/s; FP8 %.0f TFLOP/s (cuBLASLt 8192^3: %.0f fast-accum, %.0f without)\n",
         E.copy_Bps / 1e9, E.fp8_flops / 1e12, fp8_fast / 1e12, fp8_slow / 1e12);
  /* the Hopper kernels run on cc 9.0 when this binary holds their sm_90a code */
  const bool hopper = prop.major == 9 && prop.minor == 0 && sm90_image_present<7168, 2048, epilogue::store_bf16>();
  if (hopper) { /* how many 2-CTA clusters of the Hopper kernel fit at once (its persistent grid) */
    using C2 = sm90_config<256, 2, 4, 2>;
    auto k = gemm_sm90_e4m3_blockscale_kernel<7168, 2048, epilogue::store_bf16, C2>;
    const int bytes = sm90_smem_layout<C2, epilogue::store_bf16>::dynamic_bytes;
    if (cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) == cudaSuccess)
      printf("# 2-CTA clusters co-resident: %d (of %d SMs)\n", sm90_max_active_clusters<2>(k, C2::threads, bytes),
             prop.multiProcessorCount);
  }
  printf("# %d groups, %d of them with rows; GEMM1 N 4096 K 7168 swiglu_quant, GEMM2 N 7168 K 2048 bf16, MixG2 "
         "(Mixtral-style GEMM2) N 4096 K 14336 bf16; median of %d runs\n",
         G, active, reps);
  printf("%-6s %6s  %-30s %11s %8s %9s %8s %8s %6s  %s\n", "gemm", "rows", "variant", "time_us", "TFLOP/s",
         "weightGB/s", "of fp8", "of copy", "vs def", "check");
  std::vector<row_out> out;
  bool failed = false;
  for (int g : gemms)
    for (int r : rows) {
      if (r < 1) continue;
      const int rc =
          g == 1   ? bench_gemm<4096, 7168, epilogue::swiglu_quant>("GEMM1", r, active, reps, hopper, E, out, &failed)
          : g == 2 ? bench_gemm<7168, 2048, epilogue::store_bf16>("GEMM2", r, active, reps, hopper, E, out, &failed)
                   : bench_gemm<4096, 14336, epilogue::store_bf16>("MixG2", r, active, reps, hopper, E, out, &failed);
      if (rc) {
        fprintf(stderr, "bench_gemm: GEMM%d rows %d failed\n", g, r);
        return 1;
      }
    }
  if (csv) {
    FILE *f = fopen(csv, "w");
    if (!f) {
      perror(csv);
      return 1;
    }
    fprintf(f, "# %s; copy %.0f GB/s; fp8 %.0f TFLOP/s\n", prop.name, E.copy_Bps / 1e9, E.fp8_flops / 1e12);
    fprintf(f, "gemm,rows_per_group,variant,time_us,tflops,weight_GBps,pct_fp8,speed_vs_default,ok,note\n");
    for (const row_out &o : out)
      fprintf(f, "%s,%d,%s,%.2f,%.1f,%.1f,%.1f,%.4f,%d,%s\n", o.gemm.c_str(), o.rows, o.variant.c_str(), o.us,
              o.tflops, o.wGBps, o.pct_fp8, o.vs_default, o.ok ? 1 : 0, o.note.c_str());
    fclose(f);
  }
  printf("# bench_gemm: %s\n", failed ? "FAILED checks (see FAIL rows)" : "all checks passed");
  return failed ? 1 : 0;
}
