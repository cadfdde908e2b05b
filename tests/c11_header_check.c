/* tests/c11_header_check.c - the public C headers compile as strict C11.
 * Built with -std=c11 -Wall -Wextra -Werror -pedantic (tests/meson.build);
 * running it checks a few values the C side relies on. */
#include <fp8moe/fp8moe.h>
#include <fp8moe/reference.h>
#include <fp8moe/grouped_gemm.h>

#include <stdio.h>

FP8MOE_DECLARE(c11_check_moe);
FP8MOE_DECLARE_GROUPED_GEMM(c11_check_gemm);

int main(void) {
  fp8moe_args a = {0};
  fp8moe_config c = {256, 8, 7168, 2048};
  int32_t p = fp8moe_topk_pack(65535, -2.0f);
  if (fp8moe_topk_id(p) != 65535 || fp8moe_topk_weight(p) != -2.0f) return 1;
  if (fp8moe_validate_args(&c, &a, 1, NULL, 0) != FP8MOE_ERROR_INVALID_EXPERT_RANGE) return 2;
  if (FP8MOE_ROUTING_DEEPSEEK_V3 != 2 || FP8MOE_ROUTING_TOPK != 5) return 3;
  printf("C11 header check: fp8moe %s OK\n", FP8MOE_VERSION_STRING);
  return 0;
}
