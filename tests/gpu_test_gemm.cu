/* tests/gpu_test_gemm.cu - the portable grouped FP8 block-scale GEMM
 * (gemm_mma_e4m3_blockscale.cuh) and the standalone component
 * (grouped_gemm.h / grouped_gemm.cuh) against a CPU reference.
 *
 * The reference is written here, in double, straight from gemm_params.cuh:
 * the sum over one 128-wide K block of fp8 x fp8 products is exact in double
 * (each product is a multiple of 2^-18 below 2^18, 128 of them need < 45
 * bits), then scaled by a_scale * b_scale and summed over blocks. The
 * swiglu_quant reference rounds that result to fp32 (what the kernel holds in
 * its accumulators) and follows SPEC 2.3-2.4 in fp32: silu(g) = g/(1+expf(-g)),
 * a = silu(gate) * up, scale = max(amax/448, FLT_MIN), q = sat_e4m3(a/scale).
 *
 * Inputs are fresh random fp8 bytes (no NaN codes) and positive scales every
 * run; the seed is printed, FP8MOE_SEED replays it. Outputs are poisoned
 * before each launch, so "every row of every group written" and "rows of no
 * group untouched" are checked bit for bit, and two launches must agree bit
 * for bit.
 *
 * Build alone: nvcc -std=c++17 -O3 -Iinclude -Itests \
 *   -gencode arch=compute_90a,code=sm_90a tests/gpu_test_gemm.cu -o gpu_test_gemm -lcriterion
 */
#include <fp8moe/grouped_gemm.cuh>

#include <algorithm>
#include <thread>
#include <vector>

#include "gpu_util.h"

using fp8moe::detail::epilogue;
using fp8moe::detail::grouped_gemm_params;

/* Two instantiations of the public component in one translation unit. */
FP8MOE_DEFINE_GROUPED_GEMM(gg_small, 256, 128);
FP8MOE_DEFINE_GROUPED_GEMM(gg_mid, 512, 384);

/* ---- tolerances ----
 * store_fp32: the GPU sums each block's 128 exact products in the tensor
 * core (fp32, or f16 products widened exactly, on sm_90/100) and promotes in
 * fp32: a few fp32 roundings per block, ~1e-6 relative, against an exact
 * reference. 1e-3 leaves room for the tensor core's truncating internal
 * accumulation while still catching any wrong scale, block, row or column
 * (those give errors of order 1).
 * store_bf16: dominated by the final bf16 rounding (2^-9 max, ~1.6e-3 rms).
 * swiglu_quant: GEMM rounding differences flip a few e4m3 roundings by one
 * step (up to 1/8 relative) on a small fraction of elements.
 * Scales: amax/448 of the same fp32 values: GEMM-rounding close. */
static const double TOL_FP32 = 1e-3, TOL_BF16 = 1e-2, TOL_ACT = 1e-2, TOL_SCALE = 1e-3;

static const uint32_t POISON_FP32 = 0x7FA5A5A5u; /* a NaN the kernel never writes */
static const uint8_t POISON_FP8 = 0xFF;          /* e4m3 NaN; satfinite never yields it */

static uint64_t test_seed(const char *what) {
  uint64_t s = fp8moe_test_seed();
  fprintf(stderr, "[gpu_test_gemm] %s: seed = 0x%llx (set FP8MOE_SEED to replay)\n", what, (unsigned long long)s);
  return s;
}

template <class F>
static void parallel_for(int n, F f) {
  unsigned nt = std::thread::hardware_concurrency();
  if (nt == 0) nt = 1;
  if (nt > 32) nt = 32;
  if ((int)nt > n) nt = n > 0 ? (unsigned)n : 1u;
  std::vector<std::thread> th;
  for (unsigned t = 0; t < nt; ++t)
    th.emplace_back([&, t] {
      for (int i = (int)t; i < n; i += (int)nt) f(i);
    });
  for (auto &x : th) x.join();
}

/* ---- problem: random grouped GEMM ---- */

struct problem {
  int N, K, G, M; /* M = num_rows = m_total */
  std::vector<int> off;
  std::vector<uint8_t> a, b;
  std::vector<float> sa, sb; /* [K/128][M], [G][N/128][K/128] */
  /* gathered (rows non-empty): row m of A is row rows[m] of x [x_rows, K]
   * with scales xs [K/128][x_rows]; a and sa hold the same rows copied,
   * for the reference */
  std::vector<int> rows;
  std::vector<uint8_t> x;
  std::vector<float> xs;
  int x_rows = 0;
};

static void random_fp8(fp8moe_rng *r, std::vector<uint8_t> &v) {
  for (size_t i = 0; i < v.size(); i += 8) {
    uint64_t x = rng_next(r);
    for (size_t j = 0; j < 8 && i + j < v.size(); ++j) {
      uint8_t c = (uint8_t)(x >> (8 * j));
      if ((c & 0x7f) == 0x7f) c ^= 1; /* NaN codes 0x7F/0xFF -> +-448 */
      v[i + j] = c;
    }
  }
}

static problem make_problem(int N, int K, const std::vector<int> &sizes, int pad_before, int pad_after,
                            fp8moe_rng *r) {
  problem P;
  P.N = N;
  P.K = K;
  P.G = (int)sizes.size();
  P.off.resize(P.G + 1);
  P.off[0] = pad_before;
  for (int g = 0; g < P.G; ++g) P.off[g + 1] = P.off[g] + sizes[g];
  P.M = P.off[P.G] + pad_after;
  P.a.resize((size_t)P.M * K);
  P.b.resize((size_t)P.G * N * K);
  random_fp8(r, P.a);
  random_fp8(r, P.b);
  const int KB = K / 128;
  /* random e4m3 bytes have rms ~100; these scales keep C around 1-10, the
   * range where silu is neither linear nor zero */
  P.sa.resize((size_t)KB * P.M);
  P.sb.resize((size_t)P.G * (N / 128) * KB);
  for (auto &s : P.sa) s = (0.5f + rng_uniform(r)) * (1.0f / 256);
  for (auto &s : P.sb) s = (0.5f + rng_uniform(r)) * (1.0f / 256) / sqrtf((float)KB);
  return P;
}

/* P's A rows taken from x_rows random source rows (the MoE layer's GEMM1
 * gathering tokens: params.cuh, a_rows) */
static void gather_rows(problem &P, int x_rows, fp8moe_rng *r) {
  const int K = P.K, KB = K / 128;
  P.x_rows = x_rows;
  P.x.resize((size_t)x_rows * K);
  random_fp8(r, P.x);
  P.xs.resize((size_t)KB * x_rows);
  for (auto &s : P.xs) s = (0.5f + rng_uniform(r)) * (1.0f / 256);
  P.rows.resize(P.M);
  for (int m = 0; m < P.M; ++m) {
    const int i = (int)(rng_next(r) % (uint64_t)x_rows);
    P.rows[m] = i;
    memcpy(P.a.data() + (size_t)m * K, P.x.data() + (size_t)i * K, K);
    for (int kb = 0; kb < KB; ++kb) P.sa[(size_t)kb * P.M + m] = P.xs[(size_t)kb * x_rows + i];
  }
}

/* double reference of C for the rows of every group; other rows stay 0 */
static void reference_gemm(const problem &P, std::vector<double> &C) {
  const int N = P.N, K = P.K, KB = K / 128, M = P.M;
  float lut[256];
  for (int i = 0; i < 256; ++i) lut[i] = fp8moe_e4m3_to_float((uint8_t)i);
  std::vector<float> af((size_t)M * K);
  for (size_t i = 0; i < af.size(); ++i) af[i] = lut[P.a[i]];
  C.assign((size_t)M * N, 0.0);
  parallel_for(N, [&](int n) {
    std::vector<float> bf(K);
    for (int g = 0; g < P.G; ++g) {
      if (P.off[g + 1] <= P.off[g]) continue;
      const uint8_t *brow = &P.b[((size_t)g * N + n) * K];
      for (int k = 0; k < K; ++k) bf[k] = lut[brow[k]];
      const float *sb = &P.sb[((size_t)g * (N / 128) + n / 128) * KB];
      for (int m = P.off[g]; m < P.off[g + 1]; ++m) {
        const float *ar = &af[(size_t)m * K];
        double c = 0;
        for (int kb = 0; kb < KB; ++kb) {
          double s0 = 0, s1 = 0, s2 = 0, s3 = 0; /* exact: any order */
          for (int k = kb * 128; k < kb * 128 + 128; k += 4) {
            s0 += (double)(ar[k] * bf[k]); /* fp8 x fp8 is exact in fp32 */
            s1 += (double)(ar[k + 1] * bf[k + 1]);
            s2 += (double)(ar[k + 2] * bf[k + 2]);
            s3 += (double)(ar[k + 3] * bf[k + 3]);
          }
          c += ((s0 + s1) + (s2 + s3)) * ((double)P.sa[(size_t)kb * M + m] * (double)sb[kb]);
        }
        C[(size_t)m * N + n] = c;
      }
    }
  });
}

/* SwiGLU + requant of the reference, SPEC 2.3-2.4 in fp32 */
static void reference_swiglu(const problem &P, const std::vector<double> &C, std::vector<uint8_t> &q,
                             std::vector<float> &scale) {
  const int N = P.N, I = N / 2, M = P.M;
  q.assign((size_t)M * I, 0);
  scale.assign((size_t)(I / 128) * M, 0.f);
  for (int m = P.off[0]; m < P.off[P.G]; ++m)
    for (int jb = 0; jb < I / 128; ++jb) {
      float act[128], amax = 0.f;
      for (int j = 0; j < 128; ++j) {
        const float up = (float)C[(size_t)m * N + jb * 128 + j];
        const float gate = (float)C[(size_t)m * N + I + jb * 128 + j];
        act[j] = gate / (1.0f + expf(-gate)) * up;
        amax = fmaxf(amax, fabsf(act[j]));
      }
      const float s = fp8moe_quant_scale(amax);
      scale[(size_t)jb * M + m] = s;
      for (int j = 0; j < 128; ++j) q[(size_t)m * I + jb * 128 + j] = fp8moe_e4m3_from_float(act[j] / s);
    }
}

/* ---- device side ---- */

struct dev_problem {
  uint8_t *a, *b;
  float *sa, *sb;
  int *off, *rows;
};

static dev_problem upload(const problem &P) {
  const bool gather = !P.rows.empty();
  dev_problem d;
  d.a = gather ? dev_upload(P.x.data(), P.x.size()) : dev_upload(P.a.data(), P.a.size());
  d.b = dev_upload(P.b.data(), P.b.size());
  d.sa = gather ? dev_upload(P.xs.data(), P.xs.size()) : dev_upload(P.sa.data(), P.sa.size());
  d.rows = gather ? dev_upload(P.rows.data(), P.rows.size()) : nullptr;
  d.sb = dev_upload(P.sb.data(), P.sb.size());
  d.off = dev_upload(P.off.data(), P.off.size());
  return d;
}

static void release(dev_problem &d) {
  cudaFree(d.a);
  cudaFree(d.b);
  cudaFree(d.sa);
  cudaFree(d.sb);
  cudaFree(d.off);
  if (d.rows) cudaFree(d.rows);
}

static grouped_gemm_params params_of(const problem &P, const dev_problem &d) {
  grouped_gemm_params p;
  p.a = d.a;
  p.a_scale = d.sa;
  p.a_scale_ld = d.rows ? P.x_rows : P.M;
  p.a_rows = d.rows;
  p.b = d.b;
  p.b_scale = d.sb;
  p.group_offset = d.off;
  p.num_groups = P.G;
  p.m_total = P.M;
  p.c = NULL;
  p.c_scale = NULL;
  p.c_scale_ld = P.M;
  return p;
}

static bool in_groups(const problem &P, int m) { return m >= P.off[0] && m < P.off[P.G]; }

/* A store result (bf16 or fp32 bits in `out`, two launches in out/out2):
 * poison and finiteness row by row, then the relative L2 error. */
static void check_store(const char *what, const problem &P, bool bf16, const std::vector<uint8_t> &out,
                        const std::vector<uint8_t> &out2, const std::vector<double> &C) {
  cr_assert(out == out2, "%s: two launches differ", what);
  const int N = P.N;
  std::vector<float> got, ref;
  for (int m = 0; m < P.M; ++m)
    for (int n = 0; n < N; ++n) {
      const size_t i = (size_t)m * N + n;
      uint32_t bits;
      float v;
      if (bf16) {
        uint16_t h;
        memcpy(&h, &out[2 * i], 2);
        bits = h;
        v = fp8moe_bf16_to_float(h);
      } else {
        memcpy(&bits, &out[4 * i], 4);
        memcpy(&v, &bits, 4);
      }
      const uint32_t poison = bf16 ? FP8MOE_TEST_POISON_BF16 : POISON_FP32;
      if (!in_groups(P, m)) {
        cr_assert_eq(bits, poison, "%s: row %d (outside every group) written at col %d", what, m, n);
        continue;
      }
      cr_assert_neq(bits, poison, "%s: row %d col %d not written", what, m, n);
      cr_assert(isfinite(v), "%s: row %d col %d not finite (%g)", what, m, n, (double)v);
      got.push_back(v);
      ref.push_back((float)C[i]);
    }
  const double e = rel_l2(got.data(), ref.data(), got.size());
  const double tol = bf16 ? TOL_BF16 : TOL_FP32;
  fprintf(stderr, "[gpu_test_gemm] %-44s rows %5d  rel_l2 %.3e (tol %.0e)\n", what, P.off[P.G] - P.off[0], e, tol);
  cr_assert(e <= tol, "%s: rel L2 error %.3e > %.0e", what, e, tol);
}

typedef fp8moe_status (*launch_fn)(const grouped_gemm_params &, cudaStream_t, bool);

/* Every tile variant of the kernel, whatever the heuristic would pick (the
 * public-component test goes through the heuristic): 64 x 128, 16 x 128, and
 * for the store epilogues 16 x 64. */
template <int N, int K, epilogue EPI>
struct variants {
  static constexpr int count = EPI == epilogue::swiglu_quant ? 2 : 3;
  static launch_fn fn(int i) {
    if constexpr (EPI != epilogue::swiglu_quant)
      if (i == 2) return fp8moe::detail::gemm_mma_launch_bm<N, K, EPI, 16, 64>;
    return i == 0 ? fp8moe::detail::gemm_mma_launch_bm<N, K, EPI, 64> : fp8moe::detail::gemm_mma_launch_bm<N, K, EPI, 16>;
  }
  static const char *name(int i) { return i == 0 ? "BM=64" : i == 1 ? "BM=16" : "BM=16 BN=64"; }
};

/* Each case runs every variant three times: without a work counter, then
 * twice with one, from which the kernel claims its tiles (unless built with
 * FP8MOE_MMA_CLAIMED=0, as gpu_test_gemm_static is; the second run needs
 * the first to have left the counter at zero). All three must give the
 * same bits, and the counter must be zero again. */
static const int RUNS = 3;
static int32_t *new_counter(void) {
  int32_t *c = dev_alloc<int32_t>(2);
  CUDA_OK(cudaMemset(c, 0, 2 * sizeof(int32_t)));
  return c;
}
static void check_counter_left(const char *what, const int32_t *counter) {
  int32_t left[2] = {-1, -1};
  dev_download(left, counter, 2);
  cr_assert(left[0] == 0 && left[1] == 0, "%s: tile counter left at %d, %d", what, left[0], left[1]);
}

/* Run a store epilogue with each tile variant (static, then claimed twice),
 * check against C. */
template <int N, int K, epilogue EPI>
static void run_store_case(const char *what_, const std::vector<int> &sizes, int pad_before, int pad_after,
                           fp8moe_rng *r, int gather = 0) {
  static_assert(EPI != epilogue::swiglu_quant, "store epilogues only");
  const bool bf16 = EPI == epilogue::store_bf16;
  problem P = make_problem(N, K, sizes, pad_before, pad_after, r);
  if (gather) gather_rows(P, gather, r);
  dev_problem d = upload(P);
  std::vector<double> C;
  reference_gemm(P, C);
  const size_t esz = bf16 ? 2 : 4, bytes = (size_t)P.M * N * esz;
  std::vector<uint8_t> poison(bytes), out(bytes), out2(bytes);
  for (size_t i = 0; i < bytes; i += esz) {
    if (bf16) {
      uint16_t h = FP8MOE_TEST_POISON_BF16;
      memcpy(&poison[i], &h, 2);
    } else {
      memcpy(&poison[i], &POISON_FP32, 4);
    }
  }
  uint8_t *c = dev_upload(poison.data(), bytes);
  int32_t *counter = new_counter();
  grouped_gemm_params p = params_of(P, d);
  p.c = c;
  for (int v = 0; v < variants<N, K, EPI>::count; ++v) {
    char what[160];
    snprintf(what, sizeof what, "%s %s", what_, variants<N, K, EPI>::name(v));
    for (int run = 0; run < RUNS; ++run) {
      CUDA_OK(cudaMemcpy(c, poison.data(), bytes, cudaMemcpyHostToDevice));
      p.tile_counter = run > 0 ? counter : nullptr;
      fp8moe_status s = variants<N, K, EPI>::fn(v)(p, 0, false);
      cr_assert_eq(s, FP8MOE_OK, "%s: %s", what, fp8moe_status_string(s));
      CUDA_OK(cudaDeviceSynchronize());
      dev_download(run ? out2.data() : out.data(), c, bytes);
      if (run > 0) cr_assert(out2 == out, "%s: launch %d (claimed tiles) differs from the static order", what, run);
    }
    check_counter_left(what, counter);
    check_store(what, P, bf16, out, out2, C);
  }
  cudaFree(counter);
  cudaFree(c);
  release(d);
}

template <int N, int K>
static void run_swiglu_case(const char *what_, const std::vector<int> &sizes, int pad_before, int pad_after,
                            fp8moe_rng *r, int gather = 0) {
  constexpr int I = N / 2;
  typedef variants<N, K, epilogue::swiglu_quant> V;
  problem P = make_problem(N, K, sizes, pad_before, pad_after, r);
  if (gather) gather_rows(P, gather, r);
  dev_problem d = upload(P);
  std::vector<double> C;
  reference_gemm(P, C);
  std::vector<uint8_t> qr;
  std::vector<float> sr;
  reference_swiglu(P, C, qr, sr);
  const size_t qn = (size_t)P.M * I, sn = (size_t)(I / 128) * P.M;
  std::vector<uint8_t> qpoison(qn, POISON_FP8), q(qn), q2(qn);
  std::vector<float> spoison(sn), s(sn), s2(sn);
  for (auto &x : spoison) memcpy(&x, &POISON_FP32, 4);
  uint8_t *dq = dev_upload(qpoison.data(), qn);
  float *ds = dev_upload(spoison.data(), sn);
  int32_t *counter = new_counter();
  grouped_gemm_params p = params_of(P, d);
  p.c = dq;
  p.c_scale = ds;
  p.c_scale_ld = P.M;
  for (int v = 0; v < V::count; ++v) {
    char what[160];
    snprintf(what, sizeof what, "%s %s", what_, V::name(v));
    for (int run = 0; run < RUNS; ++run) {
      CUDA_OK(cudaMemcpy(dq, qpoison.data(), qn, cudaMemcpyHostToDevice));
      CUDA_OK(cudaMemcpy(ds, spoison.data(), sn * 4, cudaMemcpyHostToDevice));
      p.tile_counter = run > 0 ? counter : nullptr;
      fp8moe_status st = V::fn(v)(p, 0, false);
      cr_assert_eq(st, FP8MOE_OK, "%s: %s", what, fp8moe_status_string(st));
      CUDA_OK(cudaDeviceSynchronize());
      dev_download(run ? q2.data() : q.data(), dq, qn);
      dev_download(run ? s2.data() : s.data(), ds, sn);
      if (run > 0)
        cr_assert(q == q2 && memcmp(s.data(), s2.data(), sn * 4) == 0,
                  "%s: launch %d (claimed tiles) differs from the static order", what, run);
    }
    check_counter_left(what, counter);

    std::vector<float> got, ref;
    double worst_scale = 0;
    for (int m = 0; m < P.M; ++m) {
      const bool in = in_groups(P, m);
      for (int jb = 0; jb < I / 128; ++jb) {
        const size_t si = (size_t)jb * P.M + m;
        uint32_t sbits;
        memcpy(&sbits, &s[si], 4);
        if (!in) {
          cr_assert_eq(sbits, POISON_FP32, "%s: scale of row %d (outside every group) written", what, m);
          continue;
        }
        cr_assert(isfinite(s[si]) && s[si] > 0, "%s: scale row %d block %d not written / not positive", what, m, jb);
        worst_scale = std::max(worst_scale, fabs((double)s[si] - sr[si]) / sr[si]);
      }
      for (int j = 0; j < I; ++j) {
        const size_t i = (size_t)m * I + j;
        if (!in) {
          cr_assert_eq(q[i], POISON_FP8, "%s: row %d (outside every group) written at col %d", what, m, j);
          continue;
        }
        cr_assert_neq(q[i], POISON_FP8, "%s: row %d col %d not written", what, m, j);
        got.push_back(fp8moe_e4m3_to_float(q[i]) * s[(size_t)(j / 128) * P.M + m]);
        ref.push_back(fp8moe_e4m3_to_float(qr[i]) * sr[(size_t)(j / 128) * P.M + m]);
      }
    }
    const double e = rel_l2(got.data(), ref.data(), got.size());
    fprintf(stderr, "[gpu_test_gemm] %-44s rows %5d  rel_l2 %.3e (tol %.0e)  scale max rel %.2e\n", what,
            P.off[P.G] - P.off[0], e, TOL_ACT, worst_scale);
    cr_assert(e <= TOL_ACT, "%s: activation rel L2 error %.3e > %.0e", what, e, TOL_ACT);
    cr_assert(worst_scale <= TOL_SCALE, "%s: scale rel error %.3e > %.0e", what, worst_scale, TOL_SCALE);
  }
  cudaFree(counter);
  cudaFree(dq);
  cudaFree(ds);
  release(d);
}

/* ---- group layouts ---- */

/* the edge sizes of the brief, shuffled: empty, 1, around 64 and 128 */
static std::vector<int> edge_sizes(fp8moe_rng *r) {
  std::vector<int> s = {0, 1, 63, 64, 65, 127, 129, 300};
  for (int i = (int)s.size() - 1; i > 0; --i) std::swap(s[i], s[(int)(rng_next(r) % (uint64_t)(i + 1))]);
  return s;
}

/* 33 groups, random sizes in [0, 300], at least 4 empty, one at each end */
static std::vector<int> many_sizes(fp8moe_rng *r) {
  std::vector<int> s(33);
  for (auto &x : s) x = (int)(rng_next(r) % 301);
  s[0] = 0;
  s[32] = 0;
  s[1 + rng_next(r) % 31] = 0;
  s[1 + rng_next(r) % 31] = 0;
  s[1 + rng_next(r) % 31] = 0;
  s[1 + rng_next(r) % 31] = 1;
  return s;
}

/* 33 decode-sized groups (mean < 32 rows: the heuristic picks 16-row
 * tiles): random sizes in [0, 20] plus the edges of a 16-row tile */
static std::vector<int> small_sizes(fp8moe_rng *r) {
  std::vector<int> s(33);
  for (auto &x : s) x = (int)(rng_next(r) % 21);
  const int edges[] = {0, 1, 15, 16, 17, 31, 32, 33};
  for (int i = 0; i < 8; ++i) s[(size_t)(i * 4 + rng_next(r) % 4)] = edges[i];
  return s;
}

/* G = 1 (all rows one group, no padding), G = 8 (edge sizes, padding rows
 * before and after), G = 33 (many tiles per CTA, empty groups), G = 33
 * small groups */
#define FP8MOE_T_LAYOUTS(RUN, tag)                                                \
  do {                                                                           \
    RUN(tag " G=1 rows=300", std::vector<int>{300}, 0, 0, &r);                   \
    RUN(tag " G=8 edge sizes", edge_sizes(&r), 5, 7, &r);                        \
    RUN(tag " G=33 random sizes", many_sizes(&r), 3, 64, &r);                    \
    RUN(tag " G=33 small sizes", small_sizes(&r), 1, 2, &r);                     \
  } while (0)

TestSuite(gemm_mma, .init = fp8moe_test_require_gpu, .timeout = 900);

Test(gemm_mma, store_fp32_small_shapes) {
  fp8moe_rng r = {test_seed("store_fp32_small_shapes")};
  FP8MOE_T_LAYOUTS((run_store_case<256, 128, epilogue::store_fp32>), "fp32 N=256 K=128");
  FP8MOE_T_LAYOUTS((run_store_case<512, 384, epilogue::store_fp32>), "fp32 N=512 K=384");
}

Test(gemm_mma, store_bf16_small_shapes) {
  fp8moe_rng r = {test_seed("store_bf16_small_shapes")};
  FP8MOE_T_LAYOUTS((run_store_case<256, 128, epilogue::store_bf16>), "bf16 N=256 K=128");
  FP8MOE_T_LAYOUTS((run_store_case<512, 384, epilogue::store_bf16>), "bf16 N=512 K=384");
}

Test(gemm_mma, swiglu_quant_small_shapes) {
  fp8moe_rng r = {test_seed("swiglu_quant_small_shapes")};
  FP8MOE_T_LAYOUTS((run_swiglu_case<256, 128>), "swiglu N=256 K=128");
  FP8MOE_T_LAYOUTS((run_swiglu_case<512, 384>), "swiglu N=512 K=384");
}

/* DeepSeek-V3 GEMM1 (2I = 4096, H = 7168) and GEMM2 (H = 7168, I = 2048),
 * a few hundred rows over 8 experts with the edge sizes */
static std::vector<int> deepseek_sizes(fp8moe_rng *r) {
  std::vector<int> s = {0, 1, 63, 64, 65, 127, 129, 20};
  for (int i = (int)s.size() - 1; i > 0; --i) std::swap(s[i], s[(int)(rng_next(r) % (uint64_t)(i + 1))]);
  return s;
}

Test(gemm_mma, deepseek_gemm1_swiglu) {
  fp8moe_rng r = {test_seed("deepseek_gemm1_swiglu")};
  run_swiglu_case<4096, 7168>("swiglu N=4096 K=7168 (DSv3 GEMM1)", deepseek_sizes(&r), 2, 3, &r);
}

Test(gemm_mma, deepseek_gemm2_bf16) {
  fp8moe_rng r = {test_seed("deepseek_gemm2_bf16")};
  run_store_case<7168, 2048, epilogue::store_bf16>("bf16 N=7168 K=2048 (DSv3 GEMM2)", deepseek_sizes(&r), 2, 3,
                                                   &r);
}

/* decode: 32 local experts, 0-8 rows each; under FP8MOE_TEST_MAX_TOKENS
 * (the sanitizers) cap/8 experts, at least 2: a DeepSeek-V3 expert is 29 MB
 * of weights through the shared-memory ring */
static std::vector<int> decode_sizes(fp8moe_rng *r) {
  const int cap = fp8moe_test_max_tokens(), groups = cap / 8 < 2 ? 2 : (cap / 8 > 32 ? 32 : cap / 8);
  if (groups < 32) fprintf(stderr, "[deepseek_decode] %d experts (FP8MOE_TEST_MAX_TOKENS=%d)\n", groups, cap);
  std::vector<int> s(groups);
  for (auto &x : s) x = (int)(rng_next(r) % 9);
  return s;
}

Test(gemm_mma, deepseek_decode) {
  fp8moe_rng r = {test_seed("deepseek_decode")};
  run_swiglu_case<4096, 7168>("swiglu N=4096 K=7168 decode", decode_sizes(&r), 0, 5, &r);
  run_store_case<7168, 2048, epilogue::store_bf16>("bf16 N=7168 K=2048 decode", decode_sizes(&r), 0, 5, &r);
}

/* A gathered by row (params.cuh, a_rows): fewer source rows than rows,
 * repeats and unused sources included; every variant against the
 * reference of the copied rows */
Test(gemm_mma, gathered_rows) {
  fp8moe_rng r = {test_seed("gathered_rows")};
  run_swiglu_case<512, 384>("swiglu N=512 K=384 gathered", edge_sizes(&r), 3, 2, &r, 57);
  run_store_case<512, 384, epilogue::store_bf16>("bf16 N=512 K=384 gathered", edge_sizes(&r), 1, 4, &r, 300);
}

Test(gemm_mma, empty_launches_nothing) {
  grouped_gemm_params p;
  /* all pointers NULL (the defaults): a launch would fault */
  p.num_groups = 4;
  cr_assert_eq((fp8moe::detail::gemm_mma_launch<256, 128, epilogue::store_fp32>(p, 0)), FP8MOE_OK);
  cr_assert_eq((fp8moe::detail::grouped_gemm_launch<256, 256, epilogue::swiglu_quant>(p, 0)), FP8MOE_OK);
  p.m_total = 10;
  p.num_groups = 0;
  cr_assert_eq((fp8moe::detail::gemm_mma_launch<256, 128, epilogue::store_bf16>(p, 0)), FP8MOE_OK);
  CUDA_OK(cudaDeviceSynchronize());
  CUDA_OK(cudaGetLastError());
}

/* ---- the public component ---- */

typedef fp8moe_status (*gg_run_fn)(const fp8moe_grouped_gemm_args *, fp8moe_stream);

/* tile_counter: pass the component a work counter (zeroed here once; both
 * runs must give the reference's bits, so the first must leave it zero) */
static void run_public_case(const char *what, gg_run_fn run, int N, int K, fp8moe_dtype dt,
                            const std::vector<int> &sizes, fp8moe_rng *r, bool tile_counter = false) {
  problem P = make_problem(N, K, sizes, 4, 9, r);
  dev_problem d = upload(P);
  const bool bf16 = dt == FP8MOE_DTYPE_BF16;
  const size_t esz = bf16 ? 2 : 4, bytes = (size_t)P.M * N * esz;
  std::vector<uint8_t> poison(bytes), out(bytes), out2(bytes);
  for (size_t i = 0; i < bytes; i += esz) {
    uint16_t h = FP8MOE_TEST_POISON_BF16;
    if (bf16) memcpy(&poison[i], &h, 2); else memcpy(&poison[i], &POISON_FP32, 4);
  }
  uint8_t *c = dev_upload(poison.data(), bytes);
  fp8moe_grouped_gemm_args args = {P.G, P.M, d.a, d.sa, d.b, d.sb, d.off, c, dt, NULL};
  int32_t *counter = tile_counter ? new_counter() : NULL;
  args.tile_counter = counter;
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  for (int i = 0; i < 2; ++i) {
    CUDA_OK(cudaMemcpy(c, poison.data(), bytes, cudaMemcpyHostToDevice));
    fp8moe_status s = run(&args, stream);
    cr_assert_eq(s, FP8MOE_OK, "%s: %s", what, fp8moe_status_string(s));
    CUDA_OK(cudaStreamSynchronize(stream));
    dev_download(i ? out2.data() : out.data(), c, bytes);
  }
  CUDA_OK(cudaStreamDestroy(stream));
  std::vector<double> C;
  reference_gemm(P, C);
  check_store(what, P, bf16, out, out2, C);
  if (counter) {
    check_counter_left(what, counter);
    cudaFree(counter);
  }
  cudaFree(c);
  release(d);
}

Test(gemm_mma, public_component_two_instantiations) {
  fp8moe_rng r = {test_seed("public_component_two_instantiations")};
  run_public_case("gg_small_run fp32 G=8", gg_small_run, 256, 128, FP8MOE_DTYPE_FP32, edge_sizes(&r), &r);
  run_public_case("gg_small_run bf16 G=33", gg_small_run, 256, 128, FP8MOE_DTYPE_BF16, many_sizes(&r), &r);
  run_public_case("gg_mid_run bf16 G=8", gg_mid_run, 512, 384, FP8MOE_DTYPE_BF16, edge_sizes(&r), &r);
  run_public_case("gg_mid_run fp32 G=1", gg_mid_run, 512, 384, FP8MOE_DTYPE_FP32, std::vector<int>{129}, &r);
  run_public_case("gg_mid_run fp32 G=33 small", gg_mid_run, 512, 384, FP8MOE_DTYPE_FP32, small_sizes(&r), &r);
  /* 33 groups of up to 1200 rows: more work items than SMs, so CTAs claim */
  std::vector<int> big(33);
  for (auto &x : big) x = (int)(rng_next(&r) % 1201);
  run_public_case("gg_mid_run bf16 G=33 tile counter", gg_mid_run, 512, 384, FP8MOE_DTYPE_BF16, big, &r, true);
}

/* Validation needs no GPU (it runs before any CUDA call), so this suite runs
 * everywhere. Fake but aligned pointers: nothing may be dereferenced. */
static fp8moe_grouped_gemm_args good_args(void) {
  static uint8_t buf[64] __attribute__((aligned(16)));
  fp8moe_grouped_gemm_args a;
  a.num_groups = 3;
  a.num_rows = 10;
  a.a = buf;
  a.a_scale = (const float *)buf;
  a.b = buf;
  a.b_scale = (const float *)buf;
  a.group_offsets = (const int32_t *)buf;
  a.c = buf;
  a.c_dtype = FP8MOE_DTYPE_BF16;
  return a;
}

Test(grouped_gemm_validate, statuses) {
  fp8moe_grouped_gemm_args a = good_args();
  cr_assert_eq(fp8moe_validate_grouped_gemm_args(256, 128, &a), FP8MOE_OK);
  cr_assert_eq(fp8moe_validate_grouped_gemm_args(256, 128, NULL), FP8MOE_ERROR_NULL_ARGUMENT);
  cr_assert_eq(fp8moe_validate_grouped_gemm_args(0, 128, &a), FP8MOE_ERROR_INVALID_SHAPE);
  cr_assert_eq(fp8moe_validate_grouped_gemm_args(200, 128, &a), FP8MOE_ERROR_INVALID_SHAPE);
  cr_assert_eq(fp8moe_validate_grouped_gemm_args(256, 64, &a), FP8MOE_ERROR_INVALID_SHAPE);
  cr_assert_eq(fp8moe_validate_grouped_gemm_args(256, -128, &a), FP8MOE_ERROR_INVALID_SHAPE);

  a = good_args(); a.num_rows = -1;
  cr_assert_eq(fp8moe_validate_grouped_gemm_args(256, 128, &a), FP8MOE_ERROR_INVALID_NUM_TOKENS);
  a = good_args(); a.num_groups = -1;
  cr_assert_eq(fp8moe_validate_grouped_gemm_args(256, 128, &a), FP8MOE_ERROR_INVALID_EXPERT_RANGE);
  a = good_args(); a.num_groups = FP8MOE_MAX_EXPERTS + 1;
  cr_assert_eq(fp8moe_validate_grouped_gemm_args(256, 128, &a), FP8MOE_ERROR_INVALID_EXPERT_RANGE);
  a = good_args(); a.num_groups = FP8MOE_MAX_EXPERTS;
  cr_assert_eq(fp8moe_validate_grouped_gemm_args(256, 128, &a), FP8MOE_OK);
  a = good_args(); a.c_dtype = (fp8moe_dtype)2;
  cr_assert_eq(fp8moe_validate_grouped_gemm_args(256, 128, &a), FP8MOE_ERROR_INVALID_DTYPE);

  /* nothing to do: pointers are not looked at */
  a = good_args(); a.num_groups = 0; a.a = NULL; a.c = (void *)1;
  cr_assert_eq(fp8moe_validate_grouped_gemm_args(256, 128, &a), FP8MOE_OK);
  a = good_args(); a.num_rows = 0; a.b = NULL;
  cr_assert_eq(fp8moe_validate_grouped_gemm_args(256, 128, &a), FP8MOE_OK);

  const char *names[] = {"a", "a_scale", "b", "b_scale", "group_offsets", "c"};
  for (int i = 0; i < 6; ++i) {
    a = good_args();
    switch (i) {
    case 0: a.a = NULL; break;
    case 1: a.a_scale = NULL; break;
    case 2: a.b = NULL; break;
    case 3: a.b_scale = NULL; break;
    case 4: a.group_offsets = NULL; break;
    default: a.c = NULL; break;
    }
    cr_assert_eq(fp8moe_validate_grouped_gemm_args(256, 128, &a), FP8MOE_ERROR_NULL_ARGUMENT, "%s NULL", names[i]);
  }
  /* 16 B for the fp8 operands and the output, 4 B for scales and offsets */
  const uint8_t *base = (const uint8_t *)good_args().a;
  for (int i = 0; i < 6; ++i) {
    a = good_args();
    switch (i) {
    case 0: a.a = base + 8; break;
    case 1: a.a_scale = (const float *)(base + 2); break;
    case 2: a.b = base + 4; break;
    case 3: a.b_scale = (const float *)(base + 1); break;
    case 4: a.group_offsets = (const int32_t *)(base + 2); break;
    default: a.c = (void *)(base + 8); break;
    }
    cr_assert_eq(fp8moe_validate_grouped_gemm_args(256, 128, &a), FP8MOE_ERROR_MISALIGNED_POINTER, "%s misaligned",
                 names[i]);
  }
  a = good_args(); a.a_scale = (const float *)(base + 4); a.b_scale = (const float *)(base + 12);
  a.group_offsets = (const int32_t *)(base + 36);
  cr_assert_eq(fp8moe_validate_grouped_gemm_args(256, 128, &a), FP8MOE_OK, "4-byte alignment is enough for these");

  /* order: the first failing check decides */
  a = good_args(); a.num_rows = -1; a.c_dtype = (fp8moe_dtype)7; a.a = NULL;
  cr_assert_eq(fp8moe_validate_grouped_gemm_args(256, 100, &a), FP8MOE_ERROR_INVALID_SHAPE);
  cr_assert_eq(fp8moe_validate_grouped_gemm_args(256, 128, &a), FP8MOE_ERROR_INVALID_NUM_TOKENS);
}

/* name_run returns the validation status before any CUDA call, so this too
 * runs without a GPU; the fake pointers would fault if anything launched. */
Test(grouped_gemm_validate, run_rejects_before_launch) {
  fp8moe_grouped_gemm_args a = good_args();
  cr_assert_eq(gg_small_run(NULL, 0), FP8MOE_ERROR_NULL_ARGUMENT);
  a.num_rows = -3;
  cr_assert_eq(gg_small_run(&a, 0), FP8MOE_ERROR_INVALID_NUM_TOKENS);
  a = good_args(); a.c = (void *)((uintptr_t)a.c + 2);
  cr_assert_eq(gg_mid_run(&a, 0), FP8MOE_ERROR_MISALIGNED_POINTER);
  a = good_args(); a.c_dtype = (fp8moe_dtype)-1;
  cr_assert_eq(gg_mid_run(&a, 0), FP8MOE_ERROR_INVALID_DTYPE);
  a = good_args(); a.num_groups = 0;
  cr_assert_eq(gg_mid_run(&a, 0), FP8MOE_OK);
  a = good_args(); a.num_rows = 0;
  cr_assert_eq(gg_small_run(&a, 0), FP8MOE_OK);
}
