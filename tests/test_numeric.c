/* tests/test_numeric.c - the host conversions of numeric.h.
 *
 * Each conversion is checked against an independent model written here from
 * the format's definition, in double arithmetic: e4m3 values from their bit
 * fields with ldexp, fp32 -> e4m3 as "the nearest of the 127 finite codes,
 * ties to the even code, everything past 448 saturates", fp32 -> bf16 as "the
 * nearer of the two bf16 neighbours, ties to even, 2^128 standing in for
 * inf". The dense sweeps start at a random offset (seed printed, override
 * with FP8MOE_SEED), so every run covers other fp32 patterns.
 */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <fp8moe/fp8moe.h>

#include "test_util.h"

/* One seed for the whole program (printed once). */
static uint64_t numeric_seed(void) {
  static uint64_t seed;
  static int have;
  if (!have) {
    seed = test_seed("test_numeric");
    have = 1;
  }
  return seed;
}
static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* ---- independent e4m3 model ------------------------------------------- */

/* Value of an e4m3 code from its definition: bias 7, 3 mantissa bits,
 * subnormals 2^-6 * m/8, S.1111.111 is NaN. */
static double e4m3_value(unsigned code) {
  unsigned s = code >> 7, e = (code >> 3) & 15u, m = code & 7u;
  if (e == 15 && m == 7) return NAN;
  double v = e == 0 ? ldexp((double)m, -9) : ldexp((double)(8 + m), (int)e - 7 - 3);
  return s ? -v : v;
}

static int is_e4m3_nan(unsigned code) { return (code & 0x7fu) == 0x7fu; }

/* Nearest finite non-negative code to a >= 0: codes 0x00..0x7e are sorted by
 * value; ties go to the even code (whose mantissa is even); anything at or
 * past the largest finite value saturates. */
static unsigned e4m3_model_abs(double a) {
  if (a >= 448.0) return 0x7e;
  unsigned lo = 0, hi = 0x7e; /* value(lo) <= a < value(hi) */
  while (hi - lo > 1) {
    unsigned mid = (lo + hi) / 2;
    if (e4m3_value(mid) <= a) lo = mid;
    else hi = mid;
  }
  double dl = a - e4m3_value(lo), dh = e4m3_value(hi) - a;
  if (dl < dh) return lo;
  if (dh < dl) return hi;
  return (lo & 1u) ? hi : lo;
}

static unsigned e4m3_model(float f) {
  if (isnan(f)) return 0x7f;
  unsigned sign = signbit(f) ? 0x80u : 0u;
  return sign | e4m3_model_abs(fabs((double)f)); /* inf: >= 448, saturates */
}

/* ---- independent bf16 model ------------------------------------------- */

static double bf16_value_model(uint32_t b) {
  uint32_t s = b >> 15, e = (b >> 7) & 0xffu, m = b & 0x7fu;
  double v;
  if (e == 0xff) v = m ? NAN : INFINITY;
  else if (e == 0) v = ldexp((double)m, -133); /* 2^-126 * m/128 */
  else v = ldexp((double)(128 + m), (int)e - 127 - 7);
  return s ? -v : v;
}

static uint16_t bf16_model(float f) {
  if (isnan(f)) return 0x7fff;
  uint32_t x = bits_of(f);
  if (isinf(f)) return (uint16_t)(x >> 16);
  uint32_t sign = x & 0x80000000u, ax = x & 0x7fffffffu;
  uint32_t lo = ax >> 16, hi = lo + 1; /* magnitudes: lo <= |f| < hi */
  double a = fabs((double)f);
  double vl = bf16_value_model(lo);
  double vh = hi == 0x7f80u ? ldexp(1.0, 128) : bf16_value_model(hi); /* unbounded exponent */
  double dl = a - vl, dh = vh - a;
  uint32_t r = dl < dh ? lo : dh < dl ? hi : (lo & 1u) ? hi : lo;
  return (uint16_t)((sign >> 16) | r);
}

/* ---- e4m3 -> fp32 ------------------------------------------------------- */

Test(numeric, e4m3_to_float_all_codes) {
  for (unsigned c = 0; c < 256; c++) {
    float f = fp8moe_e4m3_to_float((uint8_t)c);
    double want = e4m3_value(c);
    if (is_e4m3_nan(c)) {
      cr_assert(isnan(f), "code 0x%02x should be NaN, got %a", c, (double)f);
    } else {
      cr_assert_eq((double)f, want, "code 0x%02x: got %a, want %a", c, (double)f, want);
      cr_assert_eq(!!signbit(f), c >> 7, "code 0x%02x: wrong sign", c);
    }
  }
  /* A few anchors by hand, so the model above is checked too. */
  cr_assert_eq(fp8moe_e4m3_to_float(0x7e), 448.0f);
  cr_assert_eq(fp8moe_e4m3_to_float(0xfe), -448.0f);
  cr_assert_eq(fp8moe_e4m3_to_float(0x38), 1.0f);
  cr_assert_eq(fp8moe_e4m3_to_float(0x08), 0x1p-6f);
  cr_assert_eq(fp8moe_e4m3_to_float(0x01), 0x1p-9f);
  cr_assert_eq(fp8moe_e4m3_to_float(0x07), 7 * 0x1p-9f);
  cr_assert_eq(fp8moe_e4m3_to_float(0x3b), 1.375f);
  cr_assert_eq(bits_of(fp8moe_e4m3_to_float(0x80)), 0x80000000u);
  cr_assert(isnan(e4m3_value(0xff)) && isnan(e4m3_value(0x7f)));
  cr_assert_eq(e4m3_value(0x77), 240.0);
}

/* ---- fp32 -> e4m3 ------------------------------------------------------- */

Test(numeric, e4m3_every_code_maps_back) {
  for (unsigned c = 0; c < 256; c++) {
    float f = fp8moe_e4m3_to_float((uint8_t)c);
    unsigned got = fp8moe_e4m3_from_float(f);
    unsigned want = is_e4m3_nan(c) ? 0x7fu : c; /* -0 (0x80) keeps its sign */
    cr_assert_eq(got, want, "code 0x%02x -> %a -> 0x%02x", c, (double)f, got);
  }
}

static void check_e4m3(float f, unsigned want) {
  unsigned got = fp8moe_e4m3_from_float(f);
  cr_assert_eq(got, want, "e4m3_from_float(%a = 0x%08x) = 0x%02x, want 0x%02x", (double)f, (unsigned)bits_of(f), got,
               want);
}

/* Between consecutive codes c and c+1: the midpoint (exact in fp32) goes to
 * the even code, one fp32 ulp either side to the nearer one. */
Test(numeric, e4m3_rounding_boundaries) {
  for (unsigned c = 0; c < 0x7e; c++) {
    double lo = e4m3_value(c), hi = e4m3_value(c + 1);
    float mid = (float)((lo + hi) / 2);
    cr_assert_eq((double)mid, (lo + hi) / 2, "midpoint of 0x%02x not exact in fp32", c);
    unsigned even = (c & 1u) ? c + 1 : c;
    float below = nextafterf(mid, 0.0f), above = nextafterf(mid, INFINITY);
    check_e4m3(mid, even);
    check_e4m3(below, c);
    check_e4m3(above, c + 1);
    check_e4m3(-mid, 0x80u | even);
    check_e4m3(-below, 0x80u | c);
    check_e4m3(-above, 0x80u | (c + 1));
    /* the code's own value, and one ulp either side of it, stay on it */
    float v = (float)lo;
    if (c > 0) check_e4m3(nextafterf(v, 0.0f), c);
    check_e4m3(nextafterf(v, INFINITY), c);
  }
  /* The hand-checked ones: 1 + 1/16 is halfway 1 .. 1.125, to even 1.0. */
  check_e4m3(1.0625f, 0x38);
  check_e4m3(1.1875f, 0x3a); /* halfway 1.125 (0x39) .. 1.25 (0x3a) */
  check_e4m3(0x1p-10f, 0x00); /* halfway 0 .. smallest subnormal: 0 */
  check_e4m3(-0x1p-10f, 0x80);
  check_e4m3(15 * 0x1p-10f, 0x08); /* halfway 7*2^-9 (odd) .. 2^-6: the normal */
}

Test(numeric, e4m3_subnormal_range) {
  /* Every fp32 in [0, 2^-6] on a 2^-14 grid, and all fp32 subnormals of a
   * few shapes: tiny values round to (signed) zero. */
  for (int i = 0; i <= 256; i++) {
    float f = ldexpf((float)i, -14);
    check_e4m3(f, e4m3_model(f));
    check_e4m3(-f, e4m3_model(-f));
  }
  check_e4m3(float_of(0x00000001u), 0x00);
  check_e4m3(float_of(0x80000001u), 0x80);
  check_e4m3(float_of(0x007fffffu), 0x00);
  check_e4m3(FLT_MIN, 0x00);
  check_e4m3(-FLT_MIN, 0x80);
  check_e4m3(0x1p-9f, 0x01);
  check_e4m3(3 * 0x1p-10f, 0x02); /* halfway 1 .. 2 (x 2^-9): even 2 */
  check_e4m3(5 * 0x1p-10f, 0x02); /* halfway 2 .. 3: even 2 */
  check_e4m3(7 * 0x1p-10f, 0x04); /* halfway 3 .. 4: even 4 */
  check_e4m3(0.0f, 0x00);
  check_e4m3(-0.0f, 0x80);
}

Test(numeric, e4m3_saturation) {
  check_e4m3(448.0f, 0x7e);
  check_e4m3(-448.0f, 0xfe);
  check_e4m3(nextafterf(448.0f, INFINITY), 0x7e);
  check_e4m3(449.0f, 0x7e);
  check_e4m3(463.0f, 0x7e);
  check_e4m3(464.0f, 0x7e); /* would be the 448 .. 480 midpoint: saturates */
  check_e4m3(nextafterf(464.0f, INFINITY), 0x7e);
  check_e4m3(480.0f, 0x7e);
  check_e4m3(-464.0f, 0xfe);
  check_e4m3(1e30f, 0x7e);
  check_e4m3(-1e30f, 0xfe);
  check_e4m3(FLT_MAX, 0x7e);
  check_e4m3(-FLT_MAX, 0xfe);
  check_e4m3(INFINITY, 0x7e);
  check_e4m3(-INFINITY, 0xfe);
  /* 432 is halfway 416 (0x7d) .. 448 (0x7e): even 448 */
  check_e4m3(432.0f, 0x7e);
  check_e4m3(nextafterf(432.0f, 0.0f), 0x7d);
}

Test(numeric, e4m3_nan) {
  static const uint32_t nans[] = {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u, 0x7fbfffffu,
                                  0xffbfffffu, 0x7fffffffu, 0xffffffffu, 0x7fc12345u, 0xff812345u};
  for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) check_e4m3(float_of(nans[i]), 0x7f);
}

/* Every 97th fp32 bit pattern (from a random start), NaNs and infinities
 * included, against the model. */
Test(numeric, e4m3_dense_sweep) {
  uint64_t s = numeric_seed();
  uint64_t start = splitmix(&s) % 97;
  unsigned long long n = 0;
  for (uint64_t u = start; u <= 0xffffffffull; u += 97) {
    float f = float_of((uint32_t)u);
    unsigned got = fp8moe_e4m3_from_float(f), want = e4m3_model(f);
    if (got != want)
      cr_assert_fail("e4m3_from_float(0x%08x = %a) = 0x%02x, model 0x%02x (seed %llu)", (unsigned)u, (double)f, got,
                     want, (unsigned long long)numeric_seed());
    n++;
  }
  cr_assert_gt(n, 44000000ull);
  /* Also every fp32 in [-512, 512] whose low 12 mantissa bits are random
   * (the rest exhaustive): all rounding regions of every binade. */
  for (uint32_t hi = 0; hi < (1u << 20); hi++) {
    uint32_t u = (hi << 12) | (uint32_t)(splitmix(&s) & 0xfffu);
    float f = float_of(u);
    if (!(fabsf(f) <= 512.0f)) continue;
    for (int neg = 0; neg < 2; neg++) {
      float g = neg ? -f : f;
      unsigned got = fp8moe_e4m3_from_float(g), want = e4m3_model(g);
      if (got != want)
        cr_assert_fail("e4m3_from_float(0x%08x = %a) = 0x%02x, model 0x%02x (seed %llu)", (unsigned)bits_of(g),
                       (double)g, got, want, (unsigned long long)numeric_seed());
    }
  }
}

/* ---- bf16 ----------------------------------------------------------------- */

Test(numeric, bf16_to_float_all_patterns) {
  for (uint32_t b = 0; b < 65536u; b++) {
    float f = fp8moe_bf16_to_float((uint16_t)b);
    double want = bf16_value_model(b);
    if (isnan(want)) {
      cr_assert(isnan(f), "bf16 0x%04x should be NaN", (unsigned)b);
    } else {
      cr_assert_eq((double)f, want, "bf16 0x%04x: got %a, want %a", (unsigned)b, (double)f, want);
      cr_assert_eq(!!signbit(f), b >> 15, "bf16 0x%04x: wrong sign", (unsigned)b);
    }
    /* and back, exactly (NaN: canonical) */
    cr_assert_eq(fp8moe_bf16_from_float(f), isnan(want) ? 0x7fffu : b);
  }
  cr_assert_eq(fp8moe_bf16_to_float(0x3f80), 1.0f);
  cr_assert_eq(fp8moe_bf16_to_float(0xc040), -3.0f);
  cr_assert_eq(fp8moe_bf16_to_float(0x0001), 0x1p-133f);
}

static void check_bf16(float f, unsigned want) {
  unsigned got = fp8moe_bf16_from_float(f);
  cr_assert_eq(got, want, "bf16_from_float(%a = 0x%08x) = 0x%04x, want 0x%04x", (double)f, (unsigned)bits_of(f), got,
               want);
}

Test(numeric, bf16_from_float_special) {
  check_bf16(INFINITY, 0x7f80);
  check_bf16(-INFINITY, 0xff80);
  check_bf16(float_of(0x7fc00000u), 0x7fff);
  check_bf16(float_of(0xffc00000u), 0x7fff);
  check_bf16(float_of(0x7f800001u), 0x7fff); /* signalling NaN whose payload would truncate to inf */
  check_bf16(float_of(0xff800001u), 0x7fff);
  check_bf16(float_of(0x7fffffffu), 0x7fff);
  check_bf16(FLT_MAX, 0x7f80);              /* 0x7f7fffff: past halfway to 2^128: inf */
  check_bf16(-FLT_MAX, 0xff80);
  check_bf16(float_of(0x7f7f8000u), 0x7f80); /* tie, odd: inf */
  check_bf16(float_of(0x7f7f7fffu), 0x7f7f);
  check_bf16(float_of(0x3f808000u), 0x3f80); /* tie, even */
  check_bf16(float_of(0x3f818000u), 0x3f82); /* tie, odd */
  check_bf16(float_of(0x3f818001u), 0x3f82);
  check_bf16(float_of(0x3f817fffu), 0x3f81);
  check_bf16(float_of(0x80008000u), 0x8000); /* -tiny: -0 */
  check_bf16(0.0f, 0x0000);
  check_bf16(-0.0f, 0x8000);
}

/* Every pattern whose low half is one of the interesting rounding values,
 * for every high half; then every 61st pattern from a random start. */
Test(numeric, bf16_from_float_sweep) {
  static const uint32_t lows[] = {0x0000u, 0x0001u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu, 0x4000u, 0xc000u};
  for (uint32_t hi = 0; hi < 65536u; hi++) {
    for (size_t i = 0; i < sizeof lows / sizeof lows[0]; i++) {
      float f = float_of((hi << 16) | lows[i]);
      unsigned got = fp8moe_bf16_from_float(f), want = bf16_model(f);
      if (got != want)
        cr_assert_fail("bf16_from_float(0x%08x) = 0x%04x, model 0x%04x", (unsigned)bits_of(f), got, want);
    }
  }
  uint64_t s = numeric_seed() ^ 0x5bf03635ull;
  uint64_t start = splitmix(&s) % 61;
  for (uint64_t u = start; u <= 0xffffffffull; u += 61) {
    float f = float_of((uint32_t)u);
    unsigned got = fp8moe_bf16_from_float(f), want = bf16_model(f);
    if (got != want)
      cr_assert_fail("bf16_from_float(0x%08x) = 0x%04x, model 0x%04x (seed %llu)", (unsigned)u, got, want,
                     (unsigned long long)numeric_seed());
  }
}

/* ---- quantization scale --------------------------------------------------- */

Test(numeric, quant_scale) {
  cr_assert_eq(fp8moe_quant_scale(0.0f), FLT_MIN);
  cr_assert_eq(fp8moe_quant_scale(-0.0f), FLT_MIN);
  cr_assert_eq(fp8moe_quant_scale(1e-40f), FLT_MIN); /* amax/448 underflows past FLT_MIN */
  cr_assert_eq(fp8moe_quant_scale(448.0f * FLT_MIN), FLT_MIN);
  cr_assert_eq(fp8moe_quant_scale(NAN), FLT_MIN);
  cr_assert_eq(fp8moe_quant_scale(448.0f), 1.0f);
  cr_assert_eq(fp8moe_quant_scale(896.0f), 2.0f);
  cr_assert_eq(fp8moe_quant_scale(INFINITY), INFINITY);
  uint64_t s = numeric_seed() ^ 0x9abcull;
  for (int i = 0; i < 100000; i++) {
    /* random positive normals across the whole exponent range */
    uint32_t u = (uint32_t)(splitmix(&s) & 0x7fffffffu);
    float amax = float_of(u);
    if (!isfinite(amax)) continue;
    float want = amax / 448.0f;
    if (!(want > FLT_MIN)) want = FLT_MIN;
    cr_assert_eq(bits_of(fp8moe_quant_scale(amax)), bits_of(want), "quant_scale(%a)", (double)amax);
    /* the scale maps amax onto at most 448 (within one rounding) */
    if (want > FLT_MIN && amax < 1e38f) cr_assert_leq(amax / want, 448.0f * (1.0f + 2 * FLT_EPSILON));
  }
}
