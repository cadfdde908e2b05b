/* consumer.c - the host side of the consumer projects of fp8moe (meson
 * subproject, pkg-config, CMake), no GPU needed. The Meson and CMake
 * consumers compile it as C, the pkg-config one as C++ (-x c++), so both
 * languages are checked against the installed headers.
 *
 * Calls the instantiation compiled in tiny.cu through the prototypes of
 * FP8MOE_DECLARE, the way a user's C or C++ code does, and checks what it can
 * without a GPU: the workspace size, argument validation, the empty call,
 * and that the headers found are the version the build system reported
 * (EXPECT_VERSION, passed by the build). Exit status 0 = all good.
 */
#include <fp8moe/fp8moe.h>

#include <stdio.h>
#include <string.h>

FP8MOE_DECLARE(tiny); /* FP8MOE_DEFINE(tiny, 8, 2, 256, 256) in tiny.cu */

#ifndef EXPECT_VERSION
#define EXPECT_VERSION FP8MOE_VERSION_STRING
#endif

static int check(int ok, const char *what) {
  if (!ok) fprintf(stderr, "consumer: FAILED: %s\n", what);
  return ok ? 0 : 1;
}

int main(void) {
  int fails = 0;
  size_t got = tiny_workspace_size(16);
  size_t want = fp8moe_workspace_layout_for(16, 8, 2, 256, 256).total;
  fails += check(got == want && got > 0, "tiny_workspace_size(16) == fp8moe_workspace_layout_for(16, 8, 2, 256, 256).total");

  fp8moe_status null_routed = tiny_run_routed(NULL, NULL, 0, NULL);
  fp8moe_status null_run = tiny_run(NULL, NULL, 0, NULL);
  fails += check(null_routed == FP8MOE_ERROR_NULL_ARGUMENT, "tiny_run_routed(NULL, ...) == FP8MOE_ERROR_NULL_ARGUMENT");
  fails += check(null_run == FP8MOE_ERROR_NULL_ARGUMENT, "tiny_run(NULL, ...) == FP8MOE_ERROR_NULL_ARGUMENT");

  /* T = 0 is valid and launches nothing, so it needs no GPU either. */
  fp8moe_args a;
  memset(&a, 0, sizeof a);
  a.num_tokens = 0;
  a.local_num_experts = 8;
  fails += check(tiny_run_routed(&a, NULL, 0, NULL) == FP8MOE_OK, "tiny_run_routed with num_tokens = 0 == FP8MOE_OK");
  a.local_num_experts = 9; /* more local experts than the instantiation has */
  fails += check(tiny_run_routed(&a, NULL, 0, NULL) == FP8MOE_ERROR_INVALID_EXPERT_RANGE,
                 "tiny_run_routed with local_num_experts = 9 of 8 == FP8MOE_ERROR_INVALID_EXPERT_RANGE");

  fails += check(strcmp(FP8MOE_VERSION_STRING, EXPECT_VERSION) == 0,
                 "the headers' FP8MOE_VERSION_STRING equals the version the build system found");

  printf("consumer: fp8moe %s (build system: %s), tiny_workspace_size(16) = %zu bytes, run_routed(NULL) -> %s\n",
         FP8MOE_VERSION_STRING, EXPECT_VERSION, got, fp8moe_status_string(null_routed));
  return fails ? 1 : 0;
}
