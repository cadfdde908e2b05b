/* tests/c11_header_check.c - the public C headers compile as strict C11.
 * Built with -std=c11 -Wall -Wextra -Werror -pedantic (tests/meson.build);
 * running it checks a few values the C side relies on, the 0.3 fields and
 * statuses included. */
#include <fp8moe/fp8moe.h>
#include <fp8moe/reference.h>
#include <fp8moe/grouped_gemm.h>

#include <stdio.h>
#include <string.h>

FP8MOE_DECLARE(c11_check_moe);
FP8MOE_DECLARE_GROUPED_GEMM(c11_check_gemm);

int main(void) {
  fp8moe_args a = {0};
  fp8moe_ref_moe_input in = {0};
  fp8moe_config c = {256, 8, 7168, 2048};
  fp8moe_workspace_layout l0, l2;
  int32_t p = fp8moe_topk_pack(65535, -2.0f);
  if (fp8moe_topk_id(p) != 65535 || fp8moe_topk_weight(p) != -2.0f) return 1;
  if (fp8moe_validate_args(&c, &a, 1, NULL, 0) != FP8MOE_ERROR_INVALID_EXPERT_RANGE) return 2;
  if (FP8MOE_ROUTING_DEEPSEEK_V3 != 2 || FP8MOE_ROUTING_TOPK != 5) return 3;
  /* 0.3: the new status, the fields zero by default, their checks */
  if (FP8MOE_ERROR_NO_DEVICE != 15 || FP8MOE__STATUS_COUNT != 16) return 4;
  if (strncmp(fp8moe_status_string(FP8MOE_ERROR_NO_DEVICE), "FP8MOE_ERROR_NO_DEVICE:", 23) != 0) return 5;
  if (a.swiglu_alpha || a.swiglu_beta || a.swiglu_limit || a.topk_ids_out || a.topk_weights_out ||
      a.num_shared_experts || a.shared_w1 || a.shared_w1_scale || a.shared_w2 || a.shared_w2_scale ||
      a.batch_invariant)
    return 6;
  if (in.swiglu_alpha || in.num_shared_experts || in.shared_w1 || in.shared_w2_scale) return 7;
  a.local_num_experts = 256;
  a.routing_method = FP8MOE_ROUTING_RENORMALIZE;
  a.num_shared_experts = FP8MOE_MAX_SHARED_EXPERTS + 1;
  if (fp8moe_validate_args(&c, &a, 0, NULL, 0) != FP8MOE_ERROR_INVALID_EXPERT_RANGE) return 8;
  a.num_shared_experts = FP8MOE_MAX_SHARED_EXPERTS;
  a.batch_invariant = 1;
  if (fp8moe_validate_args(&c, &a, 0, NULL, 0) != FP8MOE_OK) return 9; /* T = 0 */
  l0 = fp8moe_workspace_layout_for(16, 256, 8, 7168, 2048);
  l2 = fp8moe_workspace_layout_shared(16, 256, 8, 7168, 2048, 2);
  if (l2.rows != 16 * (8 + 2) || l2.total <= l0.total) return 10;
  if (fp8moe_swiglu(2.0f, 3.0f, 1.0f, 0.0f, 1.0f) != 1.0f / (1.0f + expf(-1.0f)) * 1.0f) return 11;
  printf("C11 header check: fp8moe %s OK\n", FP8MOE_VERSION_STRING);
  return 0;
}
