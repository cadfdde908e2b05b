/* tests/gpu_test_quantize.cu - quantize.cuh against the CPU reference, bit for bit.
 *
 * bf16 [T, H] -> fp8 e4m3 [T, H] + fp32 scales [H/128, T]: bytes and scales
 * must be bit-identical to fp8moe_ref_quantize_activations, for H in {128,
 * 384, 7168} and T in {0, 1, 2, 3, 7, 15, 16, 17, 33, 1000} (the kernel
 * shrinks its CTA below 16 tokens and leaves a partial CTA at odd T), on
 * blocks of every kind: normal values over 2^-30..2^30, an all-zero block
 * (scale FLT_MIN; one in every run), subnormal bf16, values near the top of
 * bf16, NaN and +-inf (an inf sets the scale, NaN does not count), -0.
 * Outputs are poisoned before every run and guard words past the end must
 * stay poisoned; each case runs twice with different poison bytes, so an
 * unwritten byte cannot pass by equalling the reference. Fresh random data
 * every run: the seed is printed, FP8MOE_SEED=<n> replays one.
 */
#include "gpu_util.h"

#include <fp8moe/reference.h>
#include <fp8moe/detail/quantize.cuh>

#include <stdio.h>
#include <vector>

using fp8moe::detail::quantize_activations_launch;

TestSuite(gpu_quantize, .init = fp8moe_test_require_gpu);

namespace {

const uint32_t SCALE_POISON = 0x7FC0DEADu; /* scales are never NaN */
const int GUARD = 32;                      /* poisoned words past every output */

/* The one call under test; a signature change is a one-line fix here. */
fp8moe_status quantize(const uint16_t *x, int T, uint8_t *q, float *s, int H) {
  switch (H) {
  case 128: return quantize_activations_launch<128>(x, T, q, s, 0);
  case 256: return quantize_activations_launch<256>(x, T, q, s, 0);
  case 384: return quantize_activations_launch<384>(x, T, q, s, 0);
  case 7168: return quantize_activations_launch<7168>(x, T, q, s, 0);
  default: cr_assert_fail("test bug: H = %d not instantiated", H); return FP8MOE_ERROR_INVALID_SHAPE;
  }
}

/* One 128-column block of bf16 test data of the given kind. */
void quant_block(fp8moe_rng *r, int kind, uint16_t *x) {
  const float mag = ldexpf(1.0f, (int)(rng_next(r) % 61) - 30); /* 2^-30 .. 2^30 */
  for (int j = 0; j < FP8MOE_BLOCK; j++) {
    float v;
    switch (kind) {
    case 0: v = rng_normal(r) * mag; break;
    case 1: v = 0.0f; break;                                               /* all zero: scale FLT_MIN */
    case 2: v = rng_normal(r) * 1e-39f; break;                             /* subnormal bf16 */
    case 3: v = rng_normal(r) * 3e37f; break;                              /* near the top of bf16 */
    case 4: v = j == 5 ? NAN : j == 77 ? -INFINITY : rng_normal(r); break; /* an inf sets the scale */
    case 5: v = j % 31 == 3 ? NAN : rng_normal(r) * mag; break;            /* NaN does not count */
    default: v = (j & 1) ? -0.0f : rng_normal(r) * 1e-3f; break;
    }
    x[j] = fp8moe_bf16_from_float(v);
  }
}

/* One case. offset: the buffers start at the smallest alignment the kernel
 * allows (x 16 bytes, x_fp8 8 bytes, scales 4 bytes past a 256-byte one). */
void check_quantize(fp8moe_rng *rng, int T, int H, const char *name, bool offset = false) {
  const int HB = H / FP8MOE_BLOCK;
  const size_t n = (size_t)T * H, ns = (size_t)HB * T;
  std::vector<uint16_t> x(n);
  for (int t = 0; t < T; t++)
    for (int b = 0; b < HB; b++) {
      int kind = rng_next(rng) % 4 == 0 ? (int)(rng_next(rng) % 7) : 0;
      if (t == T - 1 && b == 0) kind = 1; /* always one all-zero block */
      quant_block(rng, kind, &x[(size_t)t * H + (size_t)b * FP8MOE_BLOCK]);
    }
  std::vector<uint8_t> rq(n);
  std::vector<float> rs(ns);
  fp8moe_ref_quantize_activations(T, H, x.data(), rq.data(), rs.data());

  const size_t xo = offset ? 8 : 0, qo = offset ? 8 : 0, so = offset ? 1 : 0;
  uint16_t *d_x_base = dev_alloc<uint16_t>(n + xo);
  uint8_t *d_q_base = dev_alloc<uint8_t>(n + qo + GUARD);
  float *d_s_base = dev_alloc<float>(ns + so + GUARD);
  uint16_t *d_x = d_x_base + xo;
  uint8_t *d_q = d_q_base + qo;
  float *d_s = d_s_base + so;
  if (n) CUDA_OK(cudaMemcpy(d_x, x.data(), n * 2, cudaMemcpyHostToDevice));
  for (int pass = 0; pass < 2; pass++) {
    const uint8_t qpoison = pass ? 0x5A : 0xA5;
    std::vector<uint8_t> gq(n + GUARD, qpoison);
    std::vector<uint32_t> gs(ns + GUARD, SCALE_POISON);
    CUDA_OK(cudaMemcpy(d_q, gq.data(), gq.size(), cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(d_s, gs.data(), gs.size() * 4, cudaMemcpyHostToDevice));
    fp8moe_status st = quantize(d_x, T, d_q, d_s, H);
    cr_assert_eq(st, FP8MOE_OK, "%s T=%d: %s", name, T, fp8moe_status_string(st));
    CUDA_OK(cudaDeviceSynchronize());
    dev_download(gq.data(), d_q, gq.size());
    dev_download(gs.data(), (const uint32_t *)d_s, gs.size());
    for (int i = 0; i < GUARD; i++) {
      cr_assert_eq(gq[n + i], qpoison, "%s T=%d: fp8 written past the end", name, T);
      cr_assert_eq(gs[ns + i], SCALE_POISON, "%s T=%d: scale written past the end", name, T);
    }
    for (size_t i = 0; i < ns; i++)
      cr_assert_eq(gs[i], fp8moe__float_bits(rs[i]), "%s T=%d: scale [b=%zu][t=%zu] 0x%08x (%g), reference 0x%08x (%g)", name, T,
                   i / (size_t)(T ? T : 1), i % (size_t)(T ? T : 1), gs[i], (double)fp8moe__bits_float(gs[i]), fp8moe__float_bits(rs[i]),
                   (double)rs[i]);
    for (size_t i = 0; i < n; i++)
      cr_assert_eq(gq[i], rq[i], "%s T=%d: fp8 [t=%zu][h=%zu] 0x%02x, reference 0x%02x (x bf16 0x%04x)", name, T,
                   i / H, i % H, gq[i], rq[i], x[i]);
  }
  CUDA_OK(cudaFree(d_x_base));
  CUDA_OK(cudaFree(d_q_base));
  CUDA_OK(cudaFree(d_s_base));
}

} // namespace

Test(gpu_quantize, matches_reference) {
  uint64_t seed = fp8moe_test_announce_seed("quantize");
  fp8moe_rng rng = {seed};
  static const int Ts[] = {0, 1, 2, 3, 7, 15, 16, 17, 33, 1000};
  for (int T : Ts) {
    check_quantize(&rng, T, 128, "H=128");
    check_quantize(&rng, T, 384, "H=384");
    check_quantize(&rng, T, 7168, "H=7168");
  }
}

Test(gpu_quantize, least_aligned_buffers) {
  uint64_t seed = fp8moe_test_announce_seed("quantize, least aligned");
  fp8moe_rng rng = {seed};
  static const int Ts[] = {1, 5, 16, 37};
  for (int T : Ts) {
    check_quantize(&rng, T, 128, "H=128 least aligned", true);
    check_quantize(&rng, T, 7168, "H=7168 least aligned", true);
  }
}

Test(gpu_quantize, edges) {
  uint16_t *d_x = dev_alloc<uint16_t>(2 * 256 + 8);
  uint8_t *d_q = dev_alloc<uint8_t>(2 * 256 + 16);
  float *d_s = dev_alloc<float>(8);
  std::vector<uint32_t> sp(8, SCALE_POISON), back(8);
  CUDA_OK(cudaMemcpy(d_s, sp.data(), 32, cudaMemcpyHostToDevice));
  /* T = 0 is valid and writes nothing, even through null pointers */
  cr_assert_eq(quantize(d_x, 0, d_q, d_s, 256), FP8MOE_OK);
  cr_assert_eq(quantize(NULL, 0, NULL, NULL, 256), FP8MOE_OK);
  cr_assert_eq(quantize(d_x, -1, d_q, d_s, 256), FP8MOE_ERROR_INVALID_NUM_TOKENS);
  cr_assert_eq(quantize(NULL, 2, d_q, d_s, 256), FP8MOE_ERROR_NULL_ARGUMENT);
  cr_assert_eq(quantize(d_x + 1, 2, d_q, d_s, 256), FP8MOE_ERROR_MISALIGNED_POINTER);
  cr_assert_eq(quantize(d_x, 2, d_q + 4, d_s, 256), FP8MOE_ERROR_MISALIGNED_POINTER);
  CUDA_OK(cudaDeviceSynchronize());
  CUDA_OK(cudaGetLastError());
  dev_download(back.data(), (const uint32_t *)d_s, 8);
  cr_assert(back == sp, "scales written by a call that must launch nothing");
  CUDA_OK(cudaFree(d_x));
  CUDA_OK(cudaFree(d_q));
  CUDA_OK(cudaFree(d_s));
}
