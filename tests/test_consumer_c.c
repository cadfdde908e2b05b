/* tests/test_consumer_c.c - what a plain C11 consumer of <fp8moe/fp8moe.h> sees.
 *
 * Includes nothing of the library but the public host header (Criterion is
 * the test harness), declares an instantiation the way a user's C code does,
 * and pins the values SPEC sections 4 and 5 promise: enum values shared with
 * FlashInfer, the version macros, and one distinct reason string per status.
 * The instantiation is declared only, never called: its prototypes are
 * checked with _Generic, whose operand is not evaluated, so nothing has to be
 * linked. The file also compiles alone with
 *   gcc -std=c11 -Wall -Wextra -Werror -pedantic -Iinclude -c
 * except for Criterion's own macros.
 */
#include <criterion/criterion.h>

#include <fp8moe/fp8moe.h>

FP8MOE_DECLARE(consumer_moe);

/* The prototypes FP8MOE_DECLARE promises (SPEC section 5). */
_Static_assert(_Generic(&consumer_moe_workspace_size, size_t (*)(int): 1, default: 0),
               "name_workspace_size(int max_tokens) -> size_t");
_Static_assert(_Generic(&consumer_moe_workspace_size_shared, size_t (*)(int, int): 1, default: 0),
               "name_workspace_size_shared(int max_tokens, int num_shared_experts) -> size_t");
_Static_assert(_Generic(&consumer_moe_run,
                        fp8moe_status (*)(const fp8moe_args *, void *, size_t, struct CUstream_st *): 1,
                        default: 0),
               "name_run(args, workspace, bytes, stream) -> fp8moe_status");
_Static_assert(_Generic(&consumer_moe_run_routed,
                        fp8moe_status (*)(const fp8moe_args *, void *, size_t, fp8moe_stream): 1, default: 0),
               "name_run_routed(args, workspace, bytes, stream) -> fp8moe_status");

#define CONSUMER_STR_(x) #x
#define CONSUMER_STR(x) CONSUMER_STR_(x)

static int same_string(const char *a, const char *b) {
  while (*a && *a == *b) a++, b++;
  return *a == *b;
}

static int starts_with(const char *s, const char *prefix) {
  while (*prefix && *s == *prefix) s++, prefix++;
  return *prefix == 0;
}

Test(consumer_c, version_macros) {
  cr_assert_geq(FP8MOE_VERSION_MAJOR, 0);
  cr_assert_geq(FP8MOE_VERSION_MINOR, 0);
  cr_assert_geq(FP8MOE_VERSION_PATCH, 0);
  cr_assert_lt(FP8MOE_VERSION_MINOR, 100);
  cr_assert_lt(FP8MOE_VERSION_PATCH, 100);
  cr_assert_eq(FP8MOE_VERSION, FP8MOE_VERSION_MAJOR * 10000 + FP8MOE_VERSION_MINOR * 100 + FP8MOE_VERSION_PATCH);
  const char *composed =
      CONSUMER_STR(FP8MOE_VERSION_MAJOR) "." CONSUMER_STR(FP8MOE_VERSION_MINOR) "." CONSUMER_STR(FP8MOE_VERSION_PATCH);
  cr_assert(same_string(FP8MOE_VERSION_STRING, composed), "FP8MOE_VERSION_STRING \"%s\" is not \"%s\"",
            FP8MOE_VERSION_STRING, composed);
#if FP8MOE_VERSION < 100 /* usable in #if */
  cr_assert_fail("FP8MOE_VERSION is below 0.1.0");
#endif
}

Test(consumer_c, status_values_and_strings) {
  cr_assert_eq(FP8MOE_OK, 0);
  const char *known[FP8MOE__STATUS_COUNT];
  for (int s = 0; s < FP8MOE__STATUS_COUNT; s++) {
    known[s] = fp8moe_status_string((fp8moe_status)s);
    cr_assert_not_null(known[s], "status %d", s);
    cr_assert(known[s][0] != 0, "status %d: empty string", s);
    cr_assert(starts_with(known[s], "FP8MOE_"), "status %d: \"%s\" does not name the status", s, known[s]);
    for (int t = 0; t < s; t++)
      cr_assert(!same_string(known[s], known[t]), "statuses %d and %d share the string \"%s\"", s, t, known[s]);
  }
  /* every status has its own name at the front of its string */
  cr_assert(starts_with(known[FP8MOE_OK], "FP8MOE_OK"));
  cr_assert(starts_with(known[FP8MOE_ERROR_WORKSPACE_TOO_SMALL], "FP8MOE_ERROR_WORKSPACE_TOO_SMALL"));
  cr_assert(starts_with(known[FP8MOE_ERROR_CUDA], "FP8MOE_ERROR_CUDA"));
  /* 0.3: the last status and the count after it */
  cr_assert_eq(FP8MOE_ERROR_NO_DEVICE, 15);
  cr_assert_eq(FP8MOE__STATUS_COUNT, 16);
  cr_assert_eq(FP8MOE__STATUS_COUNT, FP8MOE_ERROR_NO_DEVICE + 1);
  cr_assert(starts_with(known[FP8MOE_ERROR_NO_DEVICE], "FP8MOE_ERROR_NO_DEVICE: "), "\"%s\"",
            known[FP8MOE_ERROR_NO_DEVICE]);
  cr_assert(!starts_with(known[FP8MOE_ERROR_UNSUPPORTED_DEVICE], "FP8MOE_ERROR_NO_DEVICE"));

  static const int unknown[] = {FP8MOE__STATUS_COUNT, FP8MOE__STATUS_COUNT + 1, -1, 1000};
  for (unsigned i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
    const char *u = fp8moe_status_string((fp8moe_status)unknown[i]);
    cr_assert_not_null(u, "unknown status %d", unknown[i]);
    cr_assert(u[0] != 0);
    for (int t = 0; t < FP8MOE__STATUS_COUNT; t++)
      cr_assert(!same_string(u, known[t]), "unknown status %d reads as a known one: \"%s\"", unknown[i], u);
  }
}

Test(consumer_c, enum_values) {
  /* SPEC section 4: FlashInfer's RoutingMethodType */
  cr_assert_eq(FP8MOE_ROUTING_DEFAULT, 0);
  cr_assert_eq(FP8MOE_ROUTING_RENORMALIZE, 1);
  cr_assert_eq(FP8MOE_ROUTING_DEEPSEEK_V3, 2);
  cr_assert_eq(FP8MOE_ROUTING_LLAMA4, 3);
  cr_assert_eq(FP8MOE_ROUTING_RENORMALIZE_NAIVE, 4);
  cr_assert_eq(FP8MOE_ROUTING_TOPK, 5);
  cr_assert_eq(FP8MOE__ROUTING_COUNT, 6);
  /* SPEC section 5 */
  cr_assert_eq(FP8MOE_DTYPE_FP32, 0);
  cr_assert_eq(FP8MOE_DTYPE_BF16, 1);
  cr_assert_eq(FP8MOE_MAX_TOP_K, 16);
  cr_assert_eq(FP8MOE_MAX_SHARED_EXPERTS, 8);
  cr_assert_eq(FP8MOE_BLOCK, 128);
  /* the field names SPEC section 5 fixes, zero-initialized the C way */
  fp8moe_args a = {0};
  a.num_tokens = 1;
  a.local_expert_offset = 0;
  a.local_num_experts = 1;
  a.routing_method = FP8MOE_ROUTING_RENORMALIZE;
  a.logits_dtype = FP8MOE_DTYPE_BF16;
  a.bias_dtype = FP8MOE_DTYPE_FP32;
  a.n_group = a.topk_group = 1;
  a.routed_scaling_factor = 1.0f;
  a.topk_weights_dtype = FP8MOE_DTYPE_FP32;
  a.enable_pdl = 0;
  cr_assert_null(a.hidden_states);
  cr_assert_null(a.hidden_states_scale);
  cr_assert_null(a.w1);
  cr_assert_null(a.w1_scale);
  cr_assert_null(a.w2);
  cr_assert_null(a.w2_scale);
  cr_assert_null(a.routing_logits);
  cr_assert_null(a.routing_bias);
  cr_assert_null(a.topk_packed);
  cr_assert_null(a.topk_ids);
  cr_assert_null(a.topk_weights);
  cr_assert_null(a.output);
  cr_assert_null(a.invalid_id_count);
  cr_assert_eq(a.num_tokens, 1);
  /* the 0.3 fields (SPEC section 5.1): zero-initialized, they keep the behaviour of before */
  cr_assert_null(a.swiglu_alpha);
  cr_assert_null(a.swiglu_beta);
  cr_assert_null(a.swiglu_limit);
  cr_assert_null(a.topk_ids_out);
  cr_assert_null(a.topk_weights_out);
  cr_assert_eq(a.num_shared_experts, 0);
  cr_assert_null(a.shared_w1);
  cr_assert_null(a.shared_w1_scale);
  cr_assert_null(a.shared_w2);
  cr_assert_null(a.shared_w2_scale);
  cr_assert_eq(a.batch_invariant, 0);
  /* and their types, as a C caller fills them */
  static float alpha[4], beta[4], limit[4], w_out[8];
  static int32_t ids_out[8];
  static unsigned char w1[16], w2[16];
  static float s1[1], s2[1];
  a.swiglu_alpha = alpha;
  a.swiglu_beta = beta;
  a.swiglu_limit = limit;
  a.topk_ids_out = ids_out;
  a.topk_weights_out = w_out;
  a.num_shared_experts = 1;
  a.shared_w1 = w1;
  a.shared_w1_scale = s1;
  a.shared_w2 = w2;
  a.shared_w2_scale = s2;
  a.batch_invariant = 1;
  cr_assert_eq(a.topk_ids_out, ids_out);
  cr_assert_eq(a.shared_w2_scale, s2);
}

/* The packed top-k helpers are plain static inline C here. */
Test(consumer_c, topk_helpers_in_c) {
  int32_t p = fp8moe_topk_pack(65535, -1.0f);
  cr_assert_eq(fp8moe_topk_id(p), 65535);
  cr_assert_eq(fp8moe_topk_weight(p), -1.0f);
  cr_assert_eq(fp8moe_topk_weight_bits(p), 0xbf80);
}
