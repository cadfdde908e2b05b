/* tests/test_topk_pack.c - the packed top-k format (SPEC section 3).
 *
 * Exhaustive where it is cheap: every id 0..65535 against a set of weights
 * chosen to break the usual bugs (a negative weight whose sign bit leaks into
 * the id, ids >= 32768 that sign-extend on the way out), and every bf16 bit
 * pattern against a set of ids. Expected values are written out by hand here,
 * never taken from the functions under test.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <fp8moe/fp8moe.h>

#include "test_util.h"

/* Weights and the bf16 bits fp8moe_topk_pack must store for each (by hand). */
static const struct {
  uint32_t f32;  /* the fp32 weight, as bits */
  uint16_t bf16; /* its bf16 bits */
} weights[] = {
    {0x00000000u, 0x0000u}, /* +0 */
    {0x80000000u, 0x8000u}, /* -0 */
    {0x3f800000u, 0x3f80u}, /* 1 */
    {0xbf800000u, 0xbf80u}, /* -1 */
    {0x3f000000u, 0x3f00u}, /* 0.5 */
    {0xbf000000u, 0xbf00u}, /* -0.5 */
    {0x00010000u, 0x0001u}, /* smallest bf16 subnormal */
    {0x80010000u, 0x8001u}, /* its negative */
    {0x007f0000u, 0x007fu}, /* largest bf16 subnormal */
    {0x7f800000u, 0x7f80u}, /* +inf */
    {0xff800000u, 0xff80u}, /* -inf */
    {0x7fc00000u, 0x7fffu}, /* NaN: canonical bf16 NaN */
    {0xffc00001u, 0x7fffu}, /* negative NaN with payload: canonical too */
    {0xc2f60000u, 0xc2f6u}, /* -123 */
    {0xbdcccccdu, 0xbdcdu}, /* -0.1 rounds up in magnitude */
    {0x3e4ccccdu, 0x3e4du}, /* 0.2 */
    {0xff7f0000u, 0xff7fu}, /* -largest finite bf16 */
};
#define NWEIGHTS (sizeof weights / sizeof weights[0])

static void check_weight_value(int32_t p, uint16_t expect_bits) {
  float w = fp8moe_topk_weight(p);
  if ((expect_bits & 0x7f80u) == 0x7f80u && (expect_bits & 0x7fu)) {
    cr_assert(isnan(w), "weight of 0x%08x should be NaN", (unsigned)p);
  } else {
    cr_assert_eq(bits_of(w), (uint32_t)expect_bits << 16, "weight of 0x%08x: got bits 0x%08x, want 0x%08x",
                 (unsigned)p, (unsigned)bits_of(w), (unsigned)expect_bits << 16);
  }
}

Test(topk_pack, every_id_with_representative_weights) {
  for (int id = 0; id < 65536; id++) {
    for (size_t i = 0; i < NWEIGHTS; i++) {
      int32_t p = fp8moe_topk_pack(id, float_of(weights[i].f32));
      uint32_t want = ((uint32_t)id << 16) | weights[i].bf16;
      cr_assert_eq((uint32_t)p, want, "pack(%d, 0x%08x) = 0x%08x, want 0x%08x", id, (unsigned)weights[i].f32,
                   (unsigned)(uint32_t)p, (unsigned)want);
      cr_assert_eq(fp8moe_topk_id(p), id, "id of pack(%d, 0x%08x) came back as %d", id,
                   (unsigned)weights[i].f32, fp8moe_topk_id(p));
      cr_assert_eq(fp8moe_topk_weight_bits(p), weights[i].bf16);
      check_weight_value(p, weights[i].bf16);

      /* The same from raw bits. */
      int32_t q = fp8moe_topk_pack_bits(id, weights[i].bf16);
      cr_assert_eq((uint32_t)q, want);
    }
  }
}

Test(topk_pack, every_bf16_pattern_with_representative_ids) {
  static const int ids[] = {0, 1, 255, 256, 32767, 32768, 65535};
  for (size_t j = 0; j < sizeof ids / sizeof ids[0]; j++) {
    for (uint32_t b = 0; b < 65536u; b++) {
      int id = ids[j];
      int32_t p = fp8moe_topk_pack_bits(id, (uint16_t)b);
      cr_assert_eq((uint32_t)p, ((uint32_t)id << 16) | b, "pack_bits(%d, 0x%04x) = 0x%08x", id, (unsigned)b,
                   (unsigned)(uint32_t)p);
      cr_assert_eq(fp8moe_topk_id(p), id, "pack_bits(%d, 0x%04x): id came back as %d", id, (unsigned)b,
                   fp8moe_topk_id(p));
      cr_assert_eq(fp8moe_topk_weight_bits(p), (uint16_t)b);
      /* bf16 -> fp32 widening is exact: the bits come back shifted, NaN
       * payloads included. */
      cr_assert_eq(bits_of(fp8moe_topk_weight(p)), b << 16, "weight of pack_bits(%d, 0x%04x) has bits 0x%08x", id,
                   (unsigned)b, (unsigned)bits_of(fp8moe_topk_weight(p)));

      /* Every non-NaN bf16 value, packed from fp32, keeps its exact bits
       * (the fp32 is exactly representable, so no rounding happens). */
      int is_nan = (b & 0x7f80u) == 0x7f80u && (b & 0x7fu);
      int32_t r = fp8moe_topk_pack(id, float_of(b << 16));
      if (is_nan) {
        cr_assert_eq(fp8moe_topk_weight_bits(r), 0x7fffu);
      } else {
        cr_assert_eq((uint32_t)r, ((uint32_t)id << 16) | b, "pack(%d, bf16 0x%04x) = 0x%08x", id, (unsigned)b,
                     (unsigned)(uint32_t)r);
      }
      cr_assert_eq(fp8moe_topk_id(r), id);
    }
  }
}

/* fp8moe_topk_pack(id, f) rounds f to bf16, to nearest, ties to even. A tie
 * is an fp32 whose low 16 bits are exactly 0x8000; one fp32 ulp either side
 * is no longer a tie. Expected bits are worked out by hand. */
Test(topk_pack, weight_rounds_to_nearest_even) {
  static const struct {
    uint32_t f32;
    uint16_t bf16;
  } cases[] = {
      {0x3f808000u, 0x3f80u}, /* 1 + 2^-8, halfway 1 .. 1+2^-7: even 1.0 */
      {0x3f818000u, 0x3f82u}, /* 1 + 3*2^-8, halfway 0x3f81 .. 0x3f82: even 0x3f82 */
      {0x3f828000u, 0x3f82u}, /* halfway 0x3f82 .. 0x3f83: even 0x3f82 */
      {0xbf808000u, 0xbf80u}, /* negative ties go to even too */
      {0xbf818000u, 0xbf82u},
      {0x3f808001u, 0x3f81u}, /* one fp32 ulp above a tie: up */
      {0x3f807fffu, 0x3f80u}, /* one fp32 ulp below: down */
      {0x3f817fffu, 0x3f81u},
      {0x3f818001u, 0x3f82u},
      {0xbf808001u, 0xbf81u},
      {0xbf807fffu, 0xbf80u},
      {0x7f7f7fffu, 0x7f7fu}, /* just below halfway to 2^128: largest finite */
      {0x7f7f8000u, 0x7f80u}, /* halfway, 0x7f7f is odd: overflows to inf */
      {0x7f7fffffu, 0x7f80u}, /* FLT_MAX: inf */
      {0xff7f8000u, 0xff80u}, /* negative: -inf */
      {0x7f7e8000u, 0x7f7eu}, /* halfway, 0x7f7e even: stays */
      {0x00008000u, 0x0000u}, /* halfway 0 .. smallest subnormal: 0 */
      {0x00008001u, 0x0001u},
      {0x80008000u, 0x8000u}, /* -0 keeps its sign */
      {0x00018000u, 0x0002u}, /* subnormal tie, odd: up */
      {0x007f8000u, 0x0080u}, /* largest subnormal .. smallest normal, odd: up */
      {0x007e8000u, 0x007eu}, /* subnormal tie, even: stays */
      {0x47808000u, 0x4780u}, /* 65536 + 256: tie at a larger exponent */
      {0x47818000u, 0x4782u},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int32_t p = fp8moe_topk_pack(40000, float_of(cases[i].f32));
    cr_assert_eq(fp8moe_topk_weight_bits(p), cases[i].bf16, "fp32 0x%08x packed to bf16 0x%04x, want 0x%04x",
                 (unsigned)cases[i].f32, (unsigned)fp8moe_topk_weight_bits(p), (unsigned)cases[i].bf16);
    cr_assert_eq(fp8moe_topk_id(p), 40000);
  }
  /* The hand-written ties are real ties of the decimal values they name. */
  cr_assert_eq(bits_of(1.0f + 0x1p-8f), 0x3f808000u);
  cr_assert_eq(bits_of(1.0f + 3 * 0x1p-8f), 0x3f818000u);
}

/* In little-endian memory a packed value is {bf16 weight, int16 id}. */
Test(topk_pack, little_endian_memory_layout) {
  const uint32_t one = 1;
  unsigned char probe;
  memcpy(&probe, &one, 1);
  if (probe != 1) cr_skip_test("big-endian host: the layout is defined for little-endian memory");

  static const int ids[] = {0, 1, 255, 256, 4660, 32767, 32768, 65535};
  for (size_t j = 0; j < sizeof ids / sizeof ids[0]; j++) {
    for (size_t i = 0; i < NWEIGHTS; i++) {
      int id = ids[j];
      int32_t p = fp8moe_topk_pack(id, float_of(weights[i].f32));
      unsigned char m[4];
      memcpy(m, &p, 4);
      cr_assert_eq(m[0], weights[i].bf16 & 0xffu);
      cr_assert_eq(m[1], weights[i].bf16 >> 8);
      cr_assert_eq(m[2], (unsigned)id & 0xffu, "id %d: byte 2 is 0x%02x", id, m[2]);
      cr_assert_eq(m[3], (unsigned)id >> 8, "id %d: byte 3 is 0x%02x", id, m[3]);

      /* Read as the pair {uint16 weight, uint16 id}: what a consumer that
       * views the buffer as int16x2 sees. */
      uint16_t half[2];
      memcpy(half, &p, 4);
      cr_assert_eq(half[0], weights[i].bf16);
      cr_assert_eq(half[1], (uint16_t)id);
    }
  }
}

/* Ids that 16 bits cannot hold are stored as 0xFFFF (always invalid, E <= 512),
 * never aliased onto another expert. */
Test(topk_pack, unrepresentable_ids_become_invalid) {
  const int bad[] = {-1, -5, 65536, 65536 + 5, 1 << 20, 0x7fffffff, (int)0x80000000};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int32_t p = fp8moe_topk_pack(bad[i], -0.5f);
    cr_assert_eq(fp8moe_topk_id(p), 0xFFFF, "id %d packed as %d", bad[i], fp8moe_topk_id(p));
    cr_assert_eq(fp8moe_topk_weight(p), -0.5f);
  }
}
