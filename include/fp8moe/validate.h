/* fp8moe/validate.h - every argument check a run makes, in plain C.
 *
 * name_run*() call fp8moe_validate_args() before anything is launched, and
 * return its status unchanged; nothing on the device is touched on failure.
 * Being plain C, the checks are unit-tested and fuzzed on machines without a
 * GPU. The order of the checks is fixed (docs/api.md lists it), so one bad
 * argument always gives the same status.
 */
#ifndef FP8MOE_VALIDATE_H
#define FP8MOE_VALIDATE_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

/* The compile-time shape an instantiation was made for. */
typedef struct fp8moe_config {
  int num_experts;   /* E, global */
  int top_k;         /* K */
  int hidden;        /* H */
  int intermediate;  /* I */
} fp8moe_config;

static inline int fp8moe__aligned(const void *p, uintptr_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

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
  if (method < 0 || method >= FP8MOE_ROUTING_COUNT_) return FP8MOE_ERROR_INVALID_ROUTING_METHOD;
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

/* All checks of one run. routed != 0 for name_run_routed. */
static inline fp8moe_status fp8moe_validate_args(const fp8moe_config *c, const fp8moe_args *a, int routed,
                                                 const void *workspace, size_t workspace_bytes) {
  fp8moe_status s = fp8moe_validate_config(c);
  if (s != FP8MOE_OK) return s;
  if (!a) return FP8MOE_ERROR_NULL_ARGUMENT;
  if (a->num_tokens < 0 || (long long)a->num_tokens * c->top_k > INT_MAX) return FP8MOE_ERROR_INVALID_NUM_TOKENS;
  if (a->local_expert_offset < 0 || a->local_num_experts < 1 ||
      (long long)a->local_expert_offset + a->local_num_experts > c->num_experts)
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

  /* fp8 tensors and the output are read and written 16 bytes at a time (and
   * by TMA); everything else at its element size. */
  if (!fp8moe__aligned(a->hidden_states, 16) || !fp8moe__aligned(a->w1, 16) || !fp8moe__aligned(a->w2, 16) ||
      !fp8moe__aligned(a->output, 16) || !fp8moe__aligned(a->hidden_states_scale, 4) ||
      !fp8moe__aligned(a->w1_scale, 4) || !fp8moe__aligned(a->w2_scale, 4) ||
      !fp8moe__aligned(a->invalid_id_count, 4))
    return FP8MOE_ERROR_MISALIGNED_POINTER;
  if (!routed) {
    if (!fp8moe__aligned(a->routing_logits, fp8moe__dtype_size(a->logits_dtype)) ||
        !fp8moe__aligned(a->routing_bias, fp8moe__dtype_size(a->bias_dtype)))
      return FP8MOE_ERROR_MISALIGNED_POINTER;
  } else if (a->topk_packed) {
    if (!fp8moe__aligned(a->topk_packed, 4)) return FP8MOE_ERROR_MISALIGNED_POINTER;
  } else if (!fp8moe__aligned(a->topk_ids, 4) ||
             !fp8moe__aligned(a->topk_weights, fp8moe__dtype_size(a->topk_weights_dtype))) {
    return FP8MOE_ERROR_MISALIGNED_POINTER;
  }

  if (!workspace) return FP8MOE_ERROR_NULL_WORKSPACE;
  if (!fp8moe__aligned(workspace, FP8MOE_WORKSPACE_ALIGN)) return FP8MOE_ERROR_MISALIGNED_POINTER;
  if (workspace_bytes < fp8moe_workspace_layout_for(a->num_tokens, c->num_experts, c->top_k, c->hidden,
                                                    c->intermediate).total)
    return FP8MOE_ERROR_WORKSPACE_TOO_SMALL;
  return FP8MOE_OK;
}

#endif /* FP8MOE_VALIDATE_H */
