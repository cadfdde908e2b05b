/* tests/gpu_test_gemm_sm90.cu - the Hopper grouped FP8 block-scale GEMM
 * (gemm_sm90_e4m3_blockscale.cuh) against a double-precision CPU reference
 * of the gemm_params.cuh contract, on fresh random data (seed printed,
 * FP8MOE_SEED overrides), plus informational timings of the DeepSeek shapes.
 *
 *   nvcc -std=c++17 -O3 -Iinclude -Itests -gencode arch=compute_90a,code=sm_90a \
 *        tests/gpu_test_gemm_sm90.cu -o gpu_test_gemm_sm90 -lcriterion
 *
 * Every test skips on a machine without a GPU and on devices other than
 * compute capability 9.0.
 */
#include <fp8moe/detail/gemm/sm90_e4m3_blockscale.cuh>

#include "gpu_util.h"

#include <algorithm>
#include <chrono>
#include <stdio.h>
#include <thread>
#include <type_traits>
#include <unistd.h>
#include <vector>

using namespace fp8moe::detail;

static void require_sm90(void) {
  fp8moe_test_require_gpu();
  int dev = 0, major = 0, minor = 0;
  CUDA_OK(cudaGetDevice(&dev));
  CUDA_OK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  CUDA_OK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  if (major != 9 || minor != 0) cr_skip_test("the sm90 GEMM needs compute capability 9.0 (found %d.%d)", major, minor);
}

TestSuite(gemm_sm90, .init = require_sm90);

/* A hung kernel (a barrier protocol bug) must fail the test in seconds, not
 * hold the GPU until an outer timeout. */
static void sync_or_die(const char *what) {
  auto t0 = std::chrono::steady_clock::now();
  for (;;) {
    cudaError_t e = cudaStreamQuery(0);
    if (e == cudaSuccess) return;
    if (e != cudaErrorNotReady) cr_assert_fail("%s: %s", what, cudaGetErrorString(e));
    if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(30)) {
      fprintf(stderr, "HANG: %s did not finish in 30 s\n", what);
      fflush(stderr);
      _exit(3);
    }
    usleep(200);
  }
}

/* ---- problem generation ---- */

struct problem {
  int N, K, G, m_total;
  long long a_ld, c_ld;
  std::vector<int> off;          /* [G + 1] */
  std::vector<uint8_t> A, B;     /* [m_total, K], [G, N, K] */
  std::vector<float> a_scale;    /* [K/128, a_ld] */
  std::vector<float> b_scale;    /* [G, N/128, K/128] */
  /* gathered (a_rows non-empty): row m of A is row a_rows[m] of X [x_rows,
   * K] with scales xs [K/128, x_rows]; A and a_scale hold the same rows
   * copied, for the reference and for the copy's run */
  std::vector<int> a_rows;
  std::vector<uint8_t> X;
  std::vector<float> xs;
  int x_rows = 0;
};

/* Uniform random e4m3 codes without the two NaN codes 0x7F and 0xFF. */
static void random_fp8(fp8moe_rng *r, uint8_t *p, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint64_t x = rng_next(r);
    for (int b = 0; b < 8 && i < n; b++, i++) {
      uint8_t v = (uint8_t)(x >> (8 * b));
      if ((v & 0x7F) == 0x7F) v = (uint8_t)(v & 0xFE);
      p[i] = v;
    }
  }
}

/* Groups of the given sizes, `lead` rows before group_offset[0] and `tail`
 * rows after group_offset[G] (rows no group owns: never written). */
static problem make_problem(int N, int K, const std::vector<int> &sizes, int lead, int tail, int a_pad, int c_pad,
                            fp8moe_rng *r) {
  problem P;
  P.N = N;
  P.K = K;
  P.G = (int)sizes.size();
  P.off.resize(P.G + 1);
  P.off[0] = lead;
  for (int g = 0; g < P.G; g++) P.off[g + 1] = P.off[g] + sizes[g];
  P.m_total = P.off[P.G] + tail;
  P.a_ld = P.m_total + a_pad;
  P.c_ld = P.m_total + c_pad;
  P.A.resize((size_t)P.m_total * K);
  P.B.resize((size_t)P.G * N * K);
  random_fp8(r, P.A.data(), P.A.size());
  random_fp8(r, P.B.data(), P.B.size());
  P.a_scale.resize((size_t)(K / 128) * P.a_ld);
  for (auto &s : P.a_scale) s = (0.5f + rng_uniform(r)) / 64.0f;
  P.b_scale.resize((size_t)P.G * (N / 128) * (K / 128));
  for (auto &s : P.b_scale) s = (0.5f + rng_uniform(r)) / 64.0f;
  return P;
}

/* P with its A rows taken from x_rows random source rows (repeats and
 * unused source rows included), as the MoE layer's GEMM1 gathers tokens. */
static problem gathered(problem P, int x_rows, fp8moe_rng *r) {
  const int K = P.K, KB = K / 128;
  P.x_rows = x_rows;
  P.X.resize((size_t)x_rows * K);
  random_fp8(r, P.X.data(), P.X.size());
  P.xs.resize((size_t)KB * x_rows);
  for (auto &s : P.xs) s = (0.5f + rng_uniform(r)) / 64.0f;
  P.a_rows.resize(P.m_total);
  for (int m = 0; m < P.m_total; m++) {
    const int x = (int)(rng_next(r) % (uint64_t)x_rows);
    P.a_rows[m] = x;
    memcpy(P.A.data() + (size_t)m * K, P.X.data() + (size_t)x * K, K);
    for (int kb = 0; kb < KB; kb++) P.a_scale[(size_t)kb * P.a_ld + m] = P.xs[(size_t)kb * x_rows + x];
  }
  return P;
}

/* The same problem run from the copied rows. */
static problem copied(problem P) {
  P.a_rows.clear();
  return P;
}

/* ---- CPU reference, double precision ----
 * C[m, n] = sum_kb a_scale[kb][m] * b_scale[g][n/128][kb] * sum_{k in kb} A[m,k] B[g,n,k]
 * for the rows of each group; other rows are left NaN. */
static std::vector<double> reference_gemm(const problem &P) {
  const int N = P.N, K = P.K, KB = K / 128;
  float lut[256];
  for (int i = 0; i < 256; i++) lut[i] = fp8moe_e4m3_to_float((uint8_t)i);
  std::vector<float> Af((size_t)P.m_total * K);
  for (size_t i = 0; i < Af.size(); i++) Af[i] = lut[P.A[i]];
  std::vector<double> C((size_t)P.m_total * N, NAN);
  int nthreads = (int)std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> pool;
  for (int t = 0; t < nthreads; t++) {
    pool.emplace_back([&, t]() {
      std::vector<float> bf(K);
      for (int n = t; n < N; n += nthreads) {
        for (int g = 0; g < P.G; g++) {
          if (P.off[g + 1] == P.off[g]) continue;
          const uint8_t *brow = P.B.data() + ((size_t)g * N + n) * K;
          for (int k = 0; k < K; k++) bf[k] = lut[brow[k]];
          const float *bs = P.b_scale.data() + ((size_t)g * (N / 128) + n / 128) * KB;
          for (int m = P.off[g]; m < P.off[g + 1]; m++) {
            const float *a = Af.data() + (size_t)m * K;
            double acc = 0;
            for (int kb = 0; kb < KB; kb++) {
              /* fp8 x fp8 products are exact in fp32; sum them in double */
              double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
              for (int k = kb * 128; k < kb * 128 + 128; k += 4) {
                s0 += (double)(a[k] * bf[k]);
                s1 += (double)(a[k + 1] * bf[k + 1]);
                s2 += (double)(a[k + 2] * bf[k + 2]);
                s3 += (double)(a[k + 3] * bf[k + 3]);
              }
              acc += ((s0 + s1) + (s2 + s3)) * (double)P.a_scale[(size_t)kb * P.a_ld + m] * (double)bs[kb];
            }
            C[(size_t)m * N + n] = acc;
          }
        }
      }
    });
  }
  for (auto &th : pool) th.join();
  return C;
}

/* ---- running the kernel ---- */

struct gpu_result {
  std::vector<uint8_t> c;        /* raw output bytes */
  std::vector<float> c_scale;    /* swiglu only */
};

template <int N, int K, epilogue EPI>
static size_t out_bytes(int m_total) {
  if (EPI == epilogue::store_fp32) return (size_t)m_total * N * 4;
  if (EPI == epilogue::store_bf16) return (size_t)m_total * N * 2;
  return (size_t)m_total * (N / 2);
}

/* CFG = void: the default configuration (gemm_sm90_launch). */
template <int N, int K, epilogue EPI, class CFG = void>
static fp8moe_status launch(const grouped_gemm_params &p) {
  if constexpr (std::is_void<CFG>::value) return gemm_sm90_launch<N, K, EPI>(p, 0);
  else return gemm_sm90_launch_config<N, K, EPI, CFG>(p, 0);
}

/* tile_counter: NULL (static schedule), or 2 zeroed device ints (the
 * dynamic one) */
template <int N, int K, epilogue EPI, class CFG = void>
static gpu_result run_gpu(const problem &P, int *tile_counter = nullptr) {
  const bool gather = !P.a_rows.empty();
  uint8_t *dA = gather ? dev_upload(P.X.data(), P.X.size()) : dev_upload(P.A.data(), P.A.size());
  uint8_t *dB = dev_upload(P.B.data(), P.B.size());
  float *dsa = gather ? dev_upload(P.xs.data(), P.xs.size()) : dev_upload(P.a_scale.data(), P.a_scale.size());
  int *drows = gather ? dev_upload(P.a_rows.data(), P.a_rows.size()) : nullptr;
  float *dsb = dev_upload(P.b_scale.data(), P.b_scale.size());
  int *doff = dev_upload(P.off.data(), P.off.size());
  const size_t cb = out_bytes<N, K, EPI>(P.m_total);
  const size_t csn = EPI == epilogue::swiglu_quant ? (size_t)(N / 256) * P.c_ld : 0;
  uint8_t *dC = dev_alloc<uint8_t>(cb);
  float *dCs = dev_alloc<float>(csn);
  CUDA_OK(cudaMemset(dC, 0xFF, cb)); /* poison: NaN patterns the kernel never writes */
  if (csn) CUDA_OK(cudaMemset(dCs, 0xFF, csn * 4));

  grouped_gemm_params p;
  p.a = dA;
  p.a_scale = dsa;
  p.a_scale_ld = gather ? P.x_rows : P.a_ld;
  p.a_rows = drows;
  p.b = dB;
  p.b_scale = dsb;
  p.group_offset = doff;
  p.num_groups = P.G;
  p.m_total = P.m_total;
  p.c = dC;
  p.c_scale = csn ? dCs : NULL;
  p.c_scale_ld = P.c_ld;
  p.tile_counter = tile_counter;
  fp8moe_status s = launch<N, K, EPI, CFG>(p);
  cr_assert_eq(s, FP8MOE_OK, "launch: %s", fp8moe_status_string(s));
  sync_or_die("gemm_sm90");
  CUDA_OK(cudaGetLastError());

  gpu_result r;
  r.c.resize(cb);
  r.c_scale.resize(csn);
  dev_download(r.c.data(), dC, cb);
  dev_download(r.c_scale.data(), dCs, csn);
  cudaFree(dA); cudaFree(dB); cudaFree(dsa); cudaFree(dsb); cudaFree(doff); cudaFree(dC); cudaFree(dCs);
  if (drows) cudaFree(drows);
  return r;
}

static bool in_group(const problem &P, int m) { return m >= P.off[0] && m < P.off[P.G]; }

/* Every element of every group row written, every other row untouched. */
static void check_coverage(const problem &P, const std::vector<uint8_t> &c, size_t row_bytes, size_t elem_bytes) {
  long long unwritten = 0, touched = 0;
  for (int m = 0; m < P.m_total; m++) {
    const uint8_t *row = c.data() + (size_t)m * row_bytes;
    if (in_group(P, m)) {
      for (size_t e = 0; e < row_bytes; e += elem_bytes) {
        bool poison = true;
        for (size_t b = 0; b < elem_bytes; b++) poison = poison && row[e + b] == 0xFF;
        unwritten += poison;
      }
    } else {
      for (size_t b = 0; b < row_bytes; b++) touched += row[b] != 0xFF;
    }
  }
  cr_expect_eq(unwritten, 0, "%lld elements of group rows not written", unwritten);
  cr_expect_eq(touched, 0, "%lld bytes of rows outside every group written", touched);
}

/* ---- store epilogues ---- */

template <int N, int K, epilogue EPI, class CFG = void>
static void check_store(const problem &P, const std::vector<double> &ref, const char *name) {
  gpu_result r1 = run_gpu<N, K, EPI, CFG>(P);
  gpu_result r2 = run_gpu<N, K, EPI, CFG>(P);
  const size_t eb = EPI == epilogue::store_fp32 ? 4 : 2;
  check_coverage(P, r1.c, (size_t)N * eb, eb);
  cr_expect(r1.c == r2.c, "%s: two runs differ", name);

  std::vector<float> got, want;
  long long nonfinite = 0;
  for (int m = P.off[0]; m < P.off[P.G]; m++)
    for (int n = 0; n < N; n++) {
      const size_t i = (size_t)m * N + n;
      float v;
      if (EPI == epilogue::store_fp32) memcpy(&v, r1.c.data() + 4 * i, 4);
      else {
        uint16_t b;
        memcpy(&b, r1.c.data() + 2 * i, 2);
        v = fp8moe_bf16_to_float(b);
      }
      nonfinite += !isfinite(v);
      got.push_back(v);
      want.push_back((float)ref[i]);
    }
  const double err = rel_l2(got.data(), want.data(), got.size());
  /* fp32: the fp8 products are exact and each 128-wide block is promoted
   * into fp32, so what remains is the tensor core's reduced-precision
   * accumulation inside a block plus fp32 rounding: ~1e-4, bound 1e-3.
   * bf16: its 8-bit mantissa alone gives ~1e-3; bound 1e-2. */
  const double tol = EPI == epilogue::store_fp32 ? 1e-3 : 1e-2;
  printf("  %-40s rows %6d  rel_l2 %.3e (tol %.0e)\n", name, P.off[P.G] - P.off[0], err, tol);
  if (!(err <= tol)) {
    int shown = 0;
    for (size_t i = 0; i < got.size() && shown < 8; i++)
      if (fabs(got[i] - want[i]) > 1e-2 * fabs(want[i]) + 1e-3) {
        printf("    mismatch at row %d col %d: got %g want %g\n", P.off[0] + (int)(i / N), (int)(i % N), got[i],
               want[i]);
        shown++;
      }
  }
  cr_expect_eq(nonfinite, 0, "%s: %lld non-finite outputs", name, nonfinite);
  cr_expect(err <= tol, "%s: rel L2 %.3e > %.0e", name, err, tol);
}

/* ---- swiglu_quant ---- */

template <int N, int K, class CFG = void>
static void check_swiglu(const problem &P, const std::vector<double> &ref, const char *name) {
  constexpr int I = N / 2;
  gpu_result r1 = run_gpu<N, K, epilogue::swiglu_quant, CFG>(P);
  gpu_result r2 = run_gpu<N, K, epilogue::swiglu_quant, CFG>(P);
  check_coverage(P, r1.c, (size_t)I, 1);
  cr_expect(r1.c == r2.c && memcmp(r1.c_scale.data(), r2.c_scale.data(), r1.c_scale.size() * 4) == 0,
            "%s: two runs differ", name);

  /* the reference requantizes exactly as the contract says, so dequantized
   * values are compared (fp8 rounding alone is ~3% per element) */
  std::vector<float> got, want;
  long long scale_bad = 0, scale_unwritten = 0, scale_touched = 0;
  double worst_scale = 0;
  std::vector<float> got_s, want_s;
  for (int m = 0; m < P.m_total; m++)
    for (int jb = 0; jb < I / 128; jb++) {
      const float gs = r1.c_scale[(size_t)jb * P.c_ld + m];
      uint32_t gsb;
      memcpy(&gsb, &gs, 4);
      if (!in_group(P, m)) {
        scale_touched += gsb != 0xFFFFFFFFu;
        continue;
      }
      scale_unwritten += gsb == 0xFFFFFFFFu;
      double a[128], amax = 0;
      for (int j = 0; j < 128; j++) {
        const double up = ref[(size_t)m * N + jb * 128 + j], gate = ref[(size_t)m * N + I + jb * 128 + j];
        a[j] = gate / (1.0 + exp(-gate)) * up;
        amax = std::max(amax, fabs(a[j]));
      }
      const float rs = fp8moe_quant_scale((float)amax);
      const double rel = fabs((double)gs - rs) / rs;
      worst_scale = std::max(worst_scale, rel);
      scale_bad += !(rel <= 1e-2);
      got_s.push_back(gs);
      want_s.push_back(rs);
      for (int j = 0; j < 128; j++) {
        const uint8_t q = r1.c[(size_t)m * I + jb * 128 + j];
        got.push_back(fp8moe_e4m3_to_float(q) * gs);
        want.push_back(fp8moe_e4m3_to_float(fp8moe_e4m3_from_float((float)(a[j] / rs))) * rs);
      }
    }
  const double err = rel_l2(got.data(), want.data(), got.size());
  const double serr = rel_l2(got_s.data(), want_s.data(), got_s.size());
  printf("  %-40s rows %6d  rel_l2 %.3e (tol 1e-2)  scales rel_l2 %.2e (tol 1e-3) worst %.2e (tol 1e-2)\n", name,
         P.off[P.G] - P.off[0], err, serr, worst_scale);
  cr_expect_eq(scale_unwritten, 0, "%s: %lld scales not written", name, scale_unwritten);
  cr_expect_eq(scale_touched, 0, "%s: %lld scales outside the groups written", name, scale_touched);
  /* A scale is amax/448 of one row block: it carries the relative error of
   * that block's largest activation, i.e. of two fp32 GEMM outputs (up and
   * gate). Those are ~2e-4 rms relative (the fp8 tensor core's accumulation
   * inside a K block, same as store_fp32), with a tail past 1e-3 on single
   * elements; a wrong row, block or factor is an O(1) error. Hence: rms over
   * all scales <= 1e-3 (the store_fp32 bound), each one within 1e-2. */
  cr_expect(serr <= 1e-3, "%s: scales rel L2 %.2e > 1e-3", name, serr);
  cr_expect_eq(scale_bad, 0, "%s: %lld scales off by more than 1e-2 (worst %.2e)", name, scale_bad, worst_scale);
  cr_expect(err <= 1e-2, "%s: dequantized activations rel L2 %.3e > 1e-2", name, err);
}

static fp8moe_rng seeded(const char *name) {
  const uint64_t seed = fp8moe_test_seed();
  printf("%s: seed %llu (FP8MOE_SEED to replay)\n", name, (unsigned long long)seed);
  fflush(stdout);
  fp8moe_rng r = {seed};
  return r;
}

static std::vector<int> edge_sizes() { return {0, 1, 63, 64, 65, 127, 129, 300}; }

static std::vector<int> random_sizes(fp8moe_rng *r, int G, int max_rows) {
  std::vector<int> s(G);
  for (int g = 0; g < G; g++) s[g] = (rng_next(r) % 4 == 0) ? 0 : (int)(rng_next(r) % (max_rows + 1));
  return s;
}

/* ---- tests ---- */

Test(gemm_sm90, store_fp32_edge_groups) {
  fp8moe_rng r = seeded("store_fp32_edge_groups");
  problem P = make_problem(256, 512, edge_sizes(), 3, 5, 3, 0, &r);
  check_store<256, 512, epilogue::store_fp32>(P, reference_gemm(P), "fp32 N256 K512 G8 edge sizes");
}

Test(gemm_sm90, store_fp32_one_group) {
  fp8moe_rng r = seeded("store_fp32_one_group");
  problem P = make_problem(256, 512, {777}, 0, 0, 0, 0, &r);
  check_store<256, 512, epilogue::store_fp32>(P, reference_gemm(P), "fp32 N256 K512 G1 all rows");
}

Test(gemm_sm90, store_fp32_33_groups) {
  fp8moe_rng r = seeded("store_fp32_33_groups");
  std::vector<int> s = random_sizes(&r, 33, 150);
  problem P = make_problem(384, 256, s, 1, 2, 7, 0, &r);
  check_store<384, 256, epilogue::store_fp32>(P, reference_gemm(P), "fp32 N384 K256 G33 random sizes");
}

Test(gemm_sm90, store_bf16_deepseek_gemm2) {
  fp8moe_rng r = seeded("store_bf16_deepseek_gemm2");
  problem P = make_problem(7168, 2048, {1, 63, 0, 65, 129, 40}, 2, 3, 1, 0, &r);
  std::vector<double> ref = reference_gemm(P);
  check_store<7168, 2048, epilogue::store_bf16>(P, ref, "bf16 N7168 K2048 G6 (default tile)");
  check_store<7168, 2048, epilogue::store_bf16, sm90_config<128, 1, 6>>(P, ref, "bf16 N7168 K2048 G6 (BN=128 tile)");
  check_store<7168, 2048, epilogue::store_fp32>(P, ref, "fp32 N7168 K2048 G6");
}

Test(gemm_sm90, swiglu_edge_groups) {
  fp8moe_rng r = seeded("swiglu_edge_groups");
  problem P = make_problem(512, 256, edge_sizes(), 4, 6, 5, 3, &r);
  check_swiglu<512, 256>(P, reference_gemm(P), "swiglu N512 K256 G8 edge sizes");
}

Test(gemm_sm90, swiglu_33_groups) {
  fp8moe_rng r = seeded("swiglu_33_groups");
  std::vector<int> s = random_sizes(&r, 33, 140);
  problem P = make_problem(768, 384, s, 0, 1, 1, 1, &r);
  check_swiglu<768, 384>(P, reference_gemm(P), "swiglu N768 K384 G33 random sizes");
}

Test(gemm_sm90, swiglu_one_group) {
  fp8moe_rng r = seeded("swiglu_one_group");
  problem P = make_problem(512, 256, {600}, 0, 0, 0, 0, &r);
  check_swiglu<512, 256>(P, reference_gemm(P), "swiglu N512 K256 G1 all rows");
}

Test(gemm_sm90, swiglu_deepseek_gemm1) {
  fp8moe_rng r = seeded("swiglu_deepseek_gemm1");
  problem P = make_problem(4096, 7168, {0, 1, 63, 65, 129, 40, 7, 0}, 1, 2, 3, 2, &r);
  check_swiglu<4096, 7168>(P, reference_gemm(P), "swiglu N4096 K7168 G8 (DeepSeek GEMM1)");
}

/* ---- the other tile configurations ----
 * Every configuration computes each element the same way (the same 4 k32
 * wgmma steps per K block, the same fp32 promotion order), so each must
 * give the default configuration's bits, besides meeting the reference. */

template <int N, int K, epilogue EPI, class CFG, class BASE = void>
static void check_same_bits(const problem &P, const char *name, const problem *base = nullptr) {
  gpu_result d = run_gpu<N, K, EPI, BASE>(base ? *base : P);
  gpu_result c = run_gpu<N, K, EPI, CFG>(P);
  size_t diff = 0;
  for (size_t i = 0; i < d.c.size(); i++) diff += d.c[i] != c.c[i];
  const bool scales_equal = d.c_scale.size() == c.c_scale.size() &&
                            memcmp(d.c_scale.data(), c.c_scale.data(), d.c_scale.size() * 4) == 0;
  printf("  %-52s %zu of %zu output bytes differ from the %s\n", name, diff, d.c.size(),
         base ? "copied rows" : std::is_void<BASE>::value ? "default tile" : "row-split tile");
  cr_expect_eq(diff, 0, "%s: %zu output bytes differ", name, diff);
  cr_expect(scales_equal, "%s: output scales differ", name);
}

using cfg_n192 = sm90_config<192, 1, 5>;           /* one m64n192 batch per K block */
using cfg_cl2 = sm90_config<256, 2, 4, 2>;         /* the default tile in clusters of 2 */
using cfg_128_cl2 = sm90_config<128, 1, 6, 2>;
using cfg_256_half = sm90_config<256, 2, 4, 1, 2>; /* tiles of <= 64 rows split by columns, always */
using cfg_128_half = sm90_config<128, 1, 6, 1, 2>;
using cfg_256_full = sm90_config<256, 2, 4, 1, 0>; /* every tile split by rows */
using cfg_128_full = sm90_config<128, 1, 6, 1, 0>;
using cfg_64 = sm90_config<64, 1, 8>;              /* narrow store tiles: more CTAs for decode-sized calls */
using cfg_256_swap32 = sm90_config<256, 2, 4, 1, 0, 32>; /* tiles of <= 32 rows with the operands swapped */
using cfg_256_swap64 = sm90_config<256, 2, 4, 1, 0, 64>;
using cfg_128_swap32 = sm90_config<128, 1, 6, 1, 0, 32>;
using cfg_256_pipe = sm90_config<256, 4, 4, 1, 1, 0, 1>; /* 4 slices of 64, two temporaries, pipelined */
using cfg_3wg = sm90_config_3wg; /* 192 x 128 tiles, three consumer warpgroups */

Test(gemm_sm90, store_tile_configs) {
  fp8moe_rng r = seeded("store_tile_configs");
  /* N = 7168 is not a multiple of 192: the last 192-column tile is partial */
  problem P = make_problem(7168, 2048, {1, 63, 0, 65, 129, 40, 200}, 2, 3, 1, 0, &r);
  std::vector<double> ref = reference_gemm(P);
  check_store<7168, 2048, epilogue::store_bf16, cfg_n192>(P, ref, "bf16 N7168 K2048 BN=192");
  check_same_bits<7168, 2048, epilogue::store_bf16, cfg_n192>(P, "bf16 N7168 K2048 BN=192");
  /* clusters: pairs of m-tiles of one group (200 rows) share the weight
   * tile, pairs across groups and the odd last tile do not */
  check_store<7168, 2048, epilogue::store_bf16, cfg_cl2>(P, ref, "bf16 N7168 K2048 cluster 2");
  check_same_bits<7168, 2048, epilogue::store_bf16, cfg_cl2>(P, "bf16 N7168 K2048 cluster 2");
  check_same_bits<7168, 2048, epilogue::store_bf16, cfg_128_half>(P, "bf16 N7168 K2048 BN=128");
  check_store<7168, 2048, epilogue::store_bf16, cfg_64>(P, ref, "bf16 N7168 K2048 BN=64");
  check_same_bits<7168, 2048, epilogue::store_bf16, cfg_64>(P, "bf16 N7168 K2048 BN=64");
  /* 384 = 2 x 192: tiles start 0 and 64 columns into a scale block */
  std::vector<int> s = random_sizes(&r, 33, 150);
  problem Q = make_problem(384, 256, s, 1, 2, 7, 0, &r);
  std::vector<double> refq = reference_gemm(Q);
  check_store<384, 256, epilogue::store_fp32, cfg_n192>(Q, refq, "fp32 N384 K256 G33 BN=192");
  check_same_bits<384, 256, epilogue::store_fp32, cfg_n192>(Q, "fp32 N384 K256 G33 BN=192");
  check_store<384, 256, epilogue::store_fp32, cfg_128_cl2>(Q, refq, "fp32 N384 K256 G33 BN=128 cluster 2");
  check_same_bits<384, 256, epilogue::store_fp32, cfg_128_cl2>(Q, "fp32 N384 K256 G33 BN=128 cluster 2");
  check_store<384, 256, epilogue::store_fp32, cfg_64>(Q, refq, "fp32 N384 K256 G33 BN=64");
  check_same_bits<384, 256, epilogue::store_fp32, cfg_64>(Q, "fp32 N384 K256 G33 BN=64");
  /* one big group: every pair shares its weight tile */
  problem R1 = make_problem(384, 256, {1000}, 0, 0, 0, 0, &r);
  check_store<384, 256, epilogue::store_fp32, cfg_128_cl2>(R1, reference_gemm(R1), "fp32 N384 K256 G1 BN=128 cluster 2");
}

/* half tiles: decode-sized groups and groups' short last tiles */
Test(gemm_sm90, half_tiles) {
  fp8moe_rng r = seeded("half_tiles");
  problem P = make_problem(7168, 2048, {1, 63, 0, 64, 65, 129, 40, 200, 7}, 2, 3, 1, 0, &r);
  std::vector<double> ref = reference_gemm(P);
  check_store<7168, 2048, epilogue::store_bf16, cfg_256_half>(P, ref, "bf16 N7168 K2048 half tiles");
  check_same_bits<7168, 2048, epilogue::store_bf16, cfg_256_half, cfg_256_full>(P, "bf16 N7168 K2048 half tiles");
  check_same_bits<7168, 2048, epilogue::store_fp32, cfg_128_half, cfg_128_full>(P, "fp32 N7168 K2048 BN=128 half tiles");
  problem S = make_problem(512, 256, edge_sizes(), 4, 6, 5, 3, &r);
  check_swiglu<512, 256, cfg_256_half>(S, reference_gemm(S), "swiglu N512 K256 G8 edge sizes, half tiles");
  check_same_bits<512, 256, epilogue::swiglu_quant, cfg_256_half, cfg_256_full>(S, "swiglu N512 K256 G8 half tiles");
  problem Q = make_problem(4096, 7168, {0, 1, 63, 64, 65, 129, 40, 7, 0, 190}, 1, 2, 3, 2, &r);
  check_swiglu<4096, 7168, cfg_256_half>(Q, reference_gemm(Q), "swiglu N4096 K7168 half tiles");
  check_same_bits<4096, 7168, epilogue::swiglu_quant, cfg_256_half, cfg_256_full>(Q, "swiglu N4096 K7168 half tiles");
  /* many 1..64-row groups, small K (fewer K blocks than stages) */
  std::vector<int> small = random_sizes(&r, 40, 64);
  problem D = make_problem(512, 256, small, 0, 1, 1, 1, &r);
  check_swiglu<512, 256, cfg_256_half>(D, reference_gemm(D), "swiglu N512 K256 G40 <= 64 rows, half tiles");
  check_same_bits<512, 256, epilogue::swiglu_quant, cfg_256_half, cfg_256_full>(D, "swiglu N512 K256 G40 half tiles");
}

/* swapped tails: tiles of <= 32 (or 64) rows with the weights on wgmma M
 * and the rows on N; every size around the limits, both epilogues */
Test(gemm_sm90, swapped_tails) {
  fp8moe_rng r = seeded("swapped_tails");
  problem P = make_problem(7168, 2048, {1, 31, 32, 33, 0, 64, 65, 129, 160, 161, 7}, 2, 3, 1, 0, &r);
  std::vector<double> ref = reference_gemm(P);
  check_store<7168, 2048, epilogue::store_bf16, cfg_256_swap32>(P, ref, "bf16 N7168 K2048 swapped tails 32");
  check_same_bits<7168, 2048, epilogue::store_bf16, cfg_256_swap32, cfg_256_full>(P, "bf16 N7168 K2048 swapped 32");
  check_store<7168, 2048, epilogue::store_bf16, cfg_256_swap64>(P, ref, "bf16 N7168 K2048 swapped tails 64");
  check_same_bits<7168, 2048, epilogue::store_bf16, cfg_256_swap64, cfg_256_full>(P, "bf16 N7168 K2048 swapped 64");
  check_same_bits<7168, 2048, epilogue::store_fp32, cfg_128_swap32, cfg_128_full>(P,
                                                                                  "fp32 N7168 K2048 BN=128 swapped 32");
  problem S = make_problem(512, 256, edge_sizes(), 4, 6, 5, 3, &r);
  check_swiglu<512, 256, cfg_256_swap32>(S, reference_gemm(S), "swiglu N512 K256 G8 edge sizes, swapped 32");
  check_same_bits<512, 256, epilogue::swiglu_quant, cfg_256_swap32, cfg_256_full>(S, "swiglu N512 K256 G8 swapped 32");
  problem Q = make_problem(4096, 7168, {0, 1, 31, 32, 33, 63, 64, 129, 40, 7, 0, 190}, 1, 2, 3, 2, &r);
  check_swiglu<4096, 7168, cfg_256_swap32>(Q, reference_gemm(Q), "swiglu N4096 K7168 swapped 32");
  check_same_bits<4096, 7168, epilogue::swiglu_quant, cfg_256_swap32, cfg_256_full>(Q, "swiglu N4096 K7168 swapped 32");
  check_swiglu<4096, 7168, cfg_256_swap64>(Q, reference_gemm(Q), "swiglu N4096 K7168 swapped 64");
  check_same_bits<4096, 7168, epilogue::swiglu_quant, cfg_256_swap64, cfg_256_full>(Q, "swiglu N4096 K7168 swapped 64");
}

/* the pipelined main loop (two temporaries, FP8MOE_SM90_PIPELINE) gives the
 * default tile's bits: groups of every size around the tile edges, K of 2
 * blocks (fewer than the stages) and of 56, both epilogues */
Test(gemm_sm90, pipelined_slices) {
  fp8moe_rng r = seeded("pipelined_slices");
  problem P = make_problem(7168, 2048, {1, 63, 0, 65, 129, 40, 200}, 2, 3, 1, 0, &r);
  check_store<7168, 2048, epilogue::store_bf16, cfg_256_pipe>(P, reference_gemm(P), "bf16 N7168 K2048 pipelined");
  check_same_bits<7168, 2048, epilogue::store_bf16, cfg_256_pipe>(P, "bf16 N7168 K2048 pipelined");
  problem S = make_problem(512, 256, edge_sizes(), 4, 6, 5, 3, &r);
  check_swiglu<512, 256, cfg_256_pipe>(S, reference_gemm(S), "swiglu N512 K256 G8 edge sizes, pipelined");
  check_same_bits<512, 256, epilogue::swiglu_quant, cfg_256_pipe>(S, "swiglu N512 K256 G8 pipelined");
  problem Q = make_problem(4096, 7168, {0, 1, 63, 65, 129, 40, 7, 0, 190}, 1, 2, 3, 2, &r);
  check_swiglu<4096, 7168, cfg_256_pipe>(Q, reference_gemm(Q), "swiglu N4096 K7168 pipelined");
  check_same_bits<4096, 7168, epilogue::swiglu_quant, cfg_256_pipe>(Q, "swiglu N4096 K7168 pipelined");
}

/* three consumer warpgroups on 192-row tiles (store epilogues): groups of
 * every size around the 64-row warpgroup and 192-row tile edges, the
 * default tile's bits */
Test(gemm_sm90, three_consumer_warpgroups) {
  fp8moe_rng r = seeded("three_consumer_warpgroups");
  problem P = make_problem(7168, 2048, {1, 63, 0, 64, 65, 128, 129, 191, 192, 193, 40, 400}, 2, 3, 1, 0, &r);
  check_store<7168, 2048, epilogue::store_bf16, cfg_3wg>(P, reference_gemm(P), "bf16 N7168 K2048 3 warpgroups");
  check_same_bits<7168, 2048, epilogue::store_bf16, cfg_3wg>(P, "bf16 N7168 K2048 3 warpgroups");
  std::vector<int> s = random_sizes(&r, 33, 450);
  problem Q = make_problem(384, 256, s, 1, 2, 7, 0, &r);
  check_store<384, 256, epilogue::store_fp32, cfg_3wg>(Q, reference_gemm(Q), "fp32 N384 K256 G33 3 warpgroups");
  check_same_bits<384, 256, epilogue::store_fp32, cfg_3wg>(Q, "fp32 N384 K256 G33 3 warpgroups");
}

Test(gemm_sm90, swiglu_tile_configs) {
  fp8moe_rng r = seeded("swiglu_tile_configs");
  problem P = make_problem(512, 256, edge_sizes(), 4, 6, 5, 3, &r);
  check_same_bits<512, 256, epilogue::swiglu_quant, cfg_cl2>(P, "swiglu N512 K256 G8 cluster 2");
  problem Q = make_problem(4096, 7168, {0, 1, 63, 65, 129, 40, 7, 0}, 1, 2, 3, 2, &r);
  check_swiglu<4096, 7168, cfg_cl2>(Q, reference_gemm(Q), "swiglu N4096 K7168 G8, cluster 2");
  check_same_bits<4096, 7168, epilogue::swiglu_quant, cfg_cl2>(Q, "swiglu N4096 K7168 G8 cluster 2");
}

/* Work items claimed from a counter (the MoE layer's schedule): the same
 * bits as the static schedule, on calls with many more items than SMs, and
 * the counter is zero again after each call, so it serves the next. */
template <int N, int K, epilogue EPI, class CFG = void>
static void check_dynamic(const problem &P, int *counter, const char *name) {
  gpu_result d = run_gpu<N, K, EPI>(P);
  for (int round = 0; round < 2; round++) {
    gpu_result c = run_gpu<N, K, EPI, CFG>(P, counter);
    size_t diff = 0;
    for (size_t i = 0; i < d.c.size(); i++) diff += d.c[i] != c.c[i];
    const bool scales_equal = memcmp(d.c_scale.data(), c.c_scale.data(), d.c_scale.size() * 4) == 0;
    int left[2] = {-1, -1};
    dev_download(left, counter, 2);
    printf("  %-52s round %d: %zu of %zu output bytes differ from the static schedule; counter left at %d, %d\n",
           name, round, diff, d.c.size(), left[0], left[1]);
    cr_expect_eq(diff, 0, "%s: %zu output bytes differ", name, diff);
    cr_expect(scales_equal, "%s: output scales differ", name);
    cr_expect(left[0] == 0 && left[1] == 0, "%s: counter left at %d, %d", name, left[0], left[1]);
  }
}

Test(gemm_sm90, dynamic_schedule) {
  fp8moe_rng r = seeded("dynamic_schedule");
  int *counter = dev_alloc<int>(2);
  CUDA_OK(cudaMemset(counter, 0, 2 * sizeof(int)));
  /* more items than SMs (small K, so the sanitizers get through them):
   * 64 groups of 0..400 rows, 4 column tiles each; 48 swiglu groups */
  problem P = make_problem(1024, 512, random_sizes(&r, 64, 400), 2, 3, 1, 0, &r);
  check_store<1024, 512, epilogue::store_bf16>(P, reference_gemm(P), "bf16 N1024 K512 G64");
  check_dynamic<1024, 512, epilogue::store_bf16>(P, counter, "bf16 N1024 K512 G64 dynamic");
  problem Q = make_problem(2048, 1024, random_sizes(&r, 48, 300), 1, 2, 3, 2, &r);
  check_dynamic<2048, 1024, epilogue::swiglu_quant>(Q, counter, "swiglu N2048 K1024 G48 dynamic");
  /* fewer items than SMs: no claim succeeds */
  problem D = make_problem(512, 256, edge_sizes(), 4, 6, 5, 3, &r);
  check_dynamic<512, 256, epilogue::swiglu_quant>(D, counter, "swiglu N512 K256 G8 dynamic");
  cudaFree(counter);
}

/* Clusters with claimed items: rank 0 claims each pair of m-tiles and
 * hands the claim to rank 1 (claim ring in rank 1's shared memory); the
 * bits are the static default's, and the counter is left at zero. K = 256
 * (2 K blocks, fewer than the stages) lets rank 0 run the furthest ahead. */
Test(gemm_sm90, cluster_dynamic_schedule) {
  fp8moe_rng r = seeded("cluster_dynamic_schedule");
  int *counter = dev_alloc<int>(2);
  CUDA_OK(cudaMemset(counter, 0, 2 * sizeof(int)));
  problem P = make_problem(1024, 512, random_sizes(&r, 64, 400), 2, 3, 1, 0, &r);
  check_dynamic<1024, 512, epilogue::store_bf16, cfg_cl2>(P, counter, "bf16 N1024 K512 G64 cluster 2 dynamic");
  problem Q = make_problem(2048, 1024, random_sizes(&r, 48, 300), 1, 2, 3, 2, &r);
  check_dynamic<2048, 1024, epilogue::swiglu_quant, cfg_cl2>(Q, counter, "swiglu N2048 K1024 G48 cluster 2 dynamic");
  problem S = make_problem(384, 256, random_sizes(&r, 33, 700), 1, 2, 7, 0, &r);
  check_dynamic<384, 256, epilogue::store_fp32, cfg_128_cl2>(S, counter, "fp32 N384 K256 G33 BN=128 cluster 2 dynamic");
  problem D = make_problem(512, 256, edge_sizes(), 4, 6, 5, 3, &r);
  check_dynamic<512, 256, epilogue::swiglu_quant, cfg_cl2>(D, counter, "swiglu N512 K256 G8 cluster 2 dynamic");
  cudaFree(counter);
}

/* A gathered by row (params.cuh, a_rows; the MoE layer's GEMM1 with
 * FP8MOE_GATHER_A): the producer's gather warps copy the rows instead of
 * TMA. The reference, and the same bits as the run from copied rows, for
 * full, partial, half and swapped tiles. */
Test(gemm_sm90, gathered_rows) {
  fp8moe_rng r = seeded("gathered_rows");
  problem P = gathered(make_problem(512, 256, edge_sizes(), 4, 6, 5, 3, &r), 37, &r);
  const problem C = copied(P);
  check_swiglu<512, 256>(P, reference_gemm(P), "swiglu N512 K256 G8 edge sizes, gathered");
  check_same_bits<512, 256, epilogue::swiglu_quant, void>(P, "swiglu N512 K256 gathered", &C);
  check_same_bits<512, 256, epilogue::swiglu_quant, cfg_256_half>(P, "swiglu N512 K256 gathered, half tiles", &C);
  check_same_bits<512, 256, epilogue::swiglu_quant, cfg_256_swap32>(P, "swiglu N512 K256 gathered, swapped", &C);
  std::vector<int> s = random_sizes(&r, 33, 150);
  problem Q = gathered(make_problem(384, 256, s, 1, 2, 7, 0, &r), 500, &r);
  const problem QC = copied(Q);
  check_store<384, 256, epilogue::store_fp32>(Q, reference_gemm(Q), "fp32 N384 K256 G33, gathered");
  check_same_bits<384, 256, epilogue::store_fp32, void>(Q, "fp32 N384 K256 G33 gathered", &QC);
  check_same_bits<384, 256, epilogue::store_fp32, cfg_3wg>(Q, "fp32 N384 K256 G33 gathered, 3 warpgroups", &QC);
  /* the DeepSeek-V3 GEMM1 shape, one source row per 8 rows (top-8 routing) */
  problem D = gathered(make_problem(4096, 7168, {0, 1, 63, 65, 129, 40, 7, 0, 300}, 1, 2, 3, 2, &r), 76, &r);
  const problem DC = copied(D);
  check_same_bits<4096, 7168, epilogue::swiglu_quant, void>(D, "swiglu N4096 K7168 gathered", &DC);
}

Test(gemm_sm90, no_rows_and_empty_calls) {
  fp8moe_rng r = seeded("no_rows_and_empty_calls");
  /* every group empty: nothing may be written */
  problem P = make_problem(256, 256, {0, 0, 0, 0, 0}, 4, 6, 0, 0, &r);
  gpu_result g = run_gpu<256, 256, epilogue::store_fp32>(P);
  check_coverage(P, g.c, 256 * 4, 4);
  /* m_total == 0: OK, nothing launched, no pointer touched */
  grouped_gemm_params p;
  /* every field zero / NULL (the defaults) */
  p.num_groups = 3;
  fp8moe_status st = gemm_sm90_launch<256, 256, epilogue::store_fp32>(p, 0);
  cr_expect_eq(st, FP8MOE_OK, "m_total == 0: %s", fp8moe_status_string(st));
  CUDA_OK(cudaDeviceSynchronize());
}

/* The dispatcher takes this path only when the loaded image holds the real
 * sm_90a kernel: this binary is built with sm_90a, so on cc 9.0 the check
 * must say yes for the DeepSeek-V3 GEMMs (else the layer would silently run
 * the portable path). */
Test(gemm_sm90, dispatcher_sees_sm90a_image) {
  using namespace fp8moe::detail;
  cr_assert((sm90_image_present<4096, 7168, epilogue::swiglu_quant>()), "GEMM1 sm_90a image not detected");
  cr_assert((sm90_image_present<7168, 2048, epilogue::store_bf16>()), "GEMM2 sm_90a image not detected");
}
