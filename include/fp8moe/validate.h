/* fp8moe/validate.h - every argument check a run makes, in plain C.
 *
 * name_run*() call fp8moe_validate_args() before anything is launched, and
 * return its status unchanged; nothing on the device is touched on failure.
 * Being plain C, the checks are unit-tested and fuzzed on machines without a
 * GPU. The order of the checks is fixed (docs/api.md lists it), so one bad
 * argument always gives the same status: the first check that fails wins.
 *
 *   1. the compiled shape, fp8moe_validate_config: E, H, I (4), K (5); a NULL
 *      config (1)
 *   2. args NULL (1)
 *   3. T < 0, or T*(K + S) > INT_MAX (2), S = num_shared_experts counted only
 *      when it is in range (an out-of-range S is step 4's error)
 *   4. the expert range (3): local_expert_offset < 0, local_num_experts < 1,
 *      offset + local > E; num_shared_experts outside [0, FP8MOE_MAX_SHARED_EXPERTS]
 *   5. non-routed: routing method (6), routing parameters (7), logits and bias
 *      dtypes (8); routed: both or neither top-k form (9), half of the
 *      unpacked form missing (1), weights dtype (8)
 *   6. T = 0: FP8MOE_OK, nothing further is looked at
 *   7. required pointers (1): hidden_states, hidden_states_scale, w1,
 *      w1_scale, w2, w2_scale, output; routing_logits (non-routed); with
 *      S > 0 the four shared tensors
 *   8. alignment (10): the fp8 tensors and the output 16 bytes (shared_w1 and
 *      shared_w2 when S > 0); the fp32 scales, invalid_id_count and the three
 *      swiglu arrays 4 (the shared scales when S > 0); non-routed: logits and
 *      bias their element size, topk_ids_out and topk_weights_out 4; routed:
 *      the top-k input at its element size
 *   9. workspace NULL (11), its alignment to FP8MOE_WORKSPACE_ALIGN (10), its
 *      size against fp8moe_workspace_layout_shared(T, E, K, H, I, S).total (12)
 *
 * Optional pointers may be NULL and are then never looked at: routing_bias,
 * invalid_id_count, swiglu_alpha/_beta/_limit (defaults 1, 0, no clamp),
 * topk_ids_out/topk_weights_out (nothing written), and the shared tensors
 * when S = 0. The routed call ignores every field of the non-routed one
 * (routing method and parameters, logits, bias, topk_ids_out,
 * topk_weights_out) and the non-routed call every routed input.
 */
#ifndef FP8MOE_VALIDATE_H
#define FP8MOE_VALIDATE_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "fp8moe.h"

/* The compile-time shape an instantiation was made for. */
typedef struct fp8moe_config {
  int num_experts;   /* E, global */
  int top_k;         /* K */
  int hidden;        /* H */
  int intermediate;  /* I */
} fp8moe_config;

/* Whether p is a multiple of a (a power of two); NULL counts as aligned. */
static inline int fp8moe__aligned(const void *p, uintptr_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

/* Whether a compile-time shape is one fp8moe supports: E in [1, 512], H and
 * I positive multiples of 128 (FP8MOE_ERROR_INVALID_SHAPE), K in
 * [1, min(E, 16)] (FP8MOE_ERROR_INVALID_TOP_K); NULL gives
 * FP8MOE_ERROR_NULL_ARGUMENT. */
static inline fp8moe_status fp8moe_validate_config(const fp8moe_config *c) {
  if (!c) return FP8MOE_ERROR_NULL_ARGUMENT;
  if (c->num_experts < 1 || c->num_experts > FP8MOE_MAX_EXPERTS) return FP8MOE_ERROR_INVALID_SHAPE;
  if (c->hidden <= 0 || c->hidden % FP8MOE_BLOCK) return FP8MOE_ERROR_INVALID_SHAPE;
  if (c->intermediate <= 0 || c->intermediate % FP8MOE_BLOCK) return FP8MOE_ERROR_INVALID_SHAPE;
  if (c->top_k < 1 || c->top_k > c->num_experts || c->top_k > FP8MOE_MAX_TOP_K) return FP8MOE_ERROR_INVALID_TOP_K;
  return FP8MOE_OK;
}

/* Whether a routing method can take these parameters (SPEC section 4).
 * n_group and topk_group belong to DeepSeekV3; any other method must leave
 * n_group at 0 or 1. */
static inline fp8moe_status fp8moe_validate_routing(int method, int E, int K, int n_group, int topk_group,
                                                    float routed_scaling_factor) {
  if (method < 0 || method >= FP8MOE__ROUTING_COUNT) return FP8MOE_ERROR_INVALID_ROUTING_METHOD;
  if (n_group < 0 || topk_group < 0) return FP8MOE_ERROR_INVALID_ROUTING_PARAMS;
  if (method == FP8MOE_ROUTING_DEEPSEEK_V3) {
    float s = routed_scaling_factor;
    if (s != s || s - s != 0.0f) return FP8MOE_ERROR_INVALID_ROUTING_PARAMS; /* NaN or inf */
    if (n_group > 1) {
      if (E % n_group) return FP8MOE_ERROR_INVALID_ROUTING_PARAMS;
      if (topk_group < 1 || topk_group > n_group) return FP8MOE_ERROR_INVALID_ROUTING_PARAMS;
      if ((long long)K > (long long)topk_group * (E / n_group)) return FP8MOE_ERROR_INVALID_ROUTING_PARAMS;
    }
  } else if (n_group > 1) {
    return FP8MOE_ERROR_INVALID_ROUTING_PARAMS;
  }
  if (method == FP8MOE_ROUTING_LLAMA4 && K != 1) return FP8MOE_ERROR_INVALID_ROUTING_PARAMS;
  return FP8MOE_OK;
}

static inline int fp8moe__dtype_ok(int d) { return d == FP8MOE_DTYPE_FP32 || d == FP8MOE_DTYPE_BF16; }
static inline uintptr_t fp8moe__dtype_size(int d) { return d == FP8MOE_DTYPE_BF16 ? 2 : 4; }

/* num_shared_experts when it is a valid count, else 0 (for the checks that
 * come before its own). */
static inline int fp8moe__shared_count(const fp8moe_args *a) {
  return a->num_shared_experts >= 0 && a->num_shared_experts <= FP8MOE_MAX_SHARED_EXPERTS ? a->num_shared_experts : 0;
}

/* All checks of one run, in the order of the header comment. routed != 0
 * for name_run_routed. */
static inline fp8moe_status fp8moe_validate_args(const fp8moe_config *c, const fp8moe_args *a, int routed,
                                                 const void *workspace, size_t workspace_bytes) {
  int S;
  fp8moe_status s = fp8moe_validate_config(c);
  if (s != FP8MOE_OK) return s;
  if (!a) return FP8MOE_ERROR_NULL_ARGUMENT;
  S = fp8moe__shared_count(a);
  /* GEMM rows are (token, slot) pairs plus one row per token and shared expert: T*(K + S) int rows */
  if (a->num_tokens < 0 || (long long)a->num_tokens * (c->top_k + S) > INT_MAX) return FP8MOE_ERROR_INVALID_NUM_TOKENS;
  if (a->local_expert_offset < 0 || a->local_num_experts < 1 ||
      (long long)a->local_expert_offset + a->local_num_experts > c->num_experts)
    return FP8MOE_ERROR_INVALID_EXPERT_RANGE;
  if (a->num_shared_experts < 0 || a->num_shared_experts > FP8MOE_MAX_SHARED_EXPERTS)
    return FP8MOE_ERROR_INVALID_EXPERT_RANGE;
  if (!routed) {
    s = fp8moe_validate_routing(a->routing_method, c->num_experts, c->top_k, a->n_group, a->topk_group,
                                a->routed_scaling_factor);
    if (s != FP8MOE_OK) return s;
    if (!fp8moe__dtype_ok(a->logits_dtype)) return FP8MOE_ERROR_INVALID_DTYPE;
    if (a->routing_bias && !fp8moe__dtype_ok(a->bias_dtype)) return FP8MOE_ERROR_INVALID_DTYPE;
  } else {
    int packed = a->topk_packed != NULL, unpacked = a->topk_ids != NULL || a->topk_weights != NULL;
    /* At T = 0 the top-k tensors are empty and may be NULL (an empty
     * framework tensor has no data pointer); giving both forms is still wrong. */
    if (packed == unpacked && (packed || a->num_tokens > 0)) return FP8MOE_ERROR_INVALID_ROUTED_INPUT;
    if (unpacked && (!a->topk_ids || !a->topk_weights) && a->num_tokens > 0) return FP8MOE_ERROR_NULL_ARGUMENT;
    if (unpacked && !fp8moe__dtype_ok(a->topk_weights_dtype)) return FP8MOE_ERROR_INVALID_DTYPE;
  }
  if (a->num_tokens == 0) return FP8MOE_OK; /* valid, and nothing is read or written */

  if (!a->hidden_states || !a->hidden_states_scale || !a->w1 || !a->w1_scale || !a->w2 || !a->w2_scale ||
      !a->output)
    return FP8MOE_ERROR_NULL_ARGUMENT;
  if (!routed && !a->routing_logits) return FP8MOE_ERROR_NULL_ARGUMENT;
  if (S > 0 && (!a->shared_w1 || !a->shared_w1_scale || !a->shared_w2 || !a->shared_w2_scale))
    return FP8MOE_ERROR_NULL_ARGUMENT;

  /* fp8 tensors and the output are read and written 16 bytes at a time (and
   * by TMA); everything else at its element size. A NULL pointer is aligned. */
  if (!fp8moe__aligned(a->hidden_states, 16) || !fp8moe__aligned(a->w1, 16) || !fp8moe__aligned(a->w2, 16) ||
      !fp8moe__aligned(a->output, 16) || !fp8moe__aligned(a->hidden_states_scale, 4) ||
      !fp8moe__aligned(a->w1_scale, 4) || !fp8moe__aligned(a->w2_scale, 4) ||
      !fp8moe__aligned(a->invalid_id_count, 4) || !fp8moe__aligned(a->swiglu_alpha, 4) ||
      !fp8moe__aligned(a->swiglu_beta, 4) || !fp8moe__aligned(a->swiglu_limit, 4))
    return FP8MOE_ERROR_MISALIGNED_POINTER;
  if (S > 0 && (!fp8moe__aligned(a->shared_w1, 16) || !fp8moe__aligned(a->shared_w2, 16) ||
                !fp8moe__aligned(a->shared_w1_scale, 4) || !fp8moe__aligned(a->shared_w2_scale, 4)))
    return FP8MOE_ERROR_MISALIGNED_POINTER;
  if (!routed) {
    if (!fp8moe__aligned(a->routing_logits, fp8moe__dtype_size(a->logits_dtype)) ||
        !fp8moe__aligned(a->routing_bias, fp8moe__dtype_size(a->bias_dtype)) ||
        !fp8moe__aligned(a->topk_ids_out, 4) || !fp8moe__aligned(a->topk_weights_out, 4))
      return FP8MOE_ERROR_MISALIGNED_POINTER;
  } else if (a->topk_packed) {
    if (!fp8moe__aligned(a->topk_packed, 4)) return FP8MOE_ERROR_MISALIGNED_POINTER;
  } else if (!fp8moe__aligned(a->topk_ids, 4) ||
             !fp8moe__aligned(a->topk_weights, fp8moe__dtype_size(a->topk_weights_dtype))) {
    return FP8MOE_ERROR_MISALIGNED_POINTER;
  }

  if (!workspace) return FP8MOE_ERROR_NULL_WORKSPACE;
  if (!fp8moe__aligned(workspace, FP8MOE_WORKSPACE_ALIGN)) return FP8MOE_ERROR_MISALIGNED_POINTER;
  if (workspace_bytes < fp8moe_workspace_layout_shared(a->num_tokens, c->num_experts, c->top_k, c->hidden,
                                                       c->intermediate, S).total)
    return FP8MOE_ERROR_WORKSPACE_TOO_SMALL;
  return FP8MOE_OK;
}

#endif /* FP8MOE_VALIDATE_H */
