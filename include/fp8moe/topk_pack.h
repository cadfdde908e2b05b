/* fp8moe/topk_pack.h - the packed top-k format (SPEC section 3).
 *
 * One int32 per (token, slot), read as an unsigned 32-bit value:
 *
 *     31            16 15             0
 *    +----------------+----------------+
 *    |   expert id    |  bf16 weight   |
 *    +----------------+----------------+
 *
 * packed = (id << 16) | bf16_bits(w). The weight half is masked to 16 bits
 * before the OR, so a negative weight (sign bit 15 set) never reaches the id,
 * and the id is read back with an unsigned shift, so ids >= 32768 do not
 * sign-extend. Host and device (under nvcc) share these functions.
 */
#ifndef FP8MOE_TOPK_PACK_H
#define FP8MOE_TOPK_PACK_H

#include <stdint.h>
#include "numeric.h"

/* Pack from raw bf16 bits. An id outside [0, 65535] cannot be represented:
 * it is stored as 0xFFFF, which no instantiation accepts (E <= 512), so the
 * slot is counted as invalid instead of silently aliasing another expert. */
static inline FP8MOE_HD int32_t fp8moe_topk_pack_bits(int id, uint16_t weight_bits) {
  uint32_t uid = (id < 0 || id > 0xffff) ? 0xffffu : (uint32_t)id;
  return (int32_t)((uid << 16) | (uint32_t)(weight_bits & 0xffffu));
}

/* Pack from an fp32 weight, rounded to bf16 (nearest even). */
static inline FP8MOE_HD int32_t fp8moe_topk_pack(int id, float weight) {
  return fp8moe_topk_pack_bits(id, fp8moe_bf16_from_float(weight));
}

/* The expert id, 0..65535. */
static inline FP8MOE_HD int fp8moe_topk_id(int32_t packed) {
  return (int)((uint32_t)packed >> 16);
}

/* The raw bf16 bits of the weight. */
static inline FP8MOE_HD uint16_t fp8moe_topk_weight_bits(int32_t packed) {
  return (uint16_t)((uint32_t)packed & 0xffffu);
}

/* The weight as fp32 (exact widening of the bf16). */
static inline FP8MOE_HD float fp8moe_topk_weight(int32_t packed) {
  return fp8moe_bf16_to_float(fp8moe_topk_weight_bits(packed));
}

#endif /* FP8MOE_TOPK_PACK_H */
