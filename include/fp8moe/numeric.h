/* fp8moe/numeric.h - bf16 and fp8 e4m3 conversions that match the GPU.
 *
 * The CPU reference must round exactly as the kernels do, or "tight error"
 * would hide real bugs behind rounding noise. These are bit-level, portable C
 * (no <cuda_fp8.h>), written to agree with the hardware conversions the
 * kernels use: cvt.rn.bf16.f32 (round to nearest even, NaN -> 0x7FFF) and
 * cvt.rn.satfinite.e4m3x2.f32 (round to nearest even, saturate to +-448,
 * NaN -> 0x7F). The GPU tests compare them bit for bit on the device.
 *
 * e4m3 (OCP FP8): 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinity;
 * S.1111.111 is NaN; the largest finite magnitude is 448 (0.1111.110);
 * subnormals are 2^-6 * m/8.
 */
#ifndef FP8MOE_NUMERIC_H
#define FP8MOE_NUMERIC_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Marks the functions of the C headers that also run on the GPU: host and
 * device under nvcc, nothing under a C compiler. */
#ifndef FP8MOE_HD
#if defined(__CUDACC__)
#define FP8MOE_HD __host__ __device__
#else
#define FP8MOE_HD
#endif
#endif

/* The largest finite e4m3 magnitude; the quantization scales map a block's
 * largest |value| onto it. */
#define FP8MOE_E4M3_MAX 448.0f

static inline FP8MOE_HD uint32_t fp8moe__float_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static inline FP8MOE_HD float fp8moe__bits_float(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/* fp32 -> bf16 bits, round to nearest even; any NaN becomes 0x7FFF. */
static inline FP8MOE_HD uint16_t fp8moe_bf16_from_float(float f) {
  uint32_t x = fp8moe__float_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;
  uint32_t lsb = (x >> 16) & 1u;
  x += 0x7fffu + lsb;
  return (uint16_t)(x >> 16);
}

/* bf16 bits -> fp32, exact. */
static inline FP8MOE_HD float fp8moe_bf16_to_float(uint16_t b) {
  return fp8moe__bits_float((uint32_t)b << 16);
}

/* fp8 e4m3 bits -> fp32, exact. */
static inline FP8MOE_HD float fp8moe_e4m3_to_float(uint8_t v) {
  uint32_t sign = (uint32_t)(v >> 7) << 31;
  uint32_t exp = (v >> 3) & 0xfu;
  uint32_t man = v & 7u;
  if (exp == 0xfu && man == 7u) return fp8moe__bits_float(sign | 0x7fc00000u); /* NaN */
  if (exp == 0) {
    /* subnormal: man * 2^-9, exact in fp32 */
    float m = (float)man * (1.0f / 512.0f);
    return sign ? -m : m;
  }
  return fp8moe__bits_float(sign | ((exp + 120u) << 23) | (man << 20));
}

/* fp32 -> fp8 e4m3 bits: round to nearest even, saturate finite values and
 * infinities to +-448, NaN -> 0x7F. */
static inline FP8MOE_HD uint8_t fp8moe_e4m3_from_float(float f) {
  uint32_t x = fp8moe__float_bits(f);
  uint8_t sign = (uint8_t)((x >> 24) & 0x80u);
  uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return 0x7f;                 /* NaN */
  if (ax >= 0x43e00000u) return (uint8_t)(sign | 0x7e); /* |f| >= 448 (incl. inf) */
  uint32_t exp = ax >> 23;                           /* biased fp32 exponent */
  if (exp < 121u) {
    /* below the smallest e4m3 normal (2^-6): subnormal grid of 2^-9.
     * Scale to units of 2^-9 in fp32 exactly (power-of-two multiply), then
     * round to nearest even on the integer part. */
    float a = fp8moe__bits_float(ax) * 512.0f;         /* exact */
    uint32_t i = (uint32_t)a;                         /* floor, a < 8 */
    float r = a - (float)i;                           /* exact */
    if (r > 0.5f || (r == 0.5f && (i & 1u))) i++;
    return (uint8_t)(sign | i);                       /* i == 8 is the smallest normal: 0x08 */
  }
  /* normal: keep 3 mantissa bits, round to nearest even on the 20 dropped */
  uint32_t mant = ax & 0x7fffffu;
  uint32_t e8 = exp - 120u;                          /* e4m3 biased exponent, 1..15 */
  uint32_t q = (e8 << 3) | (mant >> 20);
  uint32_t rem = mant & 0xfffffu;
  if (rem > 0x80000u || (rem == 0x80000u && (q & 1u))) q++;
  if (q > 0x7eu) q = 0x7eu;                          /* rounds past 448: saturate */
  return (uint8_t)(sign | q);
}

/* ---- the one numeric rule of every quantization --------------------------
 *
 * The activation quantizer, both GEMM paths' requantization epilogues and
 * the CPU reference all quantize a block of 128 values with these three
 * functions, so they agree bit for bit. They stay exact when a user builds
 * with --use_fast_math: the divisions are IEEE round-to-nearest on the
 * device whatever the flags (fp8moe__div_rn), and the conversion is the
 * hardware's cvt.rn.satfinite on the device and its bit-exact emulation
 * above on the host. (--use_fast_math also flushes fp32 subnormals to zero
 * on the device; a block whose values are all subnormal, below 1.2e-38, is
 * the one place that shows.) */

/* a / b rounded to nearest even: __fdiv_rn on the device, which neither
 * --use_fast_math nor -prec-div=false turns into an approximation. */
static inline FP8MOE_HD float fp8moe__div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

/* The scale of a block whose largest magnitude is amax (SPEC section 2,
 * step 4): max(amax / 448, FLT_MIN). A NaN amax gives FLT_MIN (a NaN never
 * wins a comparison). */
static inline FP8MOE_HD float fp8moe_quant_scale(float amax) {
  float s = fp8moe__div_rn(amax, FP8MOE_E4M3_MAX);
  const float flt_min = 1.17549435e-38f;
  return s > flt_min ? s : flt_min;
}

/* One value of a block quantized with its scale: e4m3(x / scale), round to
 * nearest even, saturating. The GPU kernels convert pairs with the
 * hardware instruction (detail/common.cuh, e4m3x2_quantize), bit for bit
 * the same. */
static inline FP8MOE_HD uint8_t fp8moe_quantize_e4m3(float x, float scale) {
  return fp8moe_e4m3_from_float(fp8moe__div_rn(x, scale));
}

/* The gated activation of one GEMM1 output column (SPEC sections 2 and
 * 5.1), in fp32: g = min(gate, limit), u = clamp(up, -limit, limit),
 * a = g * sigmoid(alpha * g) * (u + beta), written g / (1 + exp(-alpha * g))
 * * (u + beta) so that alpha 1, beta 0 and limit +inf give silu(gate) * up
 * bit for bit. A NaN gate or up stays NaN (the comparisons leave it). Both
 * GEMM epilogues and the reference call this. exp is the platform's expf:
 * CUDA's and the C library's differ by an ulp now and then, which the
 * accuracy contract covers. */
static inline FP8MOE_HD float fp8moe_swiglu(float gate, float up, float alpha, float beta, float limit) {
  const float g = gate > limit ? limit : gate;
  const float u = up > limit ? limit : up < -limit ? -limit : up;
  return fp8moe__div_rn(g, 1.0f + expf(-(alpha * g))) * (u + beta);
}

#endif /* FP8MOE_NUMERIC_H */
