/* tests/test_no_device.cu - an instantiation on a machine without a usable GPU.
 *
 * A host test of the CUDA build: it runs, and must pass, in CI (no GPU).
 *  - A run with num_tokens > 0 and valid arguments passes validation, then
 *    the device query fails: every entry point (the quantizer too) returns
 *    FP8MOE_ERROR_NO_DEVICE
 *    (not FP8MOE_ERROR_CUDA, not a crash), and again on a second call (no
 *    failure is cached). The pointers are fake: aligned, never dereferenced.
 *    On a machine with a GPU, the test hides it first (CUDA_VISIBLE_DEVICES
 *    set to "" before the process's first CUDA call; Criterion runs each test
 *    in a fresh process), so the same path is checked there; if the device
 *    stays visible all the same, the test says so and skips.
 *  - What needs no device: name_workspace_size(0) and (-1) are the layout of
 *    zero tokens, and a run at T = 0 returns FP8MOE_OK with a NULL workspace.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <cuda_runtime.h>

#include <fp8moe/fp8moe.cuh>

#include <stdlib.h>

FP8MOE_DEFINE(tiny, 8, 2, 256, 256);

namespace {

const int E = 8, K = 2, H = 256, I = 256;

/* A fake device address: 4 KiB-aligned (every alignment the API asks for),
 * distinct per buffer, never dereferenced. */
template <class T>
T *fake(uintptr_t i) {
  return reinterpret_cast<T *>((uintptr_t)0x7f0000000000ull + i * 0x100000ull);
}

fp8moe_args valid_args(int T) {
  fp8moe_args a;
  memset(&a, 0, sizeof a);
  a.num_tokens = T;
  a.local_expert_offset = 0;
  a.local_num_experts = E;
  a.hidden_states = fake<void>(1);
  a.hidden_states_scale = fake<float>(2);
  a.w1 = fake<void>(3);
  a.w1_scale = fake<float>(4);
  a.w2 = fake<void>(5);
  a.w2_scale = fake<float>(6);
  a.routing_method = FP8MOE_ROUTING_RENORMALIZE;
  a.routing_logits = fake<void>(7);
  a.logits_dtype = FP8MOE_DTYPE_FP32;
  a.output = fake<void>(8);
  return a;
}

/* Hide any GPU from this process; returns whether CUDA now reports none. */
bool hide_devices(void) {
  setenv("CUDA_VISIBLE_DEVICES", "", 1);
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  (void)cudaGetLastError();
  cr_log_info("cudaGetDeviceCount: %s, %d device(s)", cudaGetErrorName(e), e == cudaSuccess ? n : 0);
  return e != cudaSuccess || n == 0;
}

} // namespace

TestSuite(no_device);

Test(no_device, run_returns_no_device) {
  if (!hide_devices()) cr_skip_test("a CUDA device stays visible with CUDA_VISIBLE_DEVICES=\"\"");
  const int T = 5;
  const size_t bytes = tiny_workspace_size(T);
  void *ws = fake<void>(64);
  const fp8moe_config c = {E, K, H, I};

  fp8moe_args a = valid_args(T);
  cr_assert_eq(fp8moe_validate_args(&c, &a, 0, ws, bytes), FP8MOE_OK, "test bug: the non-routed arguments are invalid");
  for (int rep = 0; rep < 2; rep++) {
    fp8moe_status s = tiny_run(&a, ws, bytes, NULL);
    cr_expect_eq(s, FP8MOE_ERROR_NO_DEVICE, "tiny_run (call %d): %s", rep + 1, fp8moe_status_string(s));
  }

  /* routed, packed */
  a = valid_args(T);
  a.topk_packed = fake<const int32_t>(9);
  cr_assert_eq(fp8moe_validate_args(&c, &a, 1, ws, bytes), FP8MOE_OK, "test bug: the packed arguments are invalid");
  fp8moe_status s = tiny_run_routed(&a, ws, bytes, NULL);
  cr_expect_eq(s, FP8MOE_ERROR_NO_DEVICE, "tiny_run_routed (packed): %s", fp8moe_status_string(s));

  /* routed, unpacked bf16 weights, an invalid-id counter, PDL asked for */
  a = valid_args(T);
  a.topk_ids = fake<const int32_t>(10);
  a.topk_weights = fake<const void>(11);
  a.topk_weights_dtype = FP8MOE_DTYPE_BF16;
  a.invalid_id_count = fake<int>(12);
  a.enable_pdl = 1;
  cr_assert_eq(fp8moe_validate_args(&c, &a, 1, ws, bytes), FP8MOE_OK, "test bug: the unpacked arguments are invalid");
  s = tiny_run_routed(&a, ws, bytes, NULL);
  cr_expect_eq(s, FP8MOE_ERROR_NO_DEVICE, "tiny_run_routed (unpacked): %s", fp8moe_status_string(s));

  /* the activation quantizer, with the same status */
  s = tiny_quantize_activations(fake<const void>(13), T, fake<void>(14), fake<float>(15), NULL);
  cr_expect_eq(s, FP8MOE_ERROR_NO_DEVICE, "tiny_quantize_activations: %s", fp8moe_status_string(s));
}

/* Validation comes first: a bad argument is reported as such, device or not. */
Test(no_device, bad_arguments_before_device) {
  hide_devices();
  const size_t bytes = tiny_workspace_size(5);
  fp8moe_args a = valid_args(5);
  a.output = NULL;
  cr_expect_eq(tiny_run(&a, fake<void>(64), bytes, NULL), FP8MOE_ERROR_NULL_ARGUMENT);
  a = valid_args(5);
  cr_expect_eq(tiny_run(&a, fake<void>(64), bytes - 1, NULL), FP8MOE_ERROR_WORKSPACE_TOO_SMALL);
  cr_expect_eq(tiny_run(&a, NULL, bytes, NULL), FP8MOE_ERROR_NULL_WORKSPACE);
}

Test(no_device, workspace_size_of_no_tokens) {
  const size_t zero = fp8moe_workspace_layout_for(0, E, K, H, I).total;
  cr_expect_eq(tiny_workspace_size(0), zero, "tiny_workspace_size(0) = %zu, layout of 0 tokens %zu",
               tiny_workspace_size(0), zero);
  cr_expect_eq(tiny_workspace_size(-1), zero, "tiny_workspace_size(-1) = %zu, layout of 0 tokens %zu",
               tiny_workspace_size(-1), zero);
  cr_expect_eq(tiny_workspace_size(1), fp8moe_workspace_layout_for(1, E, K, H, I).total);
  cr_expect_gt(tiny_workspace_size(1), zero);
}

/* T = 0 is valid, launches nothing and needs no workspace (nor a device). */
Test(no_device, zero_tokens_ok_without_workspace) {
  hide_devices();
  fp8moe_args a = valid_args(0);
  fp8moe_status s = tiny_run(&a, NULL, 0, NULL);
  cr_expect_eq(s, FP8MOE_OK, "tiny_run, T = 0, NULL workspace: %s", fp8moe_status_string(s));
  a.hidden_states = NULL; /* empty tensors may have no data pointer */
  a.hidden_states_scale = NULL;
  a.output = NULL;
  a.routing_logits = NULL;
  s = tiny_run(&a, NULL, 0, NULL);
  cr_expect_eq(s, FP8MOE_OK, "tiny_run, T = 0, NULL tensors and workspace: %s", fp8moe_status_string(s));

  a = valid_args(0);
  a.topk_packed = fake<const int32_t>(9);
  s = tiny_run_routed(&a, NULL, 0, NULL);
  cr_expect_eq(s, FP8MOE_OK, "tiny_run_routed (packed), T = 0, NULL workspace: %s", fp8moe_status_string(s));
  a.topk_packed = NULL; /* at T = 0 the top-k tensors may be absent too */
  s = tiny_run_routed(&a, NULL, 0, NULL);
  cr_expect_eq(s, FP8MOE_OK, "tiny_run_routed, T = 0, no top-k, NULL workspace: %s", fp8moe_status_string(s));

  s = tiny_quantize_activations(NULL, 0, NULL, NULL, NULL);
  cr_expect_eq(s, FP8MOE_OK, "tiny_quantize_activations, T = 0: %s", fp8moe_status_string(s));
}
