/* tests/gpu_test_fast_math.cu - the one numeric rule survives --use_fast_math.
 *
 * Built with --use_fast_math (tests/meson.build), which turns `/` into an
 * approximate division and expf into __expf. The requantization scale and
 * the fp8 rounding must stay those of numeric.h all the same, in the
 * activation quantizer and in both GEMM paths' GEMM1 epilogue, so each is
 * compared with the CPU rule bit for bit:
 *  - the quantizer on fresh random bf16 rows of many magnitudes;
 *  - GEMM1 + gated activation + requantization (fp8 activations and their
 *    scales) on the portable path's 64- and 16-row tiles and, on Hopper, the
 *    wgmma path, with per-group SwiGLU coefficients whose limits clamp.
 * For the GEMM the data are chosen so that the fp32 accumulators are exact
 * (few-bit fp8 values, power-of-two scales) and every gate is above 17,
 * where 1 + exp(-gate) rounds to 1 whichever exp runs: the activation is
 * then the same fp32 number on both sides, and what is compared is exactly
 * the rule (scale = max(amax / 448, FLT_MIN), q = e4m3(a / scale)). An
 * approximate division there changes scales and codes, and fails the test.
 *
 *   nvcc -std=c++17 -O3 --use_fast_math -Iinclude -Itests \
 *        -gencode arch=compute_90a,code=sm_90a tests/gpu_test_fast_math.cu -lcriterion
 */
#include <fp8moe/fp8moe.cuh>
#include <fp8moe/reference.h>

#include "gpu_util.h"

#include <vector>

using namespace fp8moe::detail;

TestSuite(fast_math, .init = fp8moe_test_require_gpu, .timeout = 600);

/* ---- the quantizer ---- */

Test(fast_math, quantizer_bitwise) {
  enum { H = 1024 };
  fp8moe_rng rng = {fp8moe_test_announce_seed("quantizer")};
  const int Ts[] = {1, 7, 64, 333};
  for (int T : Ts) {
    std::vector<uint16_t> x((size_t)T * H);
    for (size_t i = 0; i < x.size(); i++) {
      /* magnitudes over 2^-20 .. 2^20, some blocks tiny, some huge */
      const float mag = exp2f((float)((int)(rng_next(&rng) % 41) - 20));
      x[i] = fp8moe_bf16_from_float(rng_normal(&rng) * mag);
    }
    std::vector<uint8_t> q_ref(x.size()), q((size_t)T * H);
    std::vector<float> s_ref((size_t)(H / 128) * T), sc(s_ref.size());
    fp8moe_ref_quantize_activations(T, H, x.data(), q_ref.data(), s_ref.data());
    uint16_t *d_x = dev_upload(x.data(), x.size());
    uint8_t *d_q = dev_alloc<uint8_t>(q.size());
    float *d_s = dev_alloc<float>(sc.size());
    CUDA_OK(cudaMemset(d_q, 0xAB, q.size()));
    CUDA_OK(cudaMemset(d_s, 0xFF, sc.size() * 4));
    cr_assert_eq(quantize_activations_launch<H>(d_x, T, d_q, d_s, 0), FP8MOE_OK);
    CUDA_OK(cudaDeviceSynchronize());
    dev_download(q.data(), d_q, q.size());
    dev_download(sc.data(), d_s, sc.size());
    for (size_t i = 0; i < sc.size(); i++)
      cr_assert_eq(fp8moe__float_bits(sc[i]), fp8moe__float_bits(s_ref[i]), "T=%d scale %zu: %a vs reference %a", T, i,
                   sc[i], s_ref[i]);
    for (size_t i = 0; i < q.size(); i++)
      cr_assert_eq(q[i], q_ref[i], "T=%d element %zu: 0x%02x vs reference 0x%02x", T, i, q[i], q_ref[i]);
    cudaFree(d_x);
    cudaFree(d_q);
    cudaFree(d_s);
  }
}

/* ---- GEMM1 + SwiGLU + requantization on both paths ---- */

enum { GK = 256, GI = 256, GN = 2 * GI };

/* e4m3 codes of the exact small values the data use */
static uint8_t e4m3_of(float v) { return fp8moe_e4m3_from_float(v); }

struct gemm1_case {
  std::vector<int> offs;          /* [G+1] */
  std::vector<uint8_t> a, b;      /* [M, K], [G, N, K] */
  std::vector<float> sa, sb;      /* [K/128, M], [G, N/128, K/128] */
  std::vector<float> alpha, beta, limit; /* [G] */
  int M, G;
};

static gemm1_case make_case(fp8moe_rng *rng, const std::vector<int> &rows) {
  gemm1_case c;
  c.G = (int)rows.size();
  c.offs.assign(1, 0);
  for (int r : rows) c.offs.push_back(c.offs.back() + r);
  c.M = c.offs.back();
  static const float xs[] = {0.5f, 1.0f, 1.5f, 2.0f};
  static const float ups[] = {0.25f, 0.5f, 0.75f, 1.0f};
  c.a.resize((size_t)c.M * GK);
  for (auto &v : c.a) v = e4m3_of(xs[rng_next(rng) % 4]);
  c.b.resize((size_t)c.G * GN * GK);
  for (int g = 0; g < c.G; g++)
    for (int n = 0; n < GN; n++)
      for (int k = 0; k < GK; k++) {
        const uint64_t r = rng_next(rng);
        /* rows [0, I): up, any sign; rows [I, 2I): gate, positive */
        const float v = n < GI ? ((r & 1) ? -1.0f : 1.0f) * ups[(r >> 1) % 4] : ((r >> 3) & 1 ? 1.0f : 0.5f);
        c.b[((size_t)g * GN + n) * GK + k] = e4m3_of(v);
      }
  c.sa.resize((size_t)(GK / 128) * c.M);
  for (auto &v : c.sa) v = exp2f((float)(rng_next(rng) % 3)); /* 1, 2, 4 */
  c.sb.resize((size_t)c.G * (GN / 128) * (GK / 128));
  for (auto &v : c.sb) v = exp2f((float)(rng_next(rng) % 2)); /* 1, 2 */
  for (int g = 0; g < c.G; g++) {
    c.alpha.push_back(1.0f + rng_uniform(rng));        /* [1, 2): alpha * gate stays above 17 */
    c.beta.push_back(2.0f * rng_uniform(rng) - 1.0f);  /* [-1, 1) */
    c.limit.push_back(60.0f + 200.0f * rng_uniform(rng)); /* clamps part of the gates and ups */
  }
  return c;
}

/* The CPU side: exact accumulators, then numeric.h's rule. */
static void cpu_gemm1(const gemm1_case &c, bool coeffs, std::vector<uint8_t> &q, std::vector<float> &sc,
                      long long sc_ld, float *min_gate) {
  q.assign((size_t)c.M * GI, 0);
  sc.assign((size_t)(GI / 128) * sc_ld, 0.0f);
  *min_gate = INFINITY;
  std::vector<float> acc(GN), act(GI);
  for (int g = 0; g < c.G; g++)
    for (int m = c.offs[g]; m < c.offs[g + 1]; m++) {
      for (int n = 0; n < GN; n++) {
        double s = 0.0;
        for (int kb = 0; kb < GK / 128; kb++) {
          double blk = 0.0;
          for (int k = kb * 128; k < kb * 128 + 128; k++)
            blk += (double)fp8moe_e4m3_to_float(c.a[(size_t)m * GK + k]) *
                   (double)fp8moe_e4m3_to_float(c.b[((size_t)g * GN + n) * GK + k]);
          s += blk * c.sa[(size_t)kb * c.M + m] * c.sb[((size_t)g * (GN / 128) + n / 128) * (GK / 128) + kb];
        }
        acc[n] = (float)s; /* exact: few-bit values, power-of-two scales */
      }
      for (int j = 0; j < GI; j++) {
        *min_gate = fminf(*min_gate, acc[GI + j]);
        act[j] = coeffs ? fp8moe_swiglu(acc[GI + j], acc[j], c.alpha[g], c.beta[g], c.limit[g])
                        : fp8moe_swiglu(acc[GI + j], acc[j], 1.0f, 0.0f, INFINITY);
      }
      for (int b = 0; b < GI / 128; b++) {
        float amax = 0.0f;
        for (int j = b * 128; j < b * 128 + 128; j++) amax = fmaxf(amax, fabsf(act[j]));
        const float s = fp8moe_quant_scale(amax);
        sc[(size_t)b * sc_ld + m] = s;
        for (int j = b * 128; j < b * 128 + 128; j++) q[(size_t)m * GI + j] = fp8moe_quantize_e4m3(act[j], s);
      }
    }
}

typedef fp8moe_status (*gemm1_launch)(const grouped_gemm_params &, cudaStream_t, bool);

static void check_path(const char *path, gemm1_launch launch, const gemm1_case &c, bool coeffs) {
  const long long ld = (c.M + 3) / 4 * 4;
  std::vector<uint8_t> q_ref;
  std::vector<float> s_ref;
  float min_gate = 0.0f;
  cpu_gemm1(c, coeffs, q_ref, s_ref, ld, &min_gate);
  cr_assert(min_gate > 17.0f, "the data must keep every gate above 17 (min %g)", min_gate);

  uint8_t *d_a = dev_upload(c.a.data(), c.a.size()), *d_b = dev_upload(c.b.data(), c.b.size());
  float *d_sa = dev_upload(c.sa.data(), c.sa.size()), *d_sb = dev_upload(c.sb.data(), c.sb.size());
  int *d_off = dev_upload(c.offs.data(), c.offs.size());
  float *d_al = dev_upload(c.alpha.data(), c.alpha.size()), *d_be = dev_upload(c.beta.data(), c.beta.size());
  float *d_li = dev_upload(c.limit.data(), c.limit.size());
  uint8_t *d_q = dev_alloc<uint8_t>((size_t)c.M * GI);
  float *d_s = dev_alloc<float>((size_t)(GI / 128) * ld);
  CUDA_OK(cudaMemset(d_q, 0xAB, (size_t)c.M * GI));
  CUDA_OK(cudaMemset(d_s, 0xFF, (size_t)(GI / 128) * ld * 4));

  grouped_gemm_params p;
  p.a = d_a;
  p.a_scale = d_sa;
  p.a_scale_ld = c.M;
  p.b = d_b;
  p.b_scale = d_sb;
  p.group_offset = d_off;
  p.num_groups = c.G;
  p.m_total = c.M;
  p.c = d_q;
  p.c_scale = d_s;
  p.c_scale_ld = ld;
  if (coeffs) {
    p.swiglu_alpha = d_al;
    p.swiglu_beta = d_be;
    p.swiglu_limit = d_li;
  }
  cr_assert_eq(launch(p, 0, false), FP8MOE_OK, "%s: launch failed", path);
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<uint8_t> q((size_t)c.M * GI);
  std::vector<float> sc((size_t)(GI / 128) * ld);
  dev_download(q.data(), d_q, q.size());
  dev_download(sc.data(), d_s, sc.size());
  for (int m = 0; m < c.M; m++)
    for (int b = 0; b < GI / 128; b++)
      cr_assert_eq(fp8moe__float_bits(sc[(size_t)b * ld + m]), fp8moe__float_bits(s_ref[(size_t)b * ld + m]),
                   "%s%s: row %d block %d scale %a vs CPU %a", path, coeffs ? " (coefficients)" : "", m, b,
                   sc[(size_t)b * ld + m], s_ref[(size_t)b * ld + m]);
  for (size_t i = 0; i < q.size(); i++)
    cr_assert_eq(q[i], q_ref[i], "%s%s: element %zu (row %zu col %zu): 0x%02x vs CPU 0x%02x", path,
                 coeffs ? " (coefficients)" : "", i, i / GI, i % GI, q[i], q_ref[i]);
  cr_log_info("%s%s: %d rows in %d groups, fp8 activations and scales bit for bit", path,
              coeffs ? " with SwiGLU coefficients" : "", c.M, c.G);
  cudaFree(d_a), cudaFree(d_b), cudaFree(d_sa), cudaFree(d_sb), cudaFree(d_off);
  cudaFree(d_al), cudaFree(d_be), cudaFree(d_li), cudaFree(d_q), cudaFree(d_s);
}

/* The limits clamp: some gates and ups of the data exceed them. */
static void assert_limits_clamp(const gemm1_case &c) {
  size_t gates = 0, ups = 0;
  for (int g = 0; g < c.G; g++)
    for (int m = c.offs[g]; m < c.offs[g + 1]; m++) {
      /* the first up and gate column of the row, exactly */
      double gate = 0.0, up = 0.0;
      for (int kb = 0; kb < GK / 128; kb++) {
        double bg = 0.0, bu = 0.0;
        for (int k = kb * 128; k < kb * 128 + 128; k++) {
          const double x = fp8moe_e4m3_to_float(c.a[(size_t)m * GK + k]);
          bu += x * fp8moe_e4m3_to_float(c.b[((size_t)g * GN + 0) * GK + k]);
          bg += x * fp8moe_e4m3_to_float(c.b[((size_t)g * GN + GI) * GK + k]);
        }
        const double sa = c.sa[(size_t)kb * c.M + m];
        up += bu * sa * c.sb[((size_t)g * (GN / 128) + 0) * (GK / 128) + kb];
        gate += bg * sa * c.sb[((size_t)g * (GN / 128) + GI / 128) * (GK / 128) + kb];
      }
      gates += gate > c.limit[g];
      ups += fabs(up) > c.limit[g];
    }
  cr_log_info("rows whose first gate / up the limit clamps: %zu / %zu", gates, ups);
  cr_assert(gates > 0, "no gate reaches its group's limit: the clamp is not exercised");
}

static bool is_sm90(void) {
  int dev = 0, major = 0, minor = 0;
  CUDA_OK(cudaGetDevice(&dev));
  CUDA_OK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  CUDA_OK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  return major == 9 && minor == 0;
}

Test(fast_math, gemm1_requant_bitwise_both_paths) {
  fp8moe_rng rng = {fp8moe_test_announce_seed("gemm1")};
  /* an empty group, a one-row group, partial tiles of 16, 64 and 128 rows */
  const std::vector<int> rows = {37, 0, 1, 130, 64, 200};
  const gemm1_case c = make_case(&rng, rows);
  assert_limits_clamp(c);
  for (int coeffs = 0; coeffs < 2; coeffs++) {
    check_path("portable 64-row tiles", gemm_mma_launch_bm<GN, GK, epilogue::swiglu_quant, 64>, c, coeffs);
    check_path("portable 16-row tiles", gemm_mma_launch_bm<GN, GK, epilogue::swiglu_quant, 16>, c, coeffs);
#ifndef FP8MOE_DISABLE_SM90
    if (is_sm90() && sm90_image_present<GN, GK, epilogue::swiglu_quant>())
      check_path("Hopper wgmma", gemm_sm90_launch<GN, GK, epilogue::swiglu_quant>, c, coeffs);
    else
      cr_log_info("no sm_90a device or image: the Hopper path is not checked here");
#endif
  }
}
