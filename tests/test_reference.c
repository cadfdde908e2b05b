/* tests/test_reference.c - the CPU reference MoE, activation quantizer and
 * fp8moe_reference_run (reference.h, SPEC sections 2 and 5).
 *
 * The MoE is checked against a second, independent computation written here:
 * everything dequantized to double, plain triple loops with the scales folded
 * into the operands (no per-block partial sums), SwiGLU and requantization in
 * double. Where fp32 and double may legitimately requantize a value to
 * neighbouring fp8 codes, the possible effect is computed and allowed for
 * (naive_moe); everything else must agree to 1e-5 relative L2 (observed ~2e-7).
 * The 0.3 fields (SPEC section 5.1) are checked the same way: the double
 * computation applies the per-expert SwiGLU variant (clamp, alpha, beta) and
 * adds the shared experts after the routed slots; bitwise identities pin the
 * rest (shared experts = extra slots of weight 1, routing replay round trip,
 * zero fields = the pre-0.3 computation transcribed here).
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
  /* 0.3: NULL / 0 unless set_variant / add_shared */
  float *alpha, *beta, *limit; /* [eloc] each, or NULL */
  int S;
  uint8_t *shw1, *shw2;        /* [S,2I,H], [S,H,I] */
  float *shs1, *shs2;          /* [S,2I/128,H/128], [S,H/128,I/128] */
} problem;

static problem make_problem(rng_t *r, int E, int K, int H, int I, int T, int off, int eloc, int exact) {
  problem p;
  cr_assert(!exact || H <= 256, "exact GEMM1 needs H <= 256");
  memset(&p, 0, sizeof p);
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

/* S shared experts, drawn like the routed ones (exact GEMM1 when the problem is exact). */
static void add_shared(rng_t *r, problem *p, int S) {
  const int H = p->c.hidden, I = p->c.intermediate;
  size_t i, n1 = (size_t)S * 2 * I * H, n2 = (size_t)S * H * I;
  size_t ns1 = (size_t)S * (2 * I / 128) * (H / 128), ns2 = (size_t)S * (H / 128) * (I / 128);
  p->S = S;
  p->shw1 = (uint8_t *)xalloc(n1);
  p->shw2 = (uint8_t *)xalloc(n2);
  p->shs1 = (float *)xalloc(sizeof(float) * ns1);
  p->shs2 = (float *)xalloc(sizeof(float) * ns2);
  for (i = 0; i < n1; i++) p->shw1[i] = p->exact ? rand_fp8_exact(r) : rand_fp8(r);
  for (i = 0; i < n2; i++) p->shw2[i] = rand_fp8(r);
  for (i = 0; i < ns1; i++)
    p->shs1[i] = p->exact ? ((rng_next(r) & 1) ? 0.03125f : 0.015625f) : (0.5f + rng_uniform(r)) / 16.0f / sqrtf((float)H);
  for (i = 0; i < ns2; i++) p->shs2[i] = (0.5f + rng_uniform(r)) / 16.0f / sqrtf((float)I);
}

/* Per-expert SwiGLU coefficients, different for every expert: alpha in [0.5, 2.5], beta in [-1, 1], limit in
 * [lim_lo, lim_hi] (every fourth expert unclamped, +inf). which: bit 0 alpha, bit 1 beta, bit 2 limit
 * (the others stay NULL, i.e. their defaults). */
static void set_variant(rng_t *r, problem *p, int which, float lim_lo, float lim_hi) {
  int e;
  p->alpha = (which & 1) ? (float *)xalloc(sizeof(float) * p->eloc) : NULL;
  p->beta = (which & 2) ? (float *)xalloc(sizeof(float) * p->eloc) : NULL;
  p->limit = (which & 4) ? (float *)xalloc(sizeof(float) * p->eloc) : NULL;
  for (e = 0; e < p->eloc; e++) {
    if (p->alpha) p->alpha[e] = 0.5f + 2.0f * rng_uniform(r);
    if (p->beta) p->beta[e] = 2.0f * rng_uniform(r) - 1.0f;
    if (p->limit) p->limit[e] = e % 4 == 3 ? INFINITY : lim_lo + (lim_hi - lim_lo) * rng_uniform(r);
  }
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
  free(p->alpha);
  free(p->beta);
  free(p->limit);
  free(p->shw1);
  free(p->shw2);
  free(p->shs1);
  free(p->shs2);
}

static fp8moe_ref_moe_input input_of(const problem *p) {
  fp8moe_ref_moe_input in;
  memset(&in, 0, sizeof in);
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
  in.swiglu_alpha = p->alpha;
  in.swiglu_beta = p->beta;
  in.swiglu_limit = p->limit;
  in.num_shared_experts = p->S;
  in.shared_w1 = p->shw1;
  in.shared_w1_scale = p->shs1;
  in.shared_w2 = p->shw2;
  in.shared_w2_scale = p->shs2;
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

/* What naive_moe saw: requantized values near a code midpoint, and how many SwiGLU inputs the limits clamped
 * (so a test can check that its limits really clamp). */
typedef struct naive_stats {
  int ambiguous, clamped_gate, clamped_up, activations;
} naive_stats;

/* One expert on token t, in double: o[h] += wk * y[h], bud[h] += |wk| * (flip allowance of y[h]).
 * w1.. point at this expert's matrices; alpha/beta/limit its SwiGLU coefficients. */
static void naive_expert(const problem *p, int t, const uint8_t *w1, const float *sw1, const uint8_t *w2,
                         const float *sw2, double alpha, double beta, double limit, double wk, double *o,
                         double *bud, double *g, double *gabs, double *aq, double *amb, naive_stats *st) {
  const int H = p->c.hidden, I = p->c.intermediate, T = p->T;
  const double g_eps = p->exact ? 0.0 : G1_EPS;
  int n, h, j, b;
  for (n = 0; n < 2 * I; n++) {
    double s = 0, sa = 0;
    for (h = 0; h < H; h++) {
      double xv = (double)fp8moe_e4m3_to_float(p->x[(size_t)t * H + h]) * p->sx[(h / 128) * T + t];
      double wv = (double)fp8moe_e4m3_to_float(w1[(size_t)n * H + h]) * sw1[(size_t)(n / 128) * (H / 128) + h / 128];
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
      double up = g[b * 128 + j], gate = g[I + b * 128 + j];
      double gc = gate > limit ? limit : gate, uc = up > limit ? limit : (up < -limit ? -limit : up);
      double z = alpha * gc, sig = 1.0 / (1.0 + exp(-z));
      a[j] = gc * sig * (uc + beta);
      st->clamped_gate += gate > limit;
      st->clamped_up += fabs(up) > limit;
      st->activations++;
      /* error bound of the fp32 a: GEMM1 errors through SwiGLU (|d(g sigmoid(alpha g))/dg| < 1.1 for any alpha),
       * exp, the products, and the rounding of alpha * g (relative |z| 2^-24 on the sigmoid) */
      da[j] = fabs(gc * sig) * g_eps * gabs[b * 128 + j] + 1.1 * fabs(uc + beta) * g_eps * gabs[I + b * 128 + j] +
              (SWIGLU_EPS + fabs(z) * 6e-8) * fabs(a[j]);
      if (fabs(a[j]) > amax) amax = fabs(a[j]), scale_err = da[j];
    }
    scale = amax / 448.0 > FLT_MIN ? amax / 448.0 : FLT_MIN;
    scale_err = amax > 0 ? scale_err / amax + SWIGLU_EPS : 0; /* relative: amax's error moves every v */
    for (j = 0; j < 128; j++) {
      double v = a[j] / scale, alt;
      uint8_t c = requant_code(v, da[j] / scale + fabs(v) * scale_err, &alt);
      aq[b * 128 + j] = fp8moe_e4m3_to_float(c) * scale;
      amb[b * 128 + j] = alt * scale;
      st->ambiguous += alt > 0;
    }
  }
  for (h = 0; h < H; h++) {
    double s = 0, sb = 0;
    for (j = 0; j < I; j++) {
      double wv = (double)fp8moe_e4m3_to_float(w2[(size_t)h * I + j]) * sw2[(size_t)(h / 128) * (I / 128) + j / 128];
      s += aq[j] * wv;
      sb += amb[j] * fabs(wv);
    }
    o[h] += wk * s;
    bud[h] += fabs(wk) * sb;
  }
}

/* The independent double-precision MoE: out [T, H], the routed slots then the shared experts (weight 1,
 * default SwiGLU). Returns the number of ambiguous requantizations; *st (may be NULL) gets the details. */
static int naive_moe_stats(const problem *p, double *out, double *budget, naive_stats *st_out) {
  const int E = p->c.num_experts, K = p->c.top_k, H = p->c.hidden, I = p->c.intermediate, T = p->T;
  const size_t n1 = (size_t)2 * I * H, n2 = (size_t)H * I, ns1 = (size_t)(2 * I / 128) * (H / 128),
               ns2 = (size_t)(H / 128) * (I / 128);
  double *g = (double *)malloc(sizeof(double) * 2 * I), *aq = (double *)malloc(sizeof(double) * I);
  double *amb = (double *)malloc(sizeof(double) * I), *gabs = (double *)malloc(sizeof(double) * 2 * I);
  naive_stats st = {0, 0, 0, 0};
  int t, k, h, s;
  cr_assert(g && aq && amb && gabs);
  for (t = 0; t < T; t++) {
    double *o = out + (size_t)t * H, *bud = budget + (size_t)t * H;
    for (h = 0; h < H; h++) o[h] = bud[h] = 0.0;
    for (k = 0; k < K; k++) {
      int id = p->ids[t * K + k], le;
      if (id < 0 || id >= E) continue;
      le = id - p->off;
      if (le < 0 || le >= p->eloc) continue;
      naive_expert(p, t, p->w1 + (size_t)le * n1, p->sw1 + (size_t)le * ns1, p->w2 + (size_t)le * n2,
                   p->sw2 + (size_t)le * ns2, p->alpha ? p->alpha[le] : 1.0, p->beta ? p->beta[le] : 0.0,
                   p->limit ? (double)p->limit[le] : INFINITY, p->w[t * K + k], o, bud, g, gabs, aq, amb, &st);
    }
    for (s = 0; s < p->S; s++)
      naive_expert(p, t, p->shw1 + (size_t)s * n1, p->shs1 + (size_t)s * ns1, p->shw2 + (size_t)s * n2,
                   p->shs2 + (size_t)s * ns2, 1.0, 0.0, INFINITY, 1.0, o, bud, g, gabs, aq, amb, &st);
  }
  free(g);
  free(aq);
  free(amb);
  free(gabs);
  if (st_out) *st_out = st;
  return st.ambiguous;
}

/* Tolerance against the double computation, once the possible requantization flips are allowed
 * for (naive_moe): what is left is fp32 accumulation error, ~1e-7 relative L2 (observed <= 4e-7
 * over thousands of seeds); 1e-5 leaves a wide margin and still catches a wrong scale, a swapped
 * up/gate, a dropped slot or a wrong rounding mode, which all give >= 1e-3. The flip allowance is
 * capped at 5% of the output on exact problems (where it is ~0; see naive_moe). */
#define MOE_TOL 1e-5

/* rel L2 of the part of |out - want| the flip budget does not explain; also reports the plain rel L2.
 * *st (may be NULL) gets what the double computation saw. */
static double run_and_compare_stats(const problem *p, float *out_f32, uint16_t *out_bf16, naive_stats *st) {
  fp8moe_ref_moe_input in = input_of(p);
  size_t n = (size_t)p->T * p->c.hidden, i;
  double *want = (double *)malloc(sizeof(double) * n), *budget = (double *)malloc(sizeof(double) * n);
  double num = 0, den = 0, plain, budget_l2 = 0;
  int ambiguous;
  cr_assert(want && budget);
  fp8moe_ref_moe(&p->c, &in, NULL, 0, out_bf16, out_f32);
  ambiguous = naive_moe_stats(p, want, budget, st);
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

static double run_and_compare(const problem *p, float *out_f32, uint16_t *out_bf16) {
  return run_and_compare_stats(p, out_f32, out_bf16, NULL);
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

/* ---- the 0.3 fields in fp8moe_ref_moe (SPEC section 5.1) ----------------- */

Test(moe, swiglu_variant_hand_case) {
  /* E=K=2, H=I=128, T=2. Token 0: x = 1.0 (0x38), token 1: x = -1.0 (0xB8), scales 1/128; both experts have
   * W1 up rows -3.0 (0xC4) and gate rows 2.0 (0x40) with scales 1, so token 0 has up = -3, gate = 2 and token 1
   * up = 3, gate = -2 in every column. W2 = 1.0 with scale 1/128, so y = a (see hand_case).
   * expert 0: alpha 2, beta 0.5, limit 1.5 (both clamp directions):
   *   token 0: g = min(2, 1.5) = 1.5, u = clamp(-3) = -1.5: a = 1.5 sigmoid(3) (-1.5 + 0.5) = -1.4288...
   *   token 1: g = min(-2, 1.5) = -2 (the gate is only clamped from above), u = 1.5: a = -2 sigmoid(-4) * 2
   * expert 1: the defaults (alpha 1, beta 0, no limit): a = silu(gate) * up.
   * out = 0.5 a_0 + 0.25 a_1 */
  problem p;
  rng_t r = {1};
  fp8moe_ref_moe_input in;
  uint16_t ob[2 * 128];
  float of[2 * 128];
  double want[2];
  int e, t, i;
  cr_assert_eq(fp8moe_e4m3_to_float(0xC4), -3.0f);
  p = make_problem(&r, 2, 2, 128, 128, 2, 0, 2, 1);
  memset(p.x, 0x38, 128);
  memset(p.x + 128, 0xB8, 128);
  for (e = 0; e < 2; e++) {
    memset(p.w1 + (size_t)e * 256 * 128, 0xC4, 128 * 128);
    memset(p.w1 + (size_t)e * 256 * 128 + 128 * 128, 0x40, 128 * 128);
    memset(p.w2 + (size_t)e * 128 * 128, 0x38, 128 * 128);
    p.sw1[2 * e] = p.sw1[2 * e + 1] = 1.0f;
    p.sw2[e] = 1.0f / 128;
  }
  p.sx[0] = p.sx[1] = 1.0f / 128;
  for (t = 0; t < 2; t++) {
    p.ids[2 * t] = 0;
    p.ids[2 * t + 1] = 1;
    p.w[2 * t] = 0.5f;
    p.w[2 * t + 1] = 0.25f;
  }
  p.alpha = (float *)xalloc(2 * sizeof(float));
  p.beta = (float *)xalloc(2 * sizeof(float));
  p.limit = (float *)xalloc(2 * sizeof(float));
  p.alpha[0] = 2.0f, p.beta[0] = 0.5f, p.limit[0] = 1.5f;
  p.alpha[1] = 1.0f, p.beta[1] = 0.0f, p.limit[1] = INFINITY;
  want[0] = 0.5 * (1.5 / (1.0 + exp(-3.0)) * -1.0) + 0.25 * (2.0 / (1.0 + exp(-2.0)) * -3.0);
  want[1] = 0.5 * (-2.0 / (1.0 + exp(4.0)) * 2.0) + 0.25 * (-2.0 / (1.0 + exp(2.0)) * 3.0);
  in = input_of(&p);
  fp8moe_ref_moe(&p.c, &in, NULL, 0, ob, of);
  for (t = 0; t < 2; t++)
    for (i = 0; i < 128; i++) {
      cr_assert(fabs(of[t * 128 + i] - want[t]) <= 1e-6 * fabs(want[t]), "token %d col %d: %.9g, want %.9g", t, i,
                of[t * 128 + i], want[t]);
      cr_assert_eq(ob[t * 128 + i], fp8moe_bf16_from_float(of[t * 128 + i]));
    }
  /* the defaults give another number: the coefficients were applied */
  in.swiglu_alpha = in.swiglu_beta = in.swiglu_limit = NULL;
  fp8moe_ref_moe(&p.c, &in, NULL, 0, NULL, of);
  cr_assert(fabs(of[0] - want[0]) > 0.1, "token 0 with the defaults: %.9g", of[0]);
  free_problem(&p);
}

Test(moe, swiglu_variant_matches_double) {
  /* per-expert alpha / beta / limit, different for every expert, some arrays NULL, on expert-parallel shards
   * (an index by global id instead of local would read other coefficients); limits in the range of |gate| and
   * |up| so that a good share of both is clamped */
  rng_t r = {test_seed("moe.swiglu_variant_matches_double")};
  static const int shapes[][7] = {/* E, K, H, I, off, eloc, which */
                                  {8, 4, 256, 256, 2, 5, 7}, {4, 2, 128, 384, 0, 4, 5}, {6, 3, 256, 128, 1, 4, 7},
                                  {8, 2, 128, 256, 4, 4, 2}, {5, 3, 128, 128, 0, 5, 4}, {8, 4, 256, 128, 3, 5, 3}};
  size_t i, n;
  for (i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
    const int *s = shapes[i];
    problem p = make_problem(&r, s[0], s[1], s[2], s[3], 6, s[4], s[5], 1);
    float *of = (float *)malloc(sizeof(float) * 6 * s[2]), *od = (float *)malloc(sizeof(float) * 6 * s[2]);
    fp8moe_ref_moe_input in;
    naive_stats st;
    double err, diff = 0, den = 0;
    {
      /* limits drawn in [0.5, 2); where the data's activations are smaller
       * than that (some shapes, some seeds), halve the range and draw again,
       * so that every run clamps enough to test the clamp */
      float lo = 0.5f, hi = 2.0f;
      int tries;
      for (tries = 0;; tries++) {
        set_variant(&r, &p, s[6], lo, hi);
        err = run_and_compare_stats(&p, of, NULL, &st);
        if (!(s[6] & 4) || tries == 6 ||
            (st.clamped_gate > st.activations / 50 && st.clamped_up > st.activations / 50))
          break;
        free(p.alpha);
        free(p.beta);
        free(p.limit);
        lo *= 0.5f;
        hi *= 0.5f;
      }
    }
    if (getenv("FP8MOE_TEST_VERBOSE"))
      fprintf(stderr, "  shape %zu: clamped %d gates, %d ups of %d; rel L2 %.3g\n", i, st.clamped_gate, st.clamped_up,
              st.activations, err);
    cr_assert(err <= MOE_TOL, "shape %zu: rel L2 %.3g", i, err);
    if (s[6] & 4) {
      cr_assert(st.clamped_gate > st.activations / 50 && st.clamped_up > st.activations / 50,
                "shape %zu: the limits clamp too little to test anything (%d gates, %d ups of %d)", i,
                st.clamped_gate, st.clamped_up, st.activations);
      cr_assert(st.clamped_up < st.activations * 9 / 10, "shape %zu: everything clamped", i);
    }
    /* and the coefficients matter: the default computation is far from this one */
    in = input_of(&p);
    in.swiglu_alpha = in.swiglu_beta = in.swiglu_limit = NULL;
    fp8moe_ref_moe(&p.c, &in, NULL, 0, NULL, od);
    for (n = 0; n < (size_t)6 * s[2]; n++) {
      diff += ((double)of[n] - od[n]) * ((double)of[n] - od[n]);
      den += (double)od[n] * od[n];
    }
    cr_assert(diff > 1e-4 * den, "shape %zu: the variant changed nothing (rel %.3g)", i, sqrt(diff / den));
    free(of);
    free(od);
    free_problem(&p);
  }
}

Test(moe, shared_experts_match_double) {
  rng_t r = {test_seed("moe.shared_experts_match_double")};
  static const int shapes[][7] = {/* E, K, H, I, off, eloc, S */
                                  {8, 2, 128, 256, 0, 8, 1}, {8, 4, 256, 128, 2, 4, 2}, {4, 2, 128, 128, 0, 4, 3},
                                  {16, 4, 256, 256, 4, 6, FP8MOE_MAX_SHARED_EXPERTS}};
  size_t i;
  for (i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
    const int *s = shapes[i], T = 5, H = s[2];
    problem p = make_problem(&r, s[0], s[1], s[2], s[3], T, s[4], s[5], 1);
    float *of = (float *)malloc(sizeof(float) * T * H);
    double err;
    int k, h, nonzero = 0;
    add_shared(&r, &p, s[6]);
    if (i % 2) set_variant(&r, &p, 7, 0.5f, 2.0f); /* the routed experts' variant must not touch the shared */
    for (k = 0; k < s[1]; k++) p.ids[k] = k % 2 ? -1 : (s[4] > 0 ? 0 : 99); /* token 0: no local routed slot */
    err = run_and_compare(&p, of, NULL);
    cr_assert(err <= MOE_TOL, "shape %zu: rel L2 %.3g", i, err);
    for (h = 0; h < H; h++) nonzero += of[h] != 0.0f;
    cr_assert(nonzero > H / 2, "shape %zu: token 0 (no local routed slot) lost its shared experts", i);
    free(of);
    free_problem(&p);
  }
}

/* A shared expert is an extra local expert in an extra slot of weight 1 after the routed slots, with the default
 * SwiGLU: the two computations must agree bit for bit (1 * y == y), which pins the combine order. */
Test(moe, shared_experts_are_extra_slots_of_weight_one) {
  rng_t r = {test_seed("moe.shared_experts_are_extra_slots_of_weight_one")};
  enum { E = 8, K = 3, H = 256, I = 256, T = 6, OFF = 2, ELOC = 4, S = 2, KB = K + S, ELOCB = ELOC + S };
  const size_t n1 = (size_t)2 * I * H, n2 = (size_t)H * I, ns1 = (2 * I / 128) * (H / 128), ns2 = (H / 128) * (I / 128);
  int i, t, k;
  for (i = 0; i < 2; i++) {
    problem a = make_problem(&r, E, K, H, I, T, OFF, ELOC, i == 0);
    problem b = make_problem(&r, E, KB, H, I, T, OFF, ELOCB, i == 0);
    fp8moe_ref_moe_input ia, ib;
    float of_a[T * H], of_b[T * H];
    uint16_t ob_a[T * H], ob_b[T * H];
    add_shared(&r, &a, S);
    set_variant(&r, &a, 7, 0.5f, 2.0f);
    set_variant(&r, &b, 7, 0.5f, 2.0f);
    /* b's weights: a's routed experts, then a's shared ones; same activations */
    memcpy(b.x, a.x, (size_t)T * H);
    memcpy(b.sx, a.sx, sizeof(float) * T * (H / 128));
    memcpy(b.w1, a.w1, ELOC * n1);
    memcpy(b.w1 + ELOC * n1, a.shw1, S * n1);
    memcpy(b.w2, a.w2, ELOC * n2);
    memcpy(b.w2 + ELOC * n2, a.shw2, S * n2);
    memcpy(b.sw1, a.sw1, sizeof(float) * ELOC * ns1);
    memcpy(b.sw1 + ELOC * ns1, a.shs1, sizeof(float) * S * ns1);
    memcpy(b.sw2, a.sw2, sizeof(float) * ELOC * ns2);
    memcpy(b.sw2 + ELOC * ns2, a.shs2, sizeof(float) * S * ns2);
    for (k = 0; k < ELOCB; k++) {
      b.alpha[k] = k < ELOC ? a.alpha[k] : 1.0f;
      b.beta[k] = k < ELOC ? a.beta[k] : 0.0f;
      b.limit[k] = k < ELOC ? a.limit[k] : INFINITY;
    }
    /* a's slots: ids that are local in b but not in a (6, 7) are made invalid; token 1 has no local slot */
    for (t = 0; t < T; t++)
      for (k = 0; k < K; k++) {
        int32_t *id = &a.ids[t * K + k];
        if (*id >= OFF + ELOC || t == 1) *id = t == 1 && k == 0 ? 0 : -1;
        b.ids[t * KB + k] = *id;
        b.w[t * KB + k] = a.w[t * K + k];
      }
    for (t = 0; t < T; t++)
      for (k = 0; k < S; k++) {
        b.ids[t * KB + K + k] = OFF + ELOC + k;
        b.w[t * KB + K + k] = 1.0f;
      }
    ia = input_of(&a);
    ib = input_of(&b);
    fp8moe_ref_moe(&a.c, &ia, NULL, 0, ob_a, of_a);
    fp8moe_ref_moe(&b.c, &ib, NULL, 0, ob_b, of_b);
    cr_assert(memcmp(of_a, of_b, sizeof of_a) == 0, "%s data: shared experts differ from slots of weight 1",
              i == 0 ? "exact" : "heavy-tailed");
    cr_assert(memcmp(ob_a, ob_b, sizeof ob_a) == 0);
    free_problem(&a);
    free_problem(&b);
  }
}

Test(moe, shared_experts_expert_parallel_shards) {
  /* E = 8 over three ranks ([0,3), [3,6), [6,8)); the S = 2 shared experts on rank 1 only. The ranks' fp32
   * partial sums add up to the single-rank result (up to fp32 reassociation); a token with no routed slot on
   * rank 1 still gets the shared experts there, and nothing on the other ranks. */
  rng_t r = {test_seed("moe.shared_experts_expert_parallel_shards")};
  enum { E = 8, K = 3, H = 128, I = 256, T = 8, S = 2, R = 3 };
  static const int rank_off[R] = {0, 3, 6}, rank_n[R] = {3, 3, 2};
  const size_t n1 = (size_t)2 * I * H, n2 = (size_t)H * I, ns1 = (2 * I / 128) * (H / 128), ns2 = (H / 128) * (I / 128);
  problem p = make_problem(&r, E, K, H, I, T, 0, E, 1);
  fp8moe_ref_moe_input full, rk;
  float of_full[T * H], of_rank[R][T * H], of_shared_only[T * H];
  int32_t none[T * K];
  double num = 0, den = 0, err;
  int q, i, h;
  add_shared(&r, &p, S);
  set_variant(&r, &p, 7, 0.5f, 2.0f);
  p.ids[0] = 0, p.ids[1] = 1, p.ids[2] = 2; /* token 0: rank 0 only */
  err = run_and_compare(&p, of_full, NULL);
  cr_assert(err <= MOE_TOL, "single rank: rel L2 %.3g", err);
  full = input_of(&p);
  for (q = 0; q < R; q++) {
    rk = full;
    rk.local_expert_offset = rank_off[q];
    rk.local_num_experts = rank_n[q];
    rk.w1 = p.w1 + rank_off[q] * n1;
    rk.w2 = p.w2 + rank_off[q] * n2;
    rk.w1_scale = p.sw1 + rank_off[q] * ns1;
    rk.w2_scale = p.sw2 + rank_off[q] * ns2;
    rk.swiglu_alpha = p.alpha + rank_off[q];
    rk.swiglu_beta = p.beta + rank_off[q];
    rk.swiglu_limit = p.limit + rank_off[q];
    rk.num_shared_experts = q == 1 ? S : 0;
    fp8moe_ref_moe(&p.c, &rk, NULL, 0, NULL, of_rank[q]);
    if (q == 1) { /* the same rank with no routed slot anywhere: the shared experts alone */
      for (i = 0; i < T * K; i++) none[i] = -1;
      rk.topk_ids = none;
      fp8moe_ref_moe(&p.c, &rk, NULL, 0, NULL, of_shared_only);
    }
  }
  for (i = 0; i < T * H; i++) {
    double sum = (double)of_rank[0][i] + of_rank[1][i] + of_rank[2][i], d = sum - of_full[i];
    num += d * d;
    den += (double)of_full[i] * of_full[i];
  }
  cr_assert(num <= 1e-12 * den, "sum over ranks differs from one rank: rel L2 %.3g", sqrt(num / den));
  for (h = 0; h < H; h++) {
    cr_assert(memcmp(&of_rank[1][h], &of_shared_only[h], 4) == 0, "rank 1, token 0, col %d: not the shared sum", h);
    cr_assert(of_rank[2][h] == 0.0f, "rank 2 has no slot of token 0 and no shared experts");
  }
  cr_assert(of_shared_only[0] != 0.0f || of_shared_only[1] != 0.0f);
  free_problem(&p);
}

Test(moe, shared_experts_null_pointer_gives_nan_rows) {
  rng_t r = {test_seed("moe.shared_experts_null_pointer_gives_nan_rows")};
  problem p = make_problem(&r, 4, 2, 128, 128, 2, 0, 4, 1);
  fp8moe_ref_moe_input in;
  uint16_t ob[2 * 128];
  int i;
  add_shared(&r, &p, 1);
  in = input_of(&p);
  in.shared_w2_scale = NULL;
  fp8moe_ref_moe(&p.c, &in, NULL, 0, ob, NULL);
  for (i = 0; i < 2 * 128; i++) cr_assert_eq(ob[i], 0x7fff, "elem %d: 0x%04x", i, ob[i]);
  in.num_shared_experts = 0; /* S = 0: the shared pointers are not looked at */
  fp8moe_ref_moe(&p.c, &in, NULL, 0, ob, NULL);
  for (i = 0; i < 2 * 128; i++) cr_assert_neq(ob[i], 0x7fff, "elem %d", i);
  free_problem(&p);
}

/* The reference as it was before 0.3 (silu(gate) * up, no shared experts), transcribed: zero 0.3 fields must
 * reproduce it bit for bit. */
static void old_moe(const problem *p, uint16_t *out_bf16, float *out_f32) {
  const int E = p->c.num_experts, K = p->c.top_k, H = p->c.hidden, I = p->c.intermediate;
  const int HB = H / 128, IB = I / 128, T = p->T;
  float lut[256], *x = (float *)malloc(sizeof(float) * H), sx[64], *g = (float *)malloc(sizeof(float) * 2 * I);
  float *aq = (float *)malloc(sizeof(float) * I), sa[64], *acc = (float *)malloc(sizeof(float) * H);
  int t, k, n, h, j, b, v;
  cr_assert(x && g && aq && acc && HB <= 64 && IB <= 64);
  for (v = 0; v < 256; v++) lut[v] = fp8moe_e4m3_to_float((uint8_t)v);
  for (t = 0; t < T; t++) {
    for (h = 0; h < H; h++) {
      x[h] = lut[p->x[(size_t)t * H + h]];
      acc[h] = 0.0f;
    }
    for (b = 0; b < HB; b++) sx[b] = p->sx[(size_t)b * T + t];
    for (k = 0; k < K; k++) {
      const int32_t id = p->ids[t * K + k];
      const float wk = p->w[t * K + k];
      size_t le;
      if (id < 0 || id >= E || id < p->off || id - p->off >= p->eloc) continue;
      le = (size_t)(id - p->off);
      for (n = 0; n < 2 * I; n++) {
        const uint8_t *wr = p->w1 + (le * 2 * I + n) * (size_t)H;
        const float *sw = p->sw1 + (le * (2 * IB) + (size_t)(n / 128)) * HB;
        float gn = 0.0f;
        for (b = 0; b < HB; b++) gn += fp8moe__ref_dot128(x + b * 128, wr + b * 128, lut) * sx[b] * sw[b];
        g[n] = gn;
      }
      for (j = 0; j < I; j++) {
        float gate = g[I + j];
        g[j] = gate / (1.0f + expf(-gate)) * g[j];
      }
      for (b = 0; b < IB; b++) {
        float amax = 0.0f, s;
        for (j = b * 128; j < (b + 1) * 128; j++)
          if (fabsf(g[j]) > amax) amax = fabsf(g[j]);
        s = fp8moe_quant_scale(amax);
        sa[b] = s;
        for (j = b * 128; j < (b + 1) * 128; j++) aq[j] = lut[fp8moe_e4m3_from_float(g[j] / s)];
      }
      for (h = 0; h < H; h++) {
        const uint8_t *wr = p->w2 + (le * H + h) * (size_t)I;
        const float *sw = p->sw2 + (le * HB + (size_t)(h / 128)) * IB;
        float yh = 0.0f;
        for (b = 0; b < IB; b++) yh += fp8moe__ref_dot128(aq + b * 128, wr + b * 128, lut) * sa[b] * sw[b];
        acc[h] += wk * yh;
      }
    }
    for (h = 0; h < H; h++) {
      out_bf16[(size_t)t * H + h] = fp8moe_bf16_from_float(acc[h]);
      out_f32[(size_t)t * H + h] = acc[h];
    }
  }
  free(x);
  free(g);
  free(aq);
  free(acc);
}

Test(moe, zero_fields_are_the_old_computation) {
  rng_t r = {test_seed("moe.zero_fields_are_the_old_computation")};
  static const int shapes[][6] = {{8, 4, 256, 256, 2, 5}, {4, 2, 512, 384, 0, 4}, {16, 8, 128, 128, 4, 12}};
  size_t i;
  int ex;
  for (i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
    for (ex = 0; ex < 2; ex++) {
      const int *s = shapes[i], T = 5, H = s[2];
      problem p;
      fp8moe_ref_moe_input in;
      float *of, *of_old, *ones, *zeros, *infs;
      uint16_t *ob, *ob_old;
      int e;
      if (ex && H > 256) continue; /* exact GEMM1 needs H <= 256 */
      of = (float *)malloc(sizeof(float) * T * H);
      of_old = (float *)malloc(sizeof(float) * T * H);
      ob = (uint16_t *)malloc(2u * T * H);
      ob_old = (uint16_t *)malloc(2u * T * H);
      ones = (float *)xalloc(sizeof(float) * s[5]);
      zeros = (float *)xalloc(sizeof(float) * s[5]);
      infs = (float *)xalloc(sizeof(float) * s[5]);
      cr_assert(of && of_old && ob && ob_old);
      p = make_problem(&r, s[0], s[1], s[2], s[3], T, s[4], s[5], ex);
      for (e = 0; e < s[5]; e++) ones[e] = 1.0f, zeros[e] = 0.0f, infs[e] = INFINITY;
      old_moe(&p, ob_old, of_old);
      in = input_of(&p); /* zero 0.3 fields */
      fp8moe_ref_moe(&p.c, &in, NULL, 0, ob, of);
      cr_assert(memcmp(of, of_old, sizeof(float) * T * H) == 0, "shape %zu exact %d: zero fields != old", i, ex);
      cr_assert(memcmp(ob, ob_old, 2u * T * H) == 0);
      in.swiglu_alpha = ones; /* the defaults spelled out */
      in.swiglu_beta = zeros;
      in.swiglu_limit = infs;
      fp8moe_ref_moe(&p.c, &in, NULL, 0, ob, of);
      cr_assert(memcmp(of, of_old, sizeof(float) * T * H) == 0, "shape %zu exact %d: explicit defaults != old", i, ex);
      free(of);
      free(of_old);
      free(ob);
      free(ob_old);
      free(ones);
      free(zeros);
      free(infs);
      free_problem(&p);
    }
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
  for (m = 0; m < FP8MOE__ROUTING_COUNT; m++)
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

/* ---- fp8moe_reference_run and the 0.3 fields ----------------------------- */

/* The 0.3 fields of a problem into the args. */
static void args_0_3(const problem *p, fp8moe_args *a) {
  a->swiglu_alpha = p->alpha;
  a->swiglu_beta = p->beta;
  a->swiglu_limit = p->limit;
  a->num_shared_experts = p->S;
  a->shared_w1 = p->shw1;
  a->shared_w1_scale = p->shs1;
  a->shared_w2 = p->shw2;
  a->shared_w2_scale = p->shs2;
}

Test(reference_run, routing_replay_round_trip) {
  /* name_run with topk_ids_out / topk_weights_out, then name_run_routed with them as topk_ids + fp32
   * topk_weights: the same output bit for bit (SPEC section 5.1), with every other 0.3 field in play; the
   * replayed ids are global (an expert-parallel shard), in slot order, the weights scaled */
  rng_t r = {test_seed("reference_run.routing_replay_round_trip")};
  enum { T = 7, E = 16, K = 4, H = 128 };
  static const int methods[] = {FP8MOE_ROUTING_DEEPSEEK_V3, FP8MOE_ROUTING_RENORMALIZE, FP8MOE_ROUTING_DEFAULT,
                                FP8MOE_ROUTING_TOPK};
  size_t mi;
  for (mi = 0; mi < sizeof methods / sizeof methods[0]; mi++) {
    const int m = methods[mi];
    problem p = make_problem(&r, E, K, H, 256, T, 4, 12, 1);
    uint16_t *out = (uint16_t *)xalloc(2 * T * H), *out2 = (uint16_t *)xalloc(2 * T * H);
    int32_t *ids_out = (int32_t *)xalloc(sizeof(int32_t) * T * K), *ids_want = (int32_t *)xalloc(sizeof(int32_t) * T * K);
    int32_t *ignored = (int32_t *)xalloc(sizeof(int32_t) * T * K);
    float *w_out = (float *)xalloc(sizeof(float) * T * K), *w_want = (float *)xalloc(sizeof(float) * T * K);
    float logits[T * E], bias[E];
    fp8moe_args a, b;
    int i, t, nonzero = 0;
    add_shared(&r, &p, 1);
    set_variant(&r, &p, 7, 0.5f, 2.0f);
    for (i = 0; i < T * E; i++) logits[i] = 2.0f * rng_normal(&r);
    for (i = 0; i < E; i++) bias[i] = 0.2f * rng_normal(&r);
    memset(ids_out, 0xA5, sizeof(int32_t) * T * K); /* poison: every element must be written */
    memset(w_out, 0xFF, sizeof(float) * T * K);
    memset(ignored, 0x5A, sizeof(int32_t) * T * K);

    a = args_of(&p, out);
    args_0_3(&p, &a);
    a.routing_method = m;
    a.routing_logits = logits;
    a.logits_dtype = FP8MOE_DTYPE_FP32;
    a.routing_bias = m == FP8MOE_ROUTING_DEEPSEEK_V3 ? bias : NULL;
    a.bias_dtype = FP8MOE_DTYPE_FP32;
    a.n_group = m == FP8MOE_ROUTING_DEEPSEEK_V3 ? 4 : 0;
    a.topk_group = m == FP8MOE_ROUTING_DEEPSEEK_V3 ? 2 : 0;
    a.routed_scaling_factor = 2.5f;
    a.topk_ids_out = ids_out;
    a.topk_weights_out = w_out;
    a.batch_invariant = 1;
    cr_assert_eq(fp8moe_reference_run(&p.c, &a, 0), FP8MOE_OK, "method %d", m);
    /* what was written is the routing, bit for bit */
    fp8moe_ref_route(m, T, E, K, logits, a.routing_bias, a.n_group, a.topk_group, 2.5f, ids_want, w_want);
    cr_assert(memcmp(ids_out, ids_want, sizeof(int32_t) * T * K) == 0, "method %d: topk_ids_out is not the routing", m);
    cr_assert(memcmp(w_out, w_want, sizeof(float) * T * K) == 0, "method %d: topk_weights_out is not the routing", m);
    if (m == FP8MOE_ROUTING_DEEPSEEK_V3)
      for (t = 0; t < T; t++) {
        float sum = 0.0f;
        for (i = 0; i < K; i++) sum += w_out[t * K + i];
        cr_assert(fabsf(sum - 2.5f) <= 1e-5f, "token %d: weights sum to %g, not the scaling factor 2.5", t, sum);
      }

    /* replay: routed, unpacked, fp32 weights; the routed call ignores topk_ids_out */
    b = args_of(&p, out2);
    args_0_3(&p, &b);
    b.topk_ids = ids_out;
    b.topk_weights = w_out;
    b.topk_weights_dtype = FP8MOE_DTYPE_FP32;
    b.topk_ids_out = ignored;
    b.topk_weights_out = (float *)ignored;
    cr_assert_eq(fp8moe_reference_run(&p.c, &b, 1), FP8MOE_OK);
    cr_assert(memcmp(out, out2, 2 * T * H) == 0, "method %d: the replay differs from the routed run", m);
    for (i = 0; i < T * K; i++) cr_assert_eq((uint32_t)ignored[i], 0x5A5A5A5Au, "the routed run wrote topk_*_out");
    for (i = 0; i < T * H; i++) nonzero += out[i] != 0;
    cr_assert(nonzero > T * H / 2, "method %d: output mostly zero (%d nonzero)", m, nonzero);
    free(out);
    free(out2);
    free(ids_out);
    free(ids_want);
    free(ignored);
    free(w_out);
    free(w_want);
    free_problem(&p);
  }
}

Test(reference_run, honours_swiglu_and_shared_fields) {
  /* fp8moe_reference_run with the 0.3 fields = fp8moe_ref_moe with the same fields, and both = the double
   * computation (run_and_compare); batch_invariant changes nothing */
  rng_t r = {test_seed("reference_run.honours_swiglu_and_shared_fields")};
  enum { T = 6, K = 3, H = 256 };
  problem p = make_problem(&r, 8, K, H, 256, T, 2, 5, 1);
  uint16_t *out = (uint16_t *)xalloc(2 * T * H), *want = (uint16_t *)xalloc(2 * T * H);
  float of[T * H];
  fp8moe_args a;
  double err;
  add_shared(&r, &p, 2);
  set_variant(&r, &p, 7, 0.5f, 2.0f);
  err = run_and_compare(&p, of, want);
  cr_assert(err <= MOE_TOL, "rel L2 %.3g", err);
  a = args_of(&p, out);
  args_0_3(&p, &a);
  a.topk_ids = p.ids;
  a.topk_weights = p.w;
  a.topk_weights_dtype = FP8MOE_DTYPE_FP32;
  cr_assert_eq(fp8moe_reference_run(&p.c, &a, 1), FP8MOE_OK);
  cr_assert(memcmp(out, want, 2 * T * H) == 0, "reference_run differs from fp8moe_ref_moe with the same fields");
  a.batch_invariant = 1;
  memset(out, 0, 2 * T * H);
  cr_assert_eq(fp8moe_reference_run(&p.c, &a, 1), FP8MOE_OK);
  cr_assert(memcmp(out, want, 2 * T * H) == 0, "batch_invariant changed the reference");
  /* one token alone gives its row of the batch */
  a.num_tokens = 1;
  a.hidden_states = p.x + 3 * H;
  a.topk_ids = p.ids + 3 * K;
  a.topk_weights = p.w + 3 * K;
  {
    float sx1[H / 128];
    int b;
    for (b = 0; b < H / 128; b++) sx1[b] = p.sx[b * T + 3];
    a.hidden_states_scale = sx1;
    cr_assert_eq(fp8moe_reference_run(&p.c, &a, 1), FP8MOE_OK);
  }
  cr_assert(memcmp(out, want + 3 * H, 2 * H) == 0, "token 3 alone differs from token 3 in the batch");
  free(out);
  free(want);
  free_problem(&p);
}

Test(reference_run, zero_0_3_fields_keep_the_old_results) {
  /* args zeroed the old way: the old computation bit for bit; S = 0 leaves the shared pointers unread, even
   * bogus ones */
  rng_t r = {test_seed("reference_run.zero_0_3_fields_keep_the_old_results")};
  enum { T = 5, K = 4, H = 256 };
  problem p = make_problem(&r, 8, K, H, 128, T, 1, 6, 0);
  uint16_t *out = (uint16_t *)xalloc(2 * T * H), *old = (uint16_t *)xalloc(2 * T * H);
  float of_old[T * H];
  fp8moe_args a = args_of(&p, out);
  old_moe(&p, old, of_old);
  a.topk_ids = p.ids;
  a.topk_weights = p.w;
  a.topk_weights_dtype = FP8MOE_DTYPE_FP32;
  cr_assert_eq(fp8moe_reference_run(&p.c, &a, 1), FP8MOE_OK);
  cr_assert(memcmp(out, old, 2 * T * H) == 0, "zeroed 0.3 fields: not the old results");
  a.shared_w1 = (const void *)(uintptr_t)1; /* never dereferenced while S = 0 */
  a.shared_w2_scale = (const float *)(uintptr_t)3;
  memset(out, 0, 2 * T * H);
  cr_assert_eq(fp8moe_reference_run(&p.c, &a, 1), FP8MOE_OK);
  cr_assert(memcmp(out, old, 2 * T * H) == 0, "S = 0 with stray shared pointers: not the old results");
  free(out);
  free(old);
  free_problem(&p);
}

Test(reference_run, bad_0_3_arguments_write_nothing) {
  rng_t r = {test_seed("reference_run.bad_0_3_arguments_write_nothing")};
  enum { T = 3, E = 8, K = 2, H = 128 };
  problem p = make_problem(&r, E, K, H, 128, T, 0, E, 1);
  uint16_t *out = (uint16_t *)xalloc(2 * T * H);
  int32_t *ids_out = (int32_t *)xalloc(sizeof(int32_t) * (T * K + 4));
  float *w_out = (float *)xalloc(sizeof(float) * (T * K + 4)), logits[T * E];
  int i, v;
  add_shared(&r, &p, 1);
  set_variant(&r, &p, 7, 0.5f, 2.0f);
  for (i = 0; i < T * E; i++) logits[i] = rng_normal(&r);
  for (i = 0; i < T * H; i++) out[i] = 0xFFC1u; /* poison */
  memset(ids_out, 0x5A, sizeof(int32_t) * (T * K + 4));
  memset(w_out, 0x5A, sizeof(float) * (T * K + 4));
  for (v = 0; v < 9; v++) {
    fp8moe_args a = args_of(&p, out);
    fp8moe_status want, got;
    args_0_3(&p, &a);
    a.routing_method = FP8MOE_ROUTING_RENORMALIZE;
    a.routing_logits = logits;
    a.topk_ids_out = ids_out;
    a.topk_weights_out = w_out;
    switch (v) {
    case 0: a.num_shared_experts = FP8MOE_MAX_SHARED_EXPERTS + 1; want = FP8MOE_ERROR_INVALID_EXPERT_RANGE; break;
    case 1: a.num_shared_experts = -1; want = FP8MOE_ERROR_INVALID_EXPERT_RANGE; break;
    case 2: a.shared_w1 = NULL; want = FP8MOE_ERROR_NULL_ARGUMENT; break;
    case 3: a.shared_w2_scale = NULL; want = FP8MOE_ERROR_NULL_ARGUMENT; break;
    case 4: a.shared_w2 = p.shw2 + 8; want = FP8MOE_ERROR_MISALIGNED_POINTER; break;
    case 5: a.swiglu_limit = (const float *)((const char *)p.limit + 2); want = FP8MOE_ERROR_MISALIGNED_POINTER; break;
    case 6: a.topk_ids_out = (int32_t *)((char *)ids_out + 1); want = FP8MOE_ERROR_MISALIGNED_POINTER; break;
    case 7: a.topk_weights_out = (float *)((char *)w_out + 2); want = FP8MOE_ERROR_MISALIGNED_POINTER; break;
    default: a.routing_method = 17; want = FP8MOE_ERROR_INVALID_ROUTING_METHOD; break;
    }
    got = fp8moe_reference_run(&p.c, &a, 0);
    cr_assert_eq(got, want, "case %d: %s, want %s", v, fp8moe_status_string(got), fp8moe_status_string(want));
    for (i = 0; i < T * H; i++) cr_assert_eq(out[i], 0xFFC1u, "case %d wrote output element %d", v, i);
    for (i = 0; i < T * K + 4; i++) {
      cr_assert_eq((uint32_t)ids_out[i], 0x5A5A5A5Au, "case %d wrote topk_ids_out", v);
      cr_assert_eq(bits_of(w_out[i]), 0x5A5A5A5Au, "case %d wrote topk_weights_out", v);
    }
  }
  free(out);
  free(ids_out);
  free(w_out);
  free_problem(&p);
}
