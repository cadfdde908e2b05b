/* tests/test_reference.c - the CPU reference MoE, activation quantizer and
 * fp8moe_reference_run (reference.h, SPEC sections 2 and 5).
 *
 * The MoE is checked against a second, independent computation written here:
 * everything dequantized to double, plain triple loops with the scales folded
 * into the operands (no per-block partial sums), SwiGLU and requantization in
 * double. Where fp32 and double may legitimately requantize a value to
 * neighbouring fp8 codes, the possible effect is computed and allowed for
 * (naive_moe); everything else must agree to 1e-5 relative L2 (observed ~2e-7).
 * Hand-worked cases pin the exact numbers where they are easy to derive.
 * Random data is fresh every run (seed printed; FP8MOE_SEED overrides;
 * FP8MOE_TEST_VERBOSE=1 prints the allowance of each comparison).
 */
#include <criterion/criterion.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <fp8moe/reference.h>

#include "test_util.h"

/* ---- helpers ---------------------------------------------------------- */

/* 64-byte aligned, zeroed (fp8moe_validate_args wants 16-byte aligned fp8 tensors and output). */
static void *xalloc(size_t bytes) {
  size_t n = (bytes + 63) / 64 * 64;
  void *p = aligned_alloc(64, n ? n : 64);
  cr_assert_not_null(p);
  memset(p, 0, n ? n : 64);
  return p;
}

/* Mostly e4m3(normal * 16); one in ten a raw byte (subnormals, large values), never NaN. */
static uint8_t rand_fp8(rng_t *r) {
  uint8_t v;
  if (rng_next(r) % 10) return fp8moe_e4m3_from_float(16.0f * rng_normal(r));
  v = (uint8_t)rng_next(r);
  return (v & 0x7f) == 0x7f ? (uint8_t)(v & 0xf0) : v;
}

static double rel_l2_fd(const float *a, const double *b, size_t n) {
  double num = 0, den = 0;
  size_t i;
  for (i = 0; i < n; i++) {
    double d = (double)a[i] - b[i];
    num += d * d;
    den += b[i] * b[i];
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* An fp8 value of magnitude 0 or in [1, 15] (codes 0x38..0x57, multiples of 1/8), either sign. */
static uint8_t rand_fp8_exact(rng_t *r) {
  uint64_t v = rng_next(r);
  if (v % 10 == 0) return 0;
  return (uint8_t)(((v >> 8) & 0x80u) | (0x38u + (unsigned)((v >> 16) % 32)));
}

/* One random problem on the host.
 *
 * exact != 0 makes GEMM1 exact in fp32 whatever the summation order, so the code under test and
 * the double computation below see the same g and can only disagree by SwiGLU and scale roundings:
 * x and W1 take values in {0} U +-[1, 15] (multiples of 2^-3, products multiples of 2^-6 below 2^8,
 * so a 128-term block sum needs at most 15 + 6 bits), their scales are powers of two (2^-4..2^-3 and
 * 2^-6..2^-5, so the two blocks of H <= 256 differ by at most 2^2 in scale: 23 bits). The scales still
 * differ per block, so a wrong scale index shows. W2 and its scales are general.
 * exact == 0: heavy-tailed fp8 everywhere (subnormals, +-448) and arbitrary scales. */
typedef struct problem {
  fp8moe_config c;
  int exact;
  int T, off, eloc;
  uint8_t *x, *w1, *w2;
  float *sx, *sw1, *sw2;
  int32_t *ids;
  float *w;
} problem;

static problem make_problem(rng_t *r, int E, int K, int H, int I, int T, int off, int eloc, int exact) {
  problem p;
  cr_assert(!exact || H <= 256, "exact GEMM1 needs H <= 256");
  p.exact = exact;
  size_t i, n1 = (size_t)eloc * 2 * I * H, n2 = (size_t)eloc * H * I;
  size_t ns1 = (size_t)eloc * (2 * I / 128) * (H / 128), ns2 = (size_t)eloc * (H / 128) * (I / 128);
  p.c.num_experts = E;
  p.c.top_k = K;
  p.c.hidden = H;
  p.c.intermediate = I;
  p.T = T;
  p.off = off;
  p.eloc = eloc;
  p.x = (uint8_t *)xalloc((size_t)T * H);
  p.w1 = (uint8_t *)xalloc(n1);
  p.w2 = (uint8_t *)xalloc(n2);
  p.sx = (float *)xalloc(sizeof(float) * (size_t)T * (H / 128));
  p.sw1 = (float *)xalloc(sizeof(float) * ns1);
  p.sw2 = (float *)xalloc(sizeof(float) * ns2);
  p.ids = (int32_t *)xalloc(sizeof(int32_t) * (size_t)T * K);
  p.w = (float *)xalloc(sizeof(float) * (size_t)T * K);
  for (i = 0; i < (size_t)T * H; i++) p.x[i] = exact ? rand_fp8_exact(r) : rand_fp8(r);
  for (i = 0; i < n1; i++) p.w1[i] = exact ? rand_fp8_exact(r) : rand_fp8(r);
  for (i = 0; i < n2; i++) p.w2[i] = rand_fp8(r);
  /* scales put dequantized x ~ N(0,1), w ~ N(0, 1/H) or N(0, 1/I): O(1) activations through the layer */
  for (i = 0; i < (size_t)T * (H / 128); i++)
    p.sx[i] = exact ? ((rng_next(r) & 1) ? 0.125f : 0.0625f) : (0.5f + rng_uniform(r)) / 16.0f;
  for (i = 0; i < ns1; i++)
    p.sw1[i] = exact ? ((rng_next(r) & 1) ? 0.03125f : 0.015625f) : (0.5f + rng_uniform(r)) / 16.0f / sqrtf((float)H);
  for (i = 0; i < ns2; i++) p.sw2[i] = (0.5f + rng_uniform(r)) / 16.0f / sqrtf((float)I);
  for (i = 0; i < (size_t)T * K; i++) {
    p.ids[i] = (int32_t)(rng_next(r) % (uint64_t)E);
    p.w[i] = rng_normal(r);
  }
  return p;
}

static void free_problem(problem *p) {
  free(p->x);
  free(p->w1);
  free(p->w2);
  free(p->sx);
  free(p->sw1);
  free(p->sw2);
  free(p->ids);
  free(p->w);
}

static fp8moe_ref_moe_input input_of(const problem *p) {
  fp8moe_ref_moe_input in;
  in.num_tokens = p->T;
  in.local_expert_offset = p->off;
  in.local_num_experts = p->eloc;
  in.hidden_states = p->x;
  in.hidden_states_scale = p->sx;
  in.w1 = p->w1;
  in.w1_scale = p->sw1;
  in.w2 = p->w2;
  in.w2_scale = p->sw2;
  in.topk_ids = p->ids;
  in.topk_weights = p->w;
  return in;
}

/* e4m3 rounding of v (in units of the block scale), and whether a value within +-w of v could round
 * to another code: then that code's distance goes to *alt_delta, else 0. */
static uint8_t requant_code(double v, double w, double *alt_delta) {
  uint8_t c = fp8moe_e4m3_from_float((float)v);
  double here = fp8moe_e4m3_to_float(c);
  uint8_t lo = fp8moe_e4m3_from_float((float)(v - w)), hi = fp8moe_e4m3_from_float((float)(v + w));
  double d_lo = fabs(fp8moe_e4m3_to_float(lo) - here), d_hi = fabs(fp8moe_e4m3_to_float(hi) - here);
  *alt_delta = d_lo > d_hi ? d_lo : d_hi;
  return c;
}

/* The independent double-precision MoE: out [T, H].
 *
 * An `a` within fp32 error of the midpoint between two e4m3 codes can requantize to either; the
 * test cannot know which one the fp32 code picks, and one flip moves a small problem's output by up
 * to ~1e-2 relative (it scales a whole column of W2). So each requantized value whose error bound
 * reaches a midpoint is counted as ambiguous, and its possible flip is added to `budget` [T, H]: the
 * absolute error it may cause in each output. Everything else must agree to fp32 accumulation
 * accuracy. The error bound of the fp32 `a`: 2e-6 relative for SwiGLU (exp, divide, multiply: ~5
 * roundings of 2^-24) and for the scale (amax's own error, the divide by 448); plus, unless GEMM1 is
 * exact (problem.exact), the GEMM1 error G1_EPS * sum|terms| carried through SwiGLU: a sum's
 * rounding error grows with its terms, not its result, so it is large relative to g where the
 * terms cancel. That worst-case bound is loose, hence the exact problems for the tight checks. */
#define G1_EPS (64.0 / 16777216.0) /* 64 * 2^-24: a depth of 16 + 3 + H/128 roundings, with margin */
#define SWIGLU_EPS 2e-6
static int naive_moe(const problem *p, double *out, double *budget) {
  const int E = p->c.num_experts, K = p->c.top_k, H = p->c.hidden, I = p->c.intermediate, T = p->T;
  const double g_eps = p->exact ? 0.0 : G1_EPS;
  double *g = (double *)malloc(sizeof(double) * 2 * I), *aq = (double *)malloc(sizeof(double) * I);
  double *amb = (double *)malloc(sizeof(double) * I), *gabs = (double *)malloc(sizeof(double) * 2 * I);
  int t, k, n, h, j, b, ambiguous = 0;
  cr_assert(g && aq && amb && gabs);
  for (t = 0; t < T; t++) {
    double *o = out + (size_t)t * H, *bud = budget + (size_t)t * H;
    for (h = 0; h < H; h++) o[h] = bud[h] = 0.0;
    for (k = 0; k < K; k++) {
      int id = p->ids[t * K + k], le;
      double wk = p->w[t * K + k];
      if (id < 0 || id >= E) continue;
      le = id - p->off;
      if (le < 0 || le >= p->eloc) continue;
      for (n = 0; n < 2 * I; n++) {
        double s = 0, sa = 0;
        for (h = 0; h < H; h++) {
          double xv = (double)fp8moe_e4m3_to_float(p->x[(size_t)t * H + h]) * p->sx[(h / 128) * T + t];
          double wv = (double)fp8moe_e4m3_to_float(p->w1[((size_t)le * 2 * I + n) * H + h]) *
                      p->sw1[((size_t)le * (2 * I / 128) + n / 128) * (H / 128) + h / 128];
          s += xv * wv;
          sa += fabs(xv * wv);
        }
        g[n] = s;
        gabs[n] = sa;
      }
      for (b = 0; b < I / 128; b++) {
        double a[128], amax = 0, scale;
        double da[128], scale_err = 0;
        for (j = 0; j < 128; j++) {
          double up = g[b * 128 + j], gate = g[I + b * 128 + j], silu = gate / (1.0 + exp(-gate));
          a[j] = silu * up;
          /* error bound of the fp32 a: GEMM1 errors through SwiGLU (|silu'| < 1.1), exp and products */
          da[j] = fabs(silu) * g_eps * gabs[b * 128 + j] + 1.1 * fabs(up) * g_eps * gabs[I + b * 128 + j] +
                  SWIGLU_EPS * fabs(a[j]);
          if (fabs(a[j]) > amax) amax = fabs(a[j]), scale_err = da[j];
        }
        scale = amax / 448.0 > FLT_MIN ? amax / 448.0 : FLT_MIN;
        scale_err = amax > 0 ? scale_err / amax + SWIGLU_EPS : 0; /* relative: amax's error moves every v */
        for (j = 0; j < 128; j++) {
          double v = a[j] / scale, alt;
          uint8_t c = requant_code(v, da[j] / scale + fabs(v) * scale_err, &alt);
          aq[b * 128 + j] = fp8moe_e4m3_to_float(c) * scale;
          amb[b * 128 + j] = alt * scale;
          ambiguous += alt > 0;
        }
      }
      for (h = 0; h < H; h++) {
        double s = 0, sb = 0;
        for (j = 0; j < I; j++) {
          double wv = (double)fp8moe_e4m3_to_float(p->w2[((size_t)le * H + h) * I + j]) *
                      p->sw2[((size_t)le * (H / 128) + h / 128) * (I / 128) + j / 128];
          s += aq[j] * wv;
          sb += amb[j] * fabs(wv);
        }
        o[h] += wk * s;
        bud[h] += fabs(wk) * sb;
      }
    }
  }
  free(g);
  free(aq);
  free(amb);
  free(gabs);
  return ambiguous;
}

/* Tolerance against the double computation, once the possible requantization flips are allowed
 * for (naive_moe): what is left is fp32 accumulation error, ~1e-7 relative L2 (observed <= 4e-7
 * over thousands of seeds); 1e-5 leaves a wide margin and still catches a wrong scale, a swapped
 * up/gate, a dropped slot or a wrong rounding mode, which all give >= 1e-3. The flip allowance is
 * capped at 5% of the output on exact problems (where it is ~0; see naive_moe). */
#define MOE_TOL 1e-5

/* rel L2 of the part of |out - want| the flip budget does not explain; also reports the plain rel L2. */
static double run_and_compare(const problem *p, float *out_f32, uint16_t *out_bf16) {
  fp8moe_ref_moe_input in = input_of(p);
  size_t n = (size_t)p->T * p->c.hidden, i;
  double *want = (double *)malloc(sizeof(double) * n), *budget = (double *)malloc(sizeof(double) * n);
  double num = 0, den = 0, plain, budget_l2 = 0;
  int ambiguous;
  cr_assert(want && budget);
  fp8moe_ref_moe(&p->c, &in, NULL, 0, out_bf16, out_f32);
  ambiguous = naive_moe(p, want, budget);
  plain = rel_l2_fd(out_f32, want, n);
  for (i = 0; i < n; i++) {
    double d = fabs((double)out_f32[i] - want[i]) - budget[i];
    if (d > 0) num += d * d;
    den += want[i] * want[i];
    budget_l2 += budget[i] * budget[i];
  }
  if (getenv("FP8MOE_TEST_VERBOSE")) fprintf(stderr, "  ambiguous %d of %d, budget %.3g, plain %.3g\n", ambiguous, p->T * p->c.top_k * p->c.intermediate, sqrt(budget_l2 / den), plain);
  /* the allowance must stay small, never a blanket excuse: on exact problems it is one or two flips at
   * most (<= 1e-3 typically); the loose bound of the heavy-tailed ones can reach ~20% of a small output */
  cr_assert(budget_l2 <= (p->exact ? 0.05 * 0.05 : 0.5 * 0.5) * den,
            "flip budget too large: %.3g relative (%d ambiguous values)", sqrt(budget_l2 / den), ambiguous);
  cr_assert(plain <= 5e-2, "rel L2 %.3g even before the flip budget", plain);
  free(want);
  free(budget);
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* ---- activation quantizer --------------------------------------------- */

Test(quantize, hand_block) {
  /* block 0: amax 896 -> scale 896/448 = 2; 896/2 = 448 -> 0x7E (0.1111.110), -1/2 = -0.5 -> 1.0110.000 = 0xB0,
   * 3/2 = 1.5 -> 0.0111.100 = 0x3C, zeros -> 0x00. block 1: all zero -> scale FLT_MIN, codes 0. */
  uint16_t x[256];
  uint8_t q[256];
  float s[2];
  int j;
  memset(x, 0, sizeof x);
  x[0] = 0x4460; /* 896 */
  x[1] = 0xBF80; /* -1 */
  x[2] = 0x4040; /* 3 */
  fp8moe_ref_quantize_activations(1, 256, x, q, s);
  cr_assert_eq(s[0], 2.0f);
  cr_assert_eq(s[1], FLT_MIN, "all-zero block: scale %g, want FLT_MIN", s[1]);
  cr_assert_eq(q[0], 0x7E);
  cr_assert_eq(q[1], 0xB0);
  cr_assert_eq(q[2], 0x3C);
  for (j = 3; j < 256; j++) cr_assert_eq(q[j], 0, "code %d: 0x%02x", j, q[j]);
}

Test(quantize, round_to_nearest_even) {
  /* amax 448 -> scale 1. Near 16 the e4m3 spacing is 2: 17 is halfway between 16 (mantissa 000) and 18
   * (001) -> even -> 16 = 0.1011.000 = 0x58; 19 is halfway between 18 and 20 (010) -> 20 = 0x5A;
   * -17 -> 0xD8; 0.001953125 = 2^-9, the smallest subnormal -> 0x01; 2^-10 is halfway 0 / 2^-9 -> 0 */
  uint16_t x[128];
  uint8_t q[128];
  float s;
  memset(x, 0, sizeof x);
  x[0] = 0x43E0; /* 448 */
  x[1] = 0x4188; /* 17 */
  x[2] = 0x4198; /* 19 */
  x[3] = 0xC188; /* -17 */
  x[4] = 0x3B00; /* 2^-9 */
  x[5] = 0x3A80; /* 2^-10 */
  fp8moe_ref_quantize_activations(1, 128, x, q, &s);
  cr_assert_eq(s, 1.0f);
  cr_assert_eq(q[0], 0x7E);
  cr_assert_eq(q[1], 0x58);
  cr_assert_eq(q[2], 0x5A);
  cr_assert_eq(q[3], 0xD8);
  cr_assert_eq(q[4], 0x01);
  cr_assert_eq(q[5], 0x00);
}

Test(quantize, transposed_scales) {
  /* T=3, H=256: token t's block b holds the single nonzero value 448 * (1 + t + 3b) (exact in bf16 for
   * these small integers times 448 = 7 * 64), so scale[b][t] = 1 + t + 3b sits at b*T + t. */
  uint16_t x[3 * 256];
  uint8_t q[3 * 256];
  float s[2 * 3];
  int t, b;
  memset(x, 0, sizeof x);
  for (t = 0; t < 3; t++)
    for (b = 0; b < 2; b++) x[t * 256 + b * 128 + 5] = fp8moe_bf16_from_float(448.0f * (float)(1 + t + 3 * b));
  fp8moe_ref_quantize_activations(3, 256, x, q, s);
  for (t = 0; t < 3; t++)
    for (b = 0; b < 2; b++) {
      cr_assert_eq(s[b * 3 + t], (float)(1 + t + 3 * b), "scale[%d][%d] = %g", b, t, s[b * 3 + t]);
      cr_assert_eq(q[t * 256 + b * 128 + 5], 0x7E);
    }
}

Test(quantize, random_error_bounds) {
  rng_t r = {test_seed("quantize.random_error_bounds")};
  enum { T = 9, H = 1024, NB = H / 128 };
  static uint16_t x[T * H];
  static uint8_t q[T * H];
  float s[NB * T];
  int t, b, j;
  for (t = 0; t < T; t++)
    for (b = 0; b < NB; b++) {
      int kind = (int)(rng_next(&r) % 5);
      float mag = powf(2.0f, (float)((int)(rng_next(&r) % 60) - 30));
      for (j = 0; j < 128; j++)
        x[t * H + b * 128 + j] = kind == 0 ? (uint16_t)((rng_next(&r) & 1) ? 0x8000u : 0u) /* +-0 block */
                                           : fp8moe_bf16_from_float(mag * rng_normal(&r));
    }
  fp8moe_ref_quantize_activations(T, H, x, q, s);
  for (t = 0; t < T; t++)
    for (b = 0; b < NB; b++) {
      float amax = 0.0f, want_s;
      int saw_max = 0;
      for (j = 0; j < 128; j++) amax = fmaxf(amax, fabsf(fp8moe_bf16_to_float(x[t * H + b * 128 + j])));
      want_s = amax / 448.0f > FLT_MIN ? amax / 448.0f : FLT_MIN;
      cr_assert_eq(s[b * T + t], want_s, "token %d block %d: scale %g want %g", t, b, s[b * T + t], want_s);
      for (j = 0; j < 128; j++) {
        float xv = fp8moe_bf16_to_float(x[t * H + b * 128 + j]);
        uint8_t c = q[t * H + b * 128 + j];
        float dq = fp8moe_e4m3_to_float(c) * want_s;
        /* half an e4m3 ulp: 2^-4 relative for normals, 2^-10 * scale absolute on the subnormal grid;
         * the 2^-20 terms cover the fp32 rounding of x / scale before the fp8 rounding */
        double bound = (0.0625 + 1e-6) * fabs((double)xv) + (double)want_s * (0.0009765625 + 1e-6);
        cr_assert((c & 0x7f) != 0x7f, "NaN code for finite input");
        cr_assert(fabs((double)dq - xv) <= bound, "token %d block %d col %d: x %.9g dq %.9g", t, b, j, xv, dq);
        if (fabsf(xv) == amax && amax > 0.0f) {
          cr_assert_eq(c & 0x7f, 0x7e, "the block max must map to +-448, got 0x%02x", c);
          saw_max = 1;
        }
      }
      cr_assert(saw_max || amax == 0.0f);
    }
}

/* ---- the MoE ---------------------------------------------------------- */

Test(moe, hand_case) {
  /* E=K=1, H=I=128, T=1, weight 0.5.
   * x = 1.0 (0x38) everywhere with scale 1/128; W1 up rows = 1.0 (0x38), gate rows = 2.0 (0x40), scales 1:
   *   g_up = 128 * 1 * 1/128 = 1, g_gate = 2;  a = silu(2) * 1 = 2/(1+e^-2) = 1.7615942 for every j.
   * requant: scale = 1.7615942/448, a/scale = 448 -> 0x7E; W2 = 1.0 with scale 1/128:
   *   y = 128 * 448 * (1.7615942/448) * 1/128 = 1.7615942;  out = 0.5 * y = 0.8807971
   * bf16(0.8807971) = bf16(0x3F617BEB) = 0x3F61 (round down). */
  problem p;
  rng_t r = {1};
  fp8moe_ref_moe_input in;
  uint16_t ob[128];
  float of[128];
  int i;
  p = make_problem(&r, 1, 1, 128, 128, 1, 0, 1, 1);
  memset(p.x, 0x38, 128);
  memset(p.w1, 0x38, 128 * 128);
  memset(p.w1 + 128 * 128, 0x40, 128 * 128);
  memset(p.w2, 0x38, 128 * 128);
  p.sx[0] = 1.0f / 128;
  p.sw1[0] = p.sw1[1] = 1.0f;
  p.sw2[0] = 1.0f / 128;
  p.ids[0] = 0;
  p.w[0] = 0.5f;
  in = input_of(&p);
  fp8moe_ref_moe(&p.c, &in, NULL, 0, ob, of);
  for (i = 0; i < 128; i++) {
    cr_assert(fabsf(of[i] - 0.8807971f) <= 2e-7f, "col %d: %.9g", i, of[i]);
    cr_assert_eq(ob[i], 0x3F61, "col %d: 0x%04x", i, ob[i]);
  }
  free_problem(&p);
}

Test(moe, matches_double_small_shapes) {
  rng_t r = {test_seed("moe.matches_double_small_shapes")};
  static const int Es[3] = {1, 4, 8}, Ks[3] = {1, 2, 4}, Hs[2] = {128, 256}, Is[2] = {128, 384};
  int ei, ki, hi, ii, cases = 0;
  double worst = 0;
  for (ei = 0; ei < 3; ei++)
    for (ki = 0; ki < 3; ki++)
      for (hi = 0; hi < 2; hi++)
        for (ii = 0; ii < 2; ii++) {
          int E = Es[ei], K = Ks[ki], H = Hs[hi], I = Is[ii], T = 4;
          problem p;
          float *of;
          double err;
          if (K > E) continue;
          p = make_problem(&r, E, K, H, I, T, 0, E, 1);
          of = (float *)malloc(sizeof(float) * T * H);
          err = run_and_compare(&p, of, NULL);
          if (err > worst) worst = err;
          cr_assert(err <= MOE_TOL, "E %d K %d H %d I %d: rel L2 %.3g", E, K, H, I, err);
          free(of);
          free_problem(&p);
          cases++;
        }
  cr_assert_eq(cases, 28);
  fprintf(stderr, "moe.matches_double_small_shapes: worst rel L2 %.3g over %d shapes\n", worst, cases);
}

Test(moe, heavy_tailed_data) {
  /* general data: subnormal and +-448 codes, arbitrary scales, H up to 512. GEMM1 is no longer exact, so
   * the flip allowance is the loose worst-case one (see naive_moe); the remainder must still be fp32
   * accumulation noise */
  rng_t r = {test_seed("moe.heavy_tailed_data")};
  static const int shapes[4][4] = {{4, 2, 128, 128}, {8, 4, 256, 384}, {4, 4, 512, 256}, {1, 1, 384, 128}};
  int i;
  for (i = 0; i < 4; i++) {
    problem p = make_problem(&r, shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3], 4, 0, shapes[i][0], 0);
    float *of = (float *)malloc(sizeof(float) * 4 * shapes[i][2]);
    double err = run_and_compare(&p, of, NULL);
    cr_assert(err <= MOE_TOL, "shape %d: rel L2 beyond the flip allowance %.3g", i, err);
    free(of);
    free_problem(&p);
  }
}

Test(moe, expert_parallel_offsets) {
  rng_t r = {test_seed("moe.expert_parallel_offsets")};
  /* E=8 global, experts 3..6 here: slots on 0-2 and 7 contribute nothing */
  problem p = make_problem(&r, 8, 4, 256, 256, 6, 3, 4, 1);
  float of[6 * 256];
  double err = run_and_compare(&p, of, NULL);
  cr_assert(err <= MOE_TOL, "rel L2 %.3g", err);
  free_problem(&p);
  /* the last experts of the range, E_loc = 1 */
  p = make_problem(&r, 8, 2, 128, 128, 6, 7, 1, 1);
  err = run_and_compare(&p, of, NULL);
  cr_assert(err <= MOE_TOL, "rel L2 %.3g", err);
  free_problem(&p);
}

Test(moe, token_without_local_expert_is_exact_zero) {
  rng_t r = {test_seed("moe.token_without_local_expert_is_exact_zero")};
  problem p = make_problem(&r, 8, 4, 128, 256, 3, 2, 3, 1); /* experts 2, 3, 4 local */
  fp8moe_ref_moe_input in;
  uint16_t ob[3 * 128];
  float of[3 * 128];
  const int32_t none[4] = {0, 7, -1, 100}; /* non-local, non-local, invalid, invalid */
  int h, nonzero = 0;
  memcpy(p.ids + 4, none, sizeof none);    /* token 1 */
  p.ids[0] = 3;                            /* token 0 has a local slot */
  in = input_of(&p);
  memset(ob, 0xAB, sizeof ob);
  fp8moe_ref_moe(&p.c, &in, NULL, 0, ob, of);
  for (h = 0; h < 128; h++) {
    uint32_t bits;
    memcpy(&bits, &of[128 + h], 4);
    cr_assert_eq(ob[128 + h], 0, "token 1 col %d: 0x%04x", h, ob[128 + h]);
    cr_assert_eq(bits, 0u, "token 1 col %d: f32 bits 0x%08x", h, bits);
    nonzero += ob[h] != 0;
  }
  cr_assert(nonzero > 64, "token 0 should not be zero (%d nonzero)", nonzero);
  free_problem(&p);
}

Test(moe, invalid_ids_contribute_nothing) {
  rng_t r = {test_seed("moe.invalid_ids_contribute_nothing")};
  /* token 0: [-5, 2, 8, INT_MIN, INT_MAX, 1]; token 1: the valid slots only, [2, 1], same weights:
   * skipped slots leave the slot-order sum untouched, so the rows are bit-identical */
  problem p = make_problem(&r, 8, 6, 256, 128, 2, 0, 8, 1);
  const int32_t ids0[6] = {-5, 2, 8, INT_MIN, INT_MAX, 1};
  fp8moe_ref_moe_input in;
  float of[2 * 256];
  uint16_t ob[2 * 256];
  double err;
  int k;
  memcpy(p.ids, ids0, sizeof ids0);
  memcpy(p.x + 256, p.x, 256);                 /* token 1 = token 0 */
  p.sx[1] = p.sx[0];
  p.sx[2 + 1] = p.sx[2];
  for (k = 0; k < 6; k++) p.ids[6 + k] = -1;   /* token 1: invalid everywhere but slots 0, 1 */
  p.ids[6] = 2;
  p.w[6] = p.w[1];
  p.ids[7] = 1;
  p.w[7] = p.w[5];
  in = input_of(&p);
  fp8moe_ref_moe(&p.c, &in, NULL, 0, ob, of);
  cr_assert(memcmp(of, of + 256, 256 * sizeof(float)) == 0, "invalid ids changed the result");
  err = run_and_compare(&p, of, NULL);
  cr_assert(err <= MOE_TOL, "rel L2 %.3g", err);
  free_problem(&p);
}

Test(moe, token_subset_and_bf16_rounding) {
  rng_t r = {test_seed("moe.token_subset_and_bf16_rounding")};
  problem p = make_problem(&r, 4, 2, 128, 128, 7, 0, 4, 1);
  fp8moe_ref_moe_input in = input_of(&p);
  const int tokens[4] = {6, 0, 3, 3};
  float all_f[7 * 128], sub_f[4 * 128];
  uint16_t all_b[7 * 128], sub_b[4 * 128];
  int i, h;
  fp8moe_ref_moe(&p.c, &in, NULL, 12345 /* ignored */, all_b, all_f);
  fp8moe_ref_moe(&p.c, &in, tokens, 4, sub_b, NULL);
  fp8moe_ref_moe(&p.c, &in, tokens, 4, NULL, sub_f);
  for (i = 0; i < 4; i++)
    for (h = 0; h < 128; h++) {
      cr_assert(memcmp(&sub_f[i * 128 + h], &all_f[tokens[i] * 128 + h], 4) == 0, "row %d col %d", i, h);
      cr_assert_eq(sub_b[i * 128 + h], all_b[tokens[i] * 128 + h], "row %d col %d", i, h);
    }
  for (i = 0; i < 7 * 128; i++) cr_assert_eq(all_b[i], fp8moe_bf16_from_float(all_f[i]), "elem %d", i);
  free_problem(&p);
}

Test(moe, negative_and_zero_weights) {
  rng_t r = {test_seed("moe.negative_and_zero_weights")};
  /* slot weights of both signs and exact zeros must still match the double computation */
  problem p = make_problem(&r, 4, 4, 128, 256, 5, 0, 4, 1);
  float of[5 * 128];
  double err;
  int i;
  for (i = 0; i < 5 * 4; i++) p.w[i] = i % 3 == 0 ? 0.0f : (i % 3 == 1 ? -fabsf(p.w[i]) : fabsf(p.w[i]));
  err = run_and_compare(&p, of, NULL);
  cr_assert(err <= MOE_TOL, "rel L2 %.3g", err);
  free_problem(&p);
}

/* ---- fp8moe_reference_run --------------------------------------------- */

static fp8moe_args args_of(const problem *p, uint16_t *out) {
  fp8moe_args a;
  memset(&a, 0, sizeof a);
  a.num_tokens = p->T;
  a.local_expert_offset = p->off;
  a.local_num_experts = p->eloc;
  a.hidden_states = p->x;
  a.hidden_states_scale = p->sx;
  a.w1 = p->w1;
  a.w1_scale = p->sw1;
  a.w2 = p->w2;
  a.w2_scale = p->sw2;
  a.output = out;
  return a;
}

/* fp8moe_ref_moe on the given ids/weights, bf16 out. */
static void moe_pieces(const problem *p, const int32_t *ids, const float *w, uint16_t *out) {
  fp8moe_ref_moe_input in = input_of(p);
  in.topk_ids = ids;
  in.topk_weights = w;
  fp8moe_ref_moe(&p->c, &in, NULL, 0, out, NULL);
}

Test(reference_run, routed_packed_and_unpacked_match_pieces) {
  rng_t r = {test_seed("reference_run.routed_packed_and_unpacked_match_pieces")};
  enum { T = 6, K = 3, H = 256 };
  problem p = make_problem(&r, 8, K, H, 256, T, 2, 5, 1);
  uint16_t *out = (uint16_t *)xalloc(2 * T * H), *want = (uint16_t *)xalloc(2 * T * H);
  int32_t packed[T * K], dec_ids[T * K];
  uint16_t wb[T * K];
  float wr[T * K];
  fp8moe_args a;
  int i;
  p.ids[1] = 9;   /* invalid: >= E */
  p.ids[4] = 40000;
  for (i = 0; i < T * K; i++) {
    packed[i] = fp8moe_topk_pack(p.ids[i], p.w[i]);
    wb[i] = fp8moe_bf16_from_float(p.w[i]);
    wr[i] = fp8moe_bf16_to_float(wb[i]);
  }
  /* packed: the weights are the bf16-rounded ones */
  a = args_of(&p, out);
  a.topk_packed = packed;
  cr_assert_eq(fp8moe_reference_run(&p.c, &a, 1), FP8MOE_OK);
  moe_pieces(&p, p.ids, wr, want);
  cr_assert(memcmp(out, want, 2 * T * H) == 0, "packed path differs from the pieces");
  /* unpacked bf16: same numbers */
  memset(out, 0, 2 * T * H);
  a.topk_packed = NULL;
  a.topk_ids = p.ids;
  a.topk_weights = wb;
  a.topk_weights_dtype = FP8MOE_DTYPE_BF16;
  cr_assert_eq(fp8moe_reference_run(&p.c, &a, 1), FP8MOE_OK);
  cr_assert(memcmp(out, want, 2 * T * H) == 0, "unpacked bf16 path differs from the pieces");
  /* unpacked fp32: the exact weights */
  a.topk_weights = p.w;
  a.topk_weights_dtype = FP8MOE_DTYPE_FP32;
  cr_assert_eq(fp8moe_reference_run(&p.c, &a, 1), FP8MOE_OK);
  moe_pieces(&p, p.ids, p.w, want);
  cr_assert(memcmp(out, want, 2 * T * H) == 0, "unpacked fp32 path differs from the pieces");
  /* and the decode helper agrees with what the run used */
  fp8moe_ref_decode_topk(T, K, packed, NULL, NULL, FP8MOE_DTYPE_FP32, dec_ids, wr);
  for (i = 0; i < T * K; i++) cr_assert_eq(dec_ids[i], p.ids[i]);
  free(out);
  free(want);
  free_problem(&p);
}

Test(reference_run, non_routed_matches_pieces_every_method) {
  rng_t r = {test_seed("reference_run.non_routed_matches_pieces_every_method")};
  enum { T = 5, E = 16, H = 128 };
  int m, bf;
  for (m = 0; m < FP8MOE_ROUTING_COUNT_; m++)
    for (bf = 0; bf < 2; bf++) {
      int K = m == FP8MOE_ROUTING_LLAMA4 ? 1 : 4, i;
      problem p = make_problem(&r, E, K, H, 128, T, 4, 12, 1);
      float logits[T * E], bias[E], lf[T * E], bf_bias[E], w[T * 4];
      uint16_t logits_b[T * E], bias_b[E];
      int32_t ids[T * 4];
      uint16_t *out = (uint16_t *)xalloc(2 * T * H), *want = (uint16_t *)xalloc(2 * T * H);
      fp8moe_args a = args_of(&p, out);
      for (i = 0; i < T * E; i++) {
        logits[i] = 2.0f * rng_normal(&r);
        logits_b[i] = fp8moe_bf16_from_float(logits[i]);
        lf[i] = bf ? fp8moe_bf16_to_float(logits_b[i]) : logits[i];
      }
      for (i = 0; i < E; i++) {
        bias[i] = 0.2f * rng_normal(&r);
        bias_b[i] = fp8moe_bf16_from_float(bias[i]);
        bf_bias[i] = bf ? fp8moe_bf16_to_float(bias_b[i]) : bias[i];
      }
      a.routing_method = m;
      a.routing_logits = bf ? (const void *)logits_b : (const void *)logits;
      a.logits_dtype = bf ? FP8MOE_DTYPE_BF16 : FP8MOE_DTYPE_FP32;
      a.routing_bias = bf ? (const void *)bias_b : (const void *)bias;
      a.bias_dtype = a.logits_dtype;
      a.n_group = m == FP8MOE_ROUTING_DEEPSEEK_V3 ? 4 : 0;
      a.topk_group = 2;
      a.routed_scaling_factor = 2.5f;
      cr_assert_eq(fp8moe_reference_run(&p.c, &a, 0), FP8MOE_OK, "method %d", m);
      fp8moe_ref_route(m, T, E, K, lf, bf_bias, a.n_group, 2, 2.5f, ids, w);
      moe_pieces(&p, ids, w, want);
      cr_assert(memcmp(out, want, 2 * T * H) == 0, "method %d (bf16 %d): run differs from route + moe", m, bf);
      free(out);
      free(want);
      free_problem(&p);
    }
}

Test(reference_run, bad_arguments_leave_output_untouched) {
  rng_t r = {test_seed("reference_run.bad_arguments_leave_output_untouched")};
  enum { T = 3, H = 128 };
  problem p = make_problem(&r, 8, 2, H, 128, T, 0, 8, 1);
  uint16_t *out = (uint16_t *)xalloc(2 * T * H);
  int32_t packed[T * 2] = {0, 0, 0, 0, 0, 0};
  fp8moe_config bad_c = p.c;
  fp8moe_args a;
  int i, v;
  for (i = 0; i < T * H; i++) out[i] = 0xFFC1u; /* poison */
  for (v = 0; v < 8; v++) {
    fp8moe_status want, got;
    const fp8moe_config *c = &p.c;
    a = args_of(&p, out);
    a.topk_packed = packed;
    switch (v) {
    case 0: a.w1 = NULL; want = FP8MOE_ERROR_NULL_ARGUMENT; break;
    case 1: a.hidden_states = p.x + 1; want = FP8MOE_ERROR_MISALIGNED_POINTER; break;
    case 2: a.topk_ids = p.ids; a.topk_weights = p.w; want = FP8MOE_ERROR_INVALID_ROUTED_INPUT; break;
    case 3: a.local_num_experts = 0; want = FP8MOE_ERROR_INVALID_EXPERT_RANGE; break;
    case 4: a.num_tokens = -1; want = FP8MOE_ERROR_INVALID_NUM_TOKENS; break;
    case 5: bad_c.hidden = 100; c = &bad_c; want = FP8MOE_ERROR_INVALID_SHAPE; break;
    case 6: a.output = NULL; want = FP8MOE_ERROR_NULL_ARGUMENT; break;
    default: a.topk_packed = NULL; a.routing_method = 9; a.routing_logits = p.w; /* non-routed */
      want = FP8MOE_ERROR_INVALID_ROUTING_METHOD; break;
    }
    got = fp8moe_reference_run(c, &a, v == 7 ? 0 : 1);
    cr_assert_eq(got, want, "case %d: %s, want %s", v, fp8moe_status_string(got), fp8moe_status_string(want));
    for (i = 0; i < T * H; i++) cr_assert_eq(out[i], 0xFFC1u, "case %d wrote element %d", v, i);
  }
  cr_assert_eq(fp8moe_reference_run(&p.c, NULL, 1), FP8MOE_ERROR_NULL_ARGUMENT);
  cr_assert_eq(fp8moe_reference_run(NULL, &a, 1), FP8MOE_ERROR_NULL_ARGUMENT);
  /* T = 0: valid, and nothing is read or written (all data pointers may be NULL) */
  memset(&a, 0, sizeof a);
  a.local_num_experts = 8;
  a.topk_packed = packed;
  cr_assert_eq(fp8moe_reference_run(&p.c, &a, 1), FP8MOE_OK);
  free(out);
  free_problem(&p);
}
