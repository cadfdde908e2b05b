/* tests/test_validate.c - argument validation and the workspace layout.
 *
 * Each test starts from a valid call (which must return FP8MOE_OK, so a
 * validator that rejects everything fails here too), breaks exactly one thing
 * and checks the exact status. Validation never dereferences a pointer, so
 * the "tensors" are offsets into one 256-aligned static arena.
 *
 * The 0.3 fields (SPEC section 5.1) get the same treatment: the shared
 * expert count and its tensors, the SwiGLU arrays, the replay outputs, each
 * status they can produce and where it falls in the documented order.
 *
 * The workspace tests check the layout's promises independently: every
 * offset aligned, no two live buffers overlapping (y shares x_perm's region by
 * design), the size growing with T, and no size_t arithmetic going wrong at
 * a million DeepSeek-V3 tokens (checked against hand arithmetic and 128-bit
 * sums).
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <fp8moe/fp8moe.h>

static _Alignas(256) unsigned char arena[64 * 1024];

/* A pointer into the arena, 256-aligned plus `skew` bytes. */
static void *at(int slot, int skew) { return arena + (size_t)slot * 1024 + (size_t)skew; }

static const fp8moe_config dsv3 = {256, 8, 7168, 2048};

enum { T_DEFAULT = 5 };

static size_t ws_total(const fp8moe_config *c, int T) {
  return fp8moe_workspace_layout_for(T, c->num_experts, c->top_k, c->hidden, c->intermediate).total;
}

/* A fully valid non-routed call (DeepSeekV3 routing with groups, bias). */
static fp8moe_args good_args(void) {
  fp8moe_args a;
  memset(&a, 0, sizeof a);
  a.num_tokens = T_DEFAULT;
  a.local_expert_offset = 64;
  a.local_num_experts = 32;
  a.hidden_states = at(1, 0);
  a.hidden_states_scale = (const float *)at(2, 0);
  a.w1 = at(3, 0);
  a.w1_scale = (const float *)at(4, 0);
  a.w2 = at(5, 0);
  a.w2_scale = (const float *)at(6, 0);
  a.routing_method = FP8MOE_ROUTING_DEEPSEEK_V3;
  a.routing_logits = at(7, 0);
  a.logits_dtype = FP8MOE_DTYPE_FP32;
  a.routing_bias = at(8, 0);
  a.bias_dtype = FP8MOE_DTYPE_BF16;
  a.n_group = 8;
  a.topk_group = 4;
  a.routed_scaling_factor = 2.5f;
  a.output = at(9, 0);
  a.invalid_id_count = (int *)at(10, 0);
  return a;
}

/* The same as a routed call with packed top-k. */
static fp8moe_args good_routed(void) {
  fp8moe_args a = good_args();
  a.routing_logits = NULL;
  a.routing_bias = NULL;
  a.topk_packed = (const int32_t *)at(11, 0);
  return a;
}

/* Routed, unpacked form. */
static fp8moe_args good_unpacked(void) {
  fp8moe_args a = good_routed();
  a.topk_packed = NULL;
  a.topk_ids = (const int32_t *)at(12, 0);
  a.topk_weights = at(13, 0);
  a.topk_weights_dtype = FP8MOE_DTYPE_FP32;
  return a;
}

/* A valid non-routed call with every 0.3 field set: S = 2 shared experts, the SwiGLU arrays, replay outputs. */
static fp8moe_args good_0_3(void) {
  fp8moe_args a = good_args();
  a.num_shared_experts = 2;
  a.shared_w1 = at(14, 0);
  a.shared_w1_scale = (const float *)at(15, 0);
  a.shared_w2 = at(16, 0);
  a.shared_w2_scale = (const float *)at(17, 0);
  a.swiglu_alpha = (const float *)at(18, 0);
  a.swiglu_beta = (const float *)at(19, 0);
  a.swiglu_limit = (const float *)at(20, 0);
  a.topk_ids_out = (int32_t *)at(21, 0);
  a.topk_weights_out = (float *)at(22, 0);
  a.batch_invariant = 1;
  return a;
}

/* The same, routed (packed). */
static fp8moe_args good_0_3_routed(void) {
  fp8moe_args a = good_0_3();
  a.routing_logits = NULL;
  a.routing_bias = NULL;
  a.topk_packed = (const int32_t *)at(11, 0);
  return a;
}

static void *workspace(void) { return at(32, 0); }

static size_t ws_total_shared(const fp8moe_config *c, int T, int S) {
  return fp8moe_workspace_layout_shared(T, c->num_experts, c->top_k, c->hidden, c->intermediate, S).total;
}

/* With the workspace the call needs: sized for its T and (valid) S. */
static size_t ws_for(const fp8moe_config *c, const fp8moe_args *a) {
  int S = a && a->num_shared_experts > 0 && a->num_shared_experts <= FP8MOE_MAX_SHARED_EXPERTS ? a->num_shared_experts : 0;
  return ws_total_shared(c, a ? a->num_tokens : 0, S);
}

static fp8moe_status run_nr(const fp8moe_config *c, const fp8moe_args *a) {
  return fp8moe_validate_args(c, a, 0, workspace(), ws_for(c, a));
}

static fp8moe_status run_r(const fp8moe_config *c, const fp8moe_args *a) {
  return fp8moe_validate_args(c, a, 1, workspace(), ws_for(c, a));
}

#define EXPECT(expr, status)                                                                                  \
  do {                                                                                                        \
    fp8moe_status got_ = (expr);                                                                              \
    cr_assert_eq(got_, (status), "%s: got %s, want %s", #expr, fp8moe_status_string(got_),                   \
                 fp8moe_status_string(status));                                                               \
  } while (0)

/* ---- the valid baselines -------------------------------------------------- */

Test(validate, baselines_are_ok) {
  fp8moe_args a = good_args(), r = good_routed(), u = good_unpacked();
  EXPECT(run_nr(&dsv3, &a), FP8MOE_OK);
  EXPECT(run_r(&dsv3, &r), FP8MOE_OK);
  EXPECT(run_r(&dsv3, &u), FP8MOE_OK);
  u.topk_weights_dtype = FP8MOE_DTYPE_BF16;
  EXPECT(run_r(&dsv3, &u), FP8MOE_OK);
  /* optional fields really are optional */
  a.routing_bias = NULL;
  a.invalid_id_count = NULL;
  EXPECT(run_nr(&dsv3, &a), FP8MOE_OK);
  /* every method with parameters it can take */
  for (int m = 0; m < FP8MOE__ROUTING_COUNT; m++) {
    fp8moe_args b = good_args();
    fp8moe_config c = dsv3;
    b.routing_method = m;
    if (m != FP8MOE_ROUTING_DEEPSEEK_V3) b.n_group = b.topk_group = (m & 1);
    if (m == FP8MOE_ROUTING_LLAMA4) c.top_k = 1;
    EXPECT(run_nr(&c, &b), FP8MOE_OK);
  }
}

/* ---- config ----------------------------------------------------------------- */

Test(validate, config) {
  fp8moe_config c = dsv3;
  EXPECT(fp8moe_validate_config(&c), FP8MOE_OK);
  EXPECT(fp8moe_validate_config(NULL), FP8MOE_ERROR_NULL_ARGUMENT);

  static const int bad_dims[] = {0, -128, 64, 100, 129, 7168 + 64, INT_MIN};
  for (size_t i = 0; i < sizeof bad_dims / sizeof bad_dims[0]; i++) {
    c = dsv3;
    c.hidden = bad_dims[i];
    EXPECT(fp8moe_validate_config(&c), FP8MOE_ERROR_INVALID_SHAPE);
    c = dsv3;
    c.intermediate = bad_dims[i];
    EXPECT(fp8moe_validate_config(&c), FP8MOE_ERROR_INVALID_SHAPE);
  }
  c = dsv3;
  c.hidden = 128;
  c.intermediate = 128;
  EXPECT(fp8moe_validate_config(&c), FP8MOE_OK);

  static const int bad_e[] = {0, -1, FP8MOE_MAX_EXPERTS + 1, INT_MAX};
  for (size_t i = 0; i < sizeof bad_e / sizeof bad_e[0]; i++) {
    c = dsv3;
    c.num_experts = bad_e[i];
    EXPECT(fp8moe_validate_config(&c), FP8MOE_ERROR_INVALID_SHAPE);
  }
  c = dsv3;
  c.num_experts = FP8MOE_MAX_EXPERTS;
  EXPECT(fp8moe_validate_config(&c), FP8MOE_OK);
  c.num_experts = 1;
  c.top_k = 1;
  EXPECT(fp8moe_validate_config(&c), FP8MOE_OK);

  c = dsv3;
  c.top_k = 0;
  EXPECT(fp8moe_validate_config(&c), FP8MOE_ERROR_INVALID_TOP_K);
  c.top_k = -3;
  EXPECT(fp8moe_validate_config(&c), FP8MOE_ERROR_INVALID_TOP_K);
  c.top_k = FP8MOE_MAX_TOP_K + 1; /* 17 <= E = 256 */
  EXPECT(fp8moe_validate_config(&c), FP8MOE_ERROR_INVALID_TOP_K);
  c.top_k = FP8MOE_MAX_TOP_K;
  EXPECT(fp8moe_validate_config(&c), FP8MOE_OK);
  c.num_experts = 4;
  c.top_k = 5; /* K > E */
  EXPECT(fp8moe_validate_config(&c), FP8MOE_ERROR_INVALID_TOP_K);
  c.top_k = 4;
  EXPECT(fp8moe_validate_config(&c), FP8MOE_OK);

  /* validate_args checks the config first */
  fp8moe_args a = good_args();
  c = dsv3;
  c.hidden = 100;
  EXPECT(fp8moe_validate_args(&c, &a, 0, workspace(), SIZE_MAX), FP8MOE_ERROR_INVALID_SHAPE);
  EXPECT(fp8moe_validate_args(NULL, &a, 0, workspace(), SIZE_MAX), FP8MOE_ERROR_NULL_ARGUMENT);
}

/* ---- token count and expert range ------------------------------------------ */

Test(validate, null_args) {
  EXPECT(fp8moe_validate_args(&dsv3, NULL, 0, workspace(), SIZE_MAX), FP8MOE_ERROR_NULL_ARGUMENT);
  EXPECT(fp8moe_validate_args(&dsv3, NULL, 1, workspace(), SIZE_MAX), FP8MOE_ERROR_NULL_ARGUMENT);
}

Test(validate, num_tokens) {
  fp8moe_args a = good_args();
  a.num_tokens = -1;
  EXPECT(run_nr(&dsv3, &a), FP8MOE_ERROR_INVALID_NUM_TOKENS);
  a.num_tokens = INT_MIN;
  EXPECT(run_nr(&dsv3, &a), FP8MOE_ERROR_INVALID_NUM_TOKENS);
  fp8moe_args r = good_routed();
  r.num_tokens = -7;
  EXPECT(run_r(&dsv3, &r), FP8MOE_ERROR_INVALID_NUM_TOKENS);

  /* T*K must fit an int: K = 8 */
  a = good_args();
  a.num_tokens = INT_MAX / 8 + 1;
  EXPECT(fp8moe_validate_args(&dsv3, &a, 0, workspace(), SIZE_MAX), FP8MOE_ERROR_INVALID_NUM_TOKENS);
  a.num_tokens = INT_MAX;
  EXPECT(fp8moe_validate_args(&dsv3, &a, 0, workspace(), SIZE_MAX), FP8MOE_ERROR_INVALID_NUM_TOKENS);
  a.num_tokens = INT_MAX / 8; /* the largest that fits */
  EXPECT(fp8moe_validate_args(&dsv3, &a, 0, workspace(), SIZE_MAX), FP8MOE_OK);
  EXPECT(fp8moe_validate_args(&dsv3, &a, 0, workspace(), ws_total(&dsv3, a.num_tokens)), FP8MOE_OK);
  EXPECT(fp8moe_validate_args(&dsv3, &a, 0, workspace(), ws_total(&dsv3, a.num_tokens) - 1),
         FP8MOE_ERROR_WORKSPACE_TOO_SMALL);
  /* K = 1: T = INT_MAX is fine */
  fp8moe_config c1 = {128, 1, 128, 128};
  r = good_routed();
  r.local_expert_offset = 0;
  r.num_tokens = INT_MAX;
  EXPECT(fp8moe_validate_args(&c1, &r, 1, workspace(), SIZE_MAX), FP8MOE_OK);
}

Test(validate, expert_range) {
  static const struct {
    int offset, local;
    fp8moe_status want;
  } cases[] = {
      {-1, 32, FP8MOE_ERROR_INVALID_EXPERT_RANGE},
      {INT_MIN, 32, FP8MOE_ERROR_INVALID_EXPERT_RANGE},
      {0, 0, FP8MOE_ERROR_INVALID_EXPERT_RANGE},
      {0, -1, FP8MOE_ERROR_INVALID_EXPERT_RANGE},
      {250, 7, FP8MOE_ERROR_INVALID_EXPERT_RANGE},
      {0, 257, FP8MOE_ERROR_INVALID_EXPERT_RANGE},
      {256, 1, FP8MOE_ERROR_INVALID_EXPERT_RANGE},
      {INT_MAX, 1, FP8MOE_ERROR_INVALID_EXPERT_RANGE}, /* offset + local overflows an int */
      {1, INT_MAX, FP8MOE_ERROR_INVALID_EXPERT_RANGE},
      {250, 6, FP8MOE_OK},
      {255, 1, FP8MOE_OK},
      {0, 256, FP8MOE_OK},
      {64, 32, FP8MOE_OK},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    fp8moe_args a = good_args(), r = good_routed();
    a.local_expert_offset = r.local_expert_offset = cases[i].offset;
    a.local_num_experts = r.local_num_experts = cases[i].local;
    cr_assert_eq(run_nr(&dsv3, &a), cases[i].want, "offset %d local %d", cases[i].offset, cases[i].local);
    cr_assert_eq(run_r(&dsv3, &r), cases[i].want, "routed: offset %d local %d", cases[i].offset, cases[i].local);
  }
}

/* ---- routing method and parameters ----------------------------------------- */

Test(validate, unknown_routing_method) {
  static const int bad[] = {-1, FP8MOE__ROUTING_COUNT, 6, 7, 100, INT_MIN, INT_MAX};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    fp8moe_args a = good_args();
    a.routing_method = bad[i];
    a.n_group = a.topk_group = 0;
    cr_assert_eq(run_nr(&dsv3, &a), FP8MOE_ERROR_INVALID_ROUTING_METHOD, "method %d", bad[i]);
    cr_assert_eq(fp8moe_validate_routing(bad[i], 256, 8, 0, 0, 1.0f), FP8MOE_ERROR_INVALID_ROUTING_METHOD);
    /* the routed path ignores every routing field */
    fp8moe_args r = good_routed();
    r.routing_method = bad[i];
    r.n_group = 3;
    r.topk_group = -1;
    r.routed_scaling_factor = NAN;
    r.logits_dtype = (fp8moe_dtype)9;
    cr_assert_eq(run_r(&dsv3, &r), FP8MOE_OK, "routed, method %d", bad[i]);
  }
}

Test(validate, llama4_needs_k1) {
  fp8moe_config c = dsv3;
  fp8moe_args a = good_args();
  a.routing_method = FP8MOE_ROUTING_LLAMA4;
  a.n_group = a.topk_group = 0;
  EXPECT(run_nr(&c, &a), FP8MOE_ERROR_INVALID_ROUTING_PARAMS);
  c.top_k = 2;
  EXPECT(run_nr(&c, &a), FP8MOE_ERROR_INVALID_ROUTING_PARAMS);
  c.top_k = 1;
  EXPECT(run_nr(&c, &a), FP8MOE_OK);
  EXPECT(fp8moe_validate_routing(FP8MOE_ROUTING_LLAMA4, 16, 2, 0, 0, 0.0f), FP8MOE_ERROR_INVALID_ROUTING_PARAMS);
  EXPECT(fp8moe_validate_routing(FP8MOE_ROUTING_LLAMA4, 16, 1, 1, 1, 0.0f), FP8MOE_OK);
}

Test(validate, deepseek_groups) {
  const int ds = FP8MOE_ROUTING_DEEPSEEK_V3;
  EXPECT(fp8moe_validate_routing(ds, 256, 8, 8, 4, 2.5f), FP8MOE_OK);
  EXPECT(fp8moe_validate_routing(ds, 384, 8, 1, 1, 2.827f), FP8MOE_OK); /* Kimi-K2 */
  EXPECT(fp8moe_validate_routing(ds, 256, 8, 0, 0, 0.0f), FP8MOE_OK);   /* no groups, scale 0 means 1 */
  /* n_group must divide E */
  EXPECT(fp8moe_validate_routing(ds, 256, 8, 3, 1, 1.0f), FP8MOE_ERROR_INVALID_ROUTING_PARAMS);
  EXPECT(fp8moe_validate_routing(ds, 256, 8, 512, 1, 1.0f), FP8MOE_ERROR_INVALID_ROUTING_PARAMS);
  /* topk_group in [1, n_group] */
  EXPECT(fp8moe_validate_routing(ds, 256, 8, 8, 9, 1.0f), FP8MOE_ERROR_INVALID_ROUTING_PARAMS);
  EXPECT(fp8moe_validate_routing(ds, 256, 8, 8, 0, 1.0f), FP8MOE_ERROR_INVALID_ROUTING_PARAMS);
  EXPECT(fp8moe_validate_routing(ds, 256, 8, 8, 8, 1.0f), FP8MOE_OK);
  /* K <= topk_group * E / n_group: E 16 in 8 groups of 2 */
  EXPECT(fp8moe_validate_routing(ds, 16, 8, 8, 3, 1.0f), FP8MOE_ERROR_INVALID_ROUTING_PARAMS);
  EXPECT(fp8moe_validate_routing(ds, 16, 8, 8, 4, 1.0f), FP8MOE_OK);
  EXPECT(fp8moe_validate_routing(ds, 16, 9, 8, 4, 1.0f), FP8MOE_ERROR_INVALID_ROUTING_PARAMS);
  /* negative group parameters */
  EXPECT(fp8moe_validate_routing(ds, 256, 8, -1, 0, 1.0f), FP8MOE_ERROR_INVALID_ROUTING_PARAMS);
  EXPECT(fp8moe_validate_routing(ds, 256, 8, 0, -1, 1.0f), FP8MOE_ERROR_INVALID_ROUTING_PARAMS);
  EXPECT(fp8moe_validate_routing(FP8MOE_ROUTING_RENORMALIZE, 256, 8, 0, -1, 1.0f),
         FP8MOE_ERROR_INVALID_ROUTING_PARAMS);

  /* the same through validate_args */
  fp8moe_args a = good_args();
  a.n_group = 3;
  EXPECT(run_nr(&dsv3, &a), FP8MOE_ERROR_INVALID_ROUTING_PARAMS);
  a = good_args();
  a.topk_group = 9;
  EXPECT(run_nr(&dsv3, &a), FP8MOE_ERROR_INVALID_ROUTING_PARAMS);
  a.topk_group = 0;
  EXPECT(run_nr(&dsv3, &a), FP8MOE_ERROR_INVALID_ROUTING_PARAMS);
  fp8moe_config small = {16, 8, 128, 128};
  a = good_args();
  a.local_expert_offset = 0;
  a.local_num_experts = 16;
  a.topk_group = 3;
  EXPECT(run_nr(&small, &a), FP8MOE_ERROR_INVALID_ROUTING_PARAMS);
  a.topk_group = 4;
  EXPECT(run_nr(&small, &a), FP8MOE_OK);
}

Test(validate, groups_only_for_deepseek) {
  for (int m = 0; m < FP8MOE__ROUTING_COUNT; m++) {
    if (m == FP8MOE_ROUTING_DEEPSEEK_V3) continue;
    int K = m == FP8MOE_ROUTING_LLAMA4 ? 1 : 8;
    cr_assert_eq(fp8moe_validate_routing(m, 256, K, 8, 4, 1.0f), FP8MOE_ERROR_INVALID_ROUTING_PARAMS, "method %d", m);
    cr_assert_eq(fp8moe_validate_routing(m, 256, K, 2, 1, 1.0f), FP8MOE_ERROR_INVALID_ROUTING_PARAMS, "method %d", m);
    cr_assert_eq(fp8moe_validate_routing(m, 256, K, 1, 1, 1.0f), FP8MOE_OK, "method %d", m);
    cr_assert_eq(fp8moe_validate_routing(m, 256, K, 0, 0, 1.0f), FP8MOE_OK, "method %d", m);
    fp8moe_config c = dsv3;
    c.top_k = K;
    fp8moe_args a = good_args();
    a.routing_method = m; /* keeps n_group 8 */
    cr_assert_eq(run_nr(&c, &a), FP8MOE_ERROR_INVALID_ROUTING_PARAMS, "method %d", m);
  }
}

Test(validate, scaling_factor) {
  static const float bad[] = {NAN, -NAN, INFINITY, -INFINITY};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    fp8moe_args a = good_args();
    a.routed_scaling_factor = bad[i];
    cr_assert_eq(run_nr(&dsv3, &a), FP8MOE_ERROR_INVALID_ROUTING_PARAMS, "scale %f", (double)bad[i]);
    cr_assert_eq(fp8moe_validate_routing(FP8MOE_ROUTING_DEEPSEEK_V3, 256, 8, 1, 1, bad[i]),
                 FP8MOE_ERROR_INVALID_ROUTING_PARAMS);
  }
  fp8moe_args a = good_args();
  a.routed_scaling_factor = 3.4e38f;
  EXPECT(run_nr(&dsv3, &a), FP8MOE_OK);
  a.routed_scaling_factor = 0.0f;
  EXPECT(run_nr(&dsv3, &a), FP8MOE_OK);
}

/* ---- dtypes ----------------------------------------------------------------- */

Test(validate, dtypes) {
  static const int bad[] = {-1, 2, 3, 100};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    fp8moe_args a = good_args();
    a.logits_dtype = (fp8moe_dtype)bad[i];
    cr_assert_eq(run_nr(&dsv3, &a), FP8MOE_ERROR_INVALID_DTYPE, "logits dtype %d", bad[i]);
    a = good_args();
    a.bias_dtype = (fp8moe_dtype)bad[i];
    cr_assert_eq(run_nr(&dsv3, &a), FP8MOE_ERROR_INVALID_DTYPE, "bias dtype %d", bad[i]);
    a.routing_bias = NULL; /* no bias: its dtype is not looked at */
    cr_assert_eq(run_nr(&dsv3, &a), FP8MOE_OK, "bias dtype %d without bias", bad[i]);
    fp8moe_args u = good_unpacked();
    u.topk_weights_dtype = (fp8moe_dtype)bad[i];
    cr_assert_eq(run_r(&dsv3, &u), FP8MOE_ERROR_INVALID_DTYPE, "topk weights dtype %d", bad[i]);
    fp8moe_args r = good_routed(); /* packed: the weights dtype is not looked at */
    r.topk_weights_dtype = (fp8moe_dtype)bad[i];
    cr_assert_eq(run_r(&dsv3, &r), FP8MOE_OK, "packed, weights dtype %d", bad[i]);
  }
}

/* ---- routed input ------------------------------------------------------------- */

Test(validate, routed_input_forms) {
  fp8moe_args r = good_routed();
  r.topk_ids = (const int32_t *)at(12, 0);
  r.topk_weights = at(13, 0);
  EXPECT(run_r(&dsv3, &r), FP8MOE_ERROR_INVALID_ROUTED_INPUT); /* both forms */
  r.topk_ids = NULL;
  EXPECT(run_r(&dsv3, &r), FP8MOE_ERROR_INVALID_ROUTED_INPUT); /* packed + weights */
  r.topk_ids = (const int32_t *)at(12, 0);
  r.topk_weights = NULL;
  EXPECT(run_r(&dsv3, &r), FP8MOE_ERROR_INVALID_ROUTED_INPUT); /* packed + ids */
  r.topk_packed = NULL;
  r.topk_ids = NULL;
  EXPECT(run_r(&dsv3, &r), FP8MOE_ERROR_INVALID_ROUTED_INPUT); /* neither */

  fp8moe_args u = good_unpacked();
  u.topk_weights = NULL;
  EXPECT(run_r(&dsv3, &u), FP8MOE_ERROR_NULL_ARGUMENT); /* ids without weights */
  u = good_unpacked();
  u.topk_ids = NULL;
  EXPECT(run_r(&dsv3, &u), FP8MOE_ERROR_NULL_ARGUMENT); /* weights without ids */

  /* A non-routed call does not look at the routed fields. */
  fp8moe_args a = good_args();
  a.topk_packed = (const int32_t *)at(11, 1);
  a.topk_ids = (const int32_t *)at(12, 0);
  a.topk_weights_dtype = (fp8moe_dtype)7;
  EXPECT(run_nr(&dsv3, &a), FP8MOE_OK);
}

/* ---- NULL data pointers --------------------------------------------------------- */

enum { P_HS, P_HS_SCALE, P_W1, P_W1_SCALE, P_W2, P_W2_SCALE, P_OUT, P_COUNT };

static void null_one(fp8moe_args *a, int which) {
  switch (which) {
  case P_HS: a->hidden_states = NULL; break;
  case P_HS_SCALE: a->hidden_states_scale = NULL; break;
  case P_W1: a->w1 = NULL; break;
  case P_W1_SCALE: a->w1_scale = NULL; break;
  case P_W2: a->w2 = NULL; break;
  case P_W2_SCALE: a->w2_scale = NULL; break;
  case P_OUT: a->output = NULL; break;
  }
}

Test(validate, null_required_pointers) {
  for (int p = 0; p < P_COUNT; p++) {
    fp8moe_args a = good_args(), r = good_routed(), u = good_unpacked();
    null_one(&a, p);
    null_one(&r, p);
    null_one(&u, p);
    cr_assert_eq(run_nr(&dsv3, &a), FP8MOE_ERROR_NULL_ARGUMENT, "pointer %d", p);
    cr_assert_eq(run_r(&dsv3, &r), FP8MOE_ERROR_NULL_ARGUMENT, "routed, pointer %d", p);
    cr_assert_eq(run_r(&dsv3, &u), FP8MOE_ERROR_NULL_ARGUMENT, "unpacked, pointer %d", p);
  }
  fp8moe_args a = good_args();
  a.routing_logits = NULL;
  EXPECT(run_nr(&dsv3, &a), FP8MOE_ERROR_NULL_ARGUMENT);
  fp8moe_args r = good_routed();
  EXPECT(run_r(&dsv3, &r), FP8MOE_OK); /* (good_routed has NULL logits) */
  cr_assert_null(r.routing_logits);
}

/* ---- alignment ---------------------------------------------------------------- */

Test(validate, misaligned_pointers) {
  const fp8moe_status MIS = FP8MOE_ERROR_MISALIGNED_POINTER, OK = FP8MOE_OK;
  fp8moe_args a;
  /* fp8 tensors and the output: 16 bytes */
  static const int skews16[] = {1, 2, 4, 8, 12};
  for (size_t i = 0; i < sizeof skews16 / sizeof skews16[0]; i++) {
    int s = skews16[i];
    a = good_args(); a.hidden_states = at(1, s);  cr_assert_eq(run_nr(&dsv3, &a), MIS, "hidden_states +%d", s);
    a = good_args(); a.w1 = at(3, s);             cr_assert_eq(run_nr(&dsv3, &a), MIS, "w1 +%d", s);
    a = good_args(); a.w2 = at(5, s);             cr_assert_eq(run_nr(&dsv3, &a), MIS, "w2 +%d", s);
    a = good_args(); a.output = at(9, s);         cr_assert_eq(run_nr(&dsv3, &a), MIS, "output +%d", s);
    a = good_routed(); a.output = at(9, s);       cr_assert_eq(run_r(&dsv3, &a), MIS, "routed output +%d", s);
  }
  a = good_args(); a.hidden_states = at(1, 16); EXPECT(run_nr(&dsv3, &a), OK);
  a = good_args(); a.w1 = at(3, 48);            EXPECT(run_nr(&dsv3, &a), OK);
  a = good_args(); a.output = at(9, 32);        EXPECT(run_nr(&dsv3, &a), OK);
  /* output + 2 bf16 elements (4 bytes) */
  a = good_args(); a.output = (uint16_t *)at(9, 0) + 2; EXPECT(run_nr(&dsv3, &a), MIS);

  /* fp32 scales and the counter: 4 bytes */
  static const int skews4[] = {1, 2, 3};
  for (size_t i = 0; i < sizeof skews4 / sizeof skews4[0]; i++) {
    int s = skews4[i];
    a = good_args(); a.hidden_states_scale = (const float *)at(2, s); cr_assert_eq(run_nr(&dsv3, &a), MIS);
    a = good_args(); a.w1_scale = (const float *)at(4, s);            cr_assert_eq(run_nr(&dsv3, &a), MIS);
    a = good_args(); a.w2_scale = (const float *)at(6, s);            cr_assert_eq(run_nr(&dsv3, &a), MIS);
    a = good_args(); a.invalid_id_count = (int *)at(10, s);           cr_assert_eq(run_nr(&dsv3, &a), MIS);
    a = good_routed(); a.topk_packed = (const int32_t *)at(11, s);    cr_assert_eq(run_r(&dsv3, &a), MIS);
    a = good_unpacked(); a.topk_ids = (const int32_t *)at(12, s);     cr_assert_eq(run_r(&dsv3, &a), MIS);
  }
  a = good_args(); a.hidden_states_scale = (const float *)at(2, 4); EXPECT(run_nr(&dsv3, &a), OK);
  a = good_args(); a.w2_scale = (const float *)at(6, 4);            EXPECT(run_nr(&dsv3, &a), OK);
  a = good_args(); a.invalid_id_count = (int *)at(10, 4);           EXPECT(run_nr(&dsv3, &a), OK);
  a = good_routed(); a.topk_packed = (const int32_t *)at(11, 4);    EXPECT(run_r(&dsv3, &a), OK);

  /* logits and bias: their element size (fp32 4, bf16 2) */
  a = good_args(); a.logits_dtype = FP8MOE_DTYPE_FP32; a.routing_logits = (const float *)at(7, 0) + 1;
  EXPECT(run_nr(&dsv3, &a), OK);
  a.routing_logits = at(7, 2); EXPECT(run_nr(&dsv3, &a), MIS);
  a.routing_logits = at(7, 1); EXPECT(run_nr(&dsv3, &a), MIS);
  a.logits_dtype = FP8MOE_DTYPE_BF16;
  a.routing_logits = at(7, 2); EXPECT(run_nr(&dsv3, &a), OK);
  a.routing_logits = at(7, 1); EXPECT(run_nr(&dsv3, &a), MIS);
  a = good_args(); a.bias_dtype = FP8MOE_DTYPE_FP32;
  a.routing_bias = at(8, 2); EXPECT(run_nr(&dsv3, &a), MIS);
  a.routing_bias = at(8, 4); EXPECT(run_nr(&dsv3, &a), OK);
  a.bias_dtype = FP8MOE_DTYPE_BF16;
  a.routing_bias = at(8, 2); EXPECT(run_nr(&dsv3, &a), OK);
  a.routing_bias = at(8, 3); EXPECT(run_nr(&dsv3, &a), MIS);

  /* unpacked weights: their element size */
  a = good_unpacked(); a.topk_weights_dtype = FP8MOE_DTYPE_FP32;
  a.topk_weights = at(13, 2); EXPECT(run_r(&dsv3, &a), MIS);
  a.topk_weights = at(13, 4); EXPECT(run_r(&dsv3, &a), OK);
  a.topk_weights_dtype = FP8MOE_DTYPE_BF16;
  a.topk_weights = at(13, 2); EXPECT(run_r(&dsv3, &a), OK);
  a.topk_weights = at(13, 1); EXPECT(run_r(&dsv3, &a), MIS);

  /* workspace: FP8MOE_WORKSPACE_ALIGN (256) */
  a = good_args();
  static const int wskews[] = {1, 16, 128, 255};
  for (size_t i = 0; i < sizeof wskews / sizeof wskews[0]; i++)
    cr_assert_eq(fp8moe_validate_args(&dsv3, &a, 0, at(32, wskews[i]), SIZE_MAX), MIS, "workspace +%d", wskews[i]);
  EXPECT(fp8moe_validate_args(&dsv3, &a, 0, at(32, 256), SIZE_MAX), OK);
}

/* ---- workspace size ---------------------------------------------------------- */

Test(validate, workspace_checks) {
  static const fp8moe_config configs[] = {
      {256, 8, 7168, 2048}, {384, 8, 7168, 2048}, {128, 8, 4096, 1536}, {8, 2, 4096, 14336}, {1, 1, 128, 128}};
  static const int Ts[] = {1, 2, 3, 5, 16, 127, 128, 1000, 4096, 16384};
  for (size_t ci = 0; ci < sizeof configs / sizeof configs[0]; ci++) {
    const fp8moe_config *c = &configs[ci];
    for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
      fp8moe_args a = good_routed();
      a.local_expert_offset = 0;
      a.local_num_experts = c->num_experts;
      a.num_tokens = Ts[ti];
      size_t need = ws_total(c, Ts[ti]);
      cr_assert_gt(need, 0);
      cr_assert_eq(fp8moe_validate_args(c, &a, 1, NULL, need), FP8MOE_ERROR_NULL_WORKSPACE);
      cr_assert_eq(fp8moe_validate_args(c, &a, 1, NULL, SIZE_MAX), FP8MOE_ERROR_NULL_WORKSPACE);
      cr_assert_eq(fp8moe_validate_args(c, &a, 1, workspace(), need - 1), FP8MOE_ERROR_WORKSPACE_TOO_SMALL,
                   "config %zu T %d", ci, Ts[ti]);
      cr_assert_eq(fp8moe_validate_args(c, &a, 1, workspace(), 0), FP8MOE_ERROR_WORKSPACE_TOO_SMALL);
      cr_assert_eq(fp8moe_validate_args(c, &a, 1, workspace(), need), FP8MOE_OK, "config %zu T %d", ci, Ts[ti]);
      cr_assert_eq(fp8moe_validate_args(c, &a, 1, workspace(), SIZE_MAX), FP8MOE_OK);
      /* a workspace sized for more tokens is enough for fewer */
      cr_assert_eq(fp8moe_validate_args(c, &a, 1, workspace(), ws_total(c, Ts[ti] + 1)), FP8MOE_OK);
    }
  }
}

/* T = 0 is valid and needs nothing: no data, no workspace. */
Test(validate, zero_tokens) {
  fp8moe_args a;
  memset(&a, 0, sizeof a);
  a.local_expert_offset = 0;
  a.local_num_experts = 256;
  a.routing_method = FP8MOE_ROUTING_RENORMALIZE;
  EXPECT(fp8moe_validate_args(&dsv3, &a, 0, NULL, 0), FP8MOE_OK);
  /* routed: an empty framework tensor has a NULL data pointer */
  EXPECT(fp8moe_validate_args(&dsv3, &a, 1, NULL, 0), FP8MOE_OK);
  a.topk_packed = (const int32_t *)at(11, 0);
  EXPECT(fp8moe_validate_args(&dsv3, &a, 1, NULL, 0), FP8MOE_OK);
  a.topk_packed = NULL;
  a.topk_ids = (const int32_t *)at(12, 0);
  a.topk_weights = at(13, 0);
  EXPECT(fp8moe_validate_args(&dsv3, &a, 1, NULL, 0), FP8MOE_OK);
  a.topk_weights = NULL; /* one empty tensor NULL, the other not */
  EXPECT(fp8moe_validate_args(&dsv3, &a, 1, NULL, 0), FP8MOE_OK);
  /* a bad configuration is still reported at T = 0 */
  fp8moe_args b = good_args();
  b.num_tokens = 0;
  b.routing_method = 6;
  EXPECT(fp8moe_validate_args(&dsv3, &b, 0, NULL, 0), FP8MOE_ERROR_INVALID_ROUTING_METHOD);
  b = good_args();
  b.num_tokens = 0;
  b.local_num_experts = 0;
  EXPECT(fp8moe_validate_args(&dsv3, &b, 0, NULL, 0), FP8MOE_ERROR_INVALID_EXPERT_RANGE);
  fp8moe_args r = good_routed();
  r.num_tokens = 0;
  r.topk_ids = (const int32_t *)at(12, 0);
  r.topk_weights = at(13, 0);
  EXPECT(fp8moe_validate_args(&dsv3, &r, 1, NULL, 0), FP8MOE_ERROR_INVALID_ROUTED_INPUT); /* both forms */
}

/* ---- workspace layout ------------------------------------------------------------ */

typedef struct {
  const char *name;
  size_t off, size;
} region;

/* The buffers and their sizes, computed here from the table in workspace.h. */
static int regions_of(const fp8moe_workspace_layout *L, int T, int S, const fp8moe_config *c, region *r) {
  size_t slots = (size_t)T * (size_t)c->top_k, rows = (size_t)T * (size_t)(c->top_k + S), E = (size_t)c->num_experts,
         H = (size_t)c->hidden, I = (size_t)c->intermediate;
  size_t ld = L->scale_ld;
  int n = 0;
  r[n++] = (region){"slot_expert", L->slot_expert, slots * 4};
  r[n++] = (region){"slot_weight", L->slot_weight, slots * 4};
  r[n++] = (region){"slot_row", L->slot_row, slots * 4};
  r[n++] = (region){"expert_count", L->expert_count, E * 4};
  r[n++] = (region){"expert_offset", L->expert_offset, (E + 1 + (size_t)S) * 4};
  r[n++] = (region){"tile_counter", L->tile_counter, 4 * 4};
  r[n++] = (region){"x_perm", L->x_perm, rows * H};
  r[n++] = (region){"x_perm_scale", L->x_perm_scale, (H / 128) * ld * 4};
  r[n++] = (region){"act", L->act, rows * I};
  r[n++] = (region){"act_scale", L->act_scale, (I / 128) * ld * 4};
  {
    /* the small-T layer's partial sums: (K + S) * max(8, min(T, its token limit)) rows */
    const int lim = fp8moe_small_token_limit(c->top_k, c->hidden, c->intermediate), tt = T < lim ? T : lim;
    size_t prow = T == 0 || lim == 0 ? 0 : (size_t)(c->top_k + S) * (size_t)(tt > 8 ? tt : 8);
    cr_assert_eq(L->small_rows, prow, "T %d: small_rows %zu, expected %zu", T, L->small_rows, prow);
    r[n++] = (region){"small_part", L->small_part, prow * (2 * I > H ? 2 * I : H) * 4};
  }
  r[n++] = (region){"y", L->y, rows * H * 2}; /* last: shares x_perm's region */
  return n;
}

static void check_layout_shared(const fp8moe_config *c, int T, int S) {
  fp8moe_workspace_layout L =
      fp8moe_workspace_layout_shared(T, c->num_experts, c->top_k, c->hidden, c->intermediate, S);
  size_t rows = (size_t)T * (size_t)(c->top_k + S);
  cr_assert_eq(L.rows, rows);
  cr_assert_geq(L.scale_ld, rows);
  cr_assert_lt(L.scale_ld, rows + 4);
  cr_assert_eq(L.scale_ld % 4, 0);
  cr_assert_eq(L.total % FP8MOE_WORKSPACE_ALIGN, 0);
  region r[16];
  int n = regions_of(&L, T, S, c, r);
  for (int i = 0; i < n; i++) {
    /* the tile counters follow the offsets inside their block */
    const size_t align = strcmp(r[i].name, "tile_counter") ? FP8MOE_WORKSPACE_ALIGN : 16;
    cr_assert_eq(r[i].off % align, 0, "T %d: %s at %zu is not aligned", T, r[i].name, r[i].off);
    cr_assert_leq(r[i].off + r[i].size, L.total, "T %d: %s ends past the total", T, r[i].name);
    cr_assert_geq(r[i].off + r[i].size, r[i].off); /* no wrap-around */
    for (int j = 0; j < i; j++) {
      int y_pair = !strcmp(r[i].name, "y") && (!strcmp(r[j].name, "x_perm") || !strcmp(r[j].name, "x_perm_scale"));
      if (y_pair || r[i].size == 0 || r[j].size == 0) continue;
      int overlap = r[i].off < r[j].off + r[j].size && r[j].off < r[i].off + r[i].size;
      cr_assert(!overlap, "T %d: %s [%zu, +%zu) overlaps %s [%zu, +%zu)", T, r[i].name, r[i].off, r[i].size,
                r[j].name, r[j].off, r[j].size);
    }
  }
  /* y reuses x_perm's bytes by design: it starts there and its whole span
   * stays clear of every buffer other than x_perm and x_perm_scale. */
  cr_assert_eq(L.y, L.x_perm);
}

static void check_layout(const fp8moe_config *c, int T) {
  fp8moe_workspace_layout a = fp8moe_workspace_layout_for(T, c->num_experts, c->top_k, c->hidden, c->intermediate);
  fp8moe_workspace_layout b = fp8moe_workspace_layout_shared(T, c->num_experts, c->top_k, c->hidden, c->intermediate, 0);
  cr_assert(memcmp(&a, &b, sizeof a) == 0, "layout_for is not layout_shared(S = 0)");
  check_layout_shared(c, T, 0);
}

static const fp8moe_config layout_configs[] = {{256, 8, 7168, 2048}, {384, 8, 7168, 2048}, {128, 8, 4096, 1536},
                                               {128, 8, 2048, 768},  {8, 2, 4096, 14336},  {1, 1, 128, 128},
                                               {512, 16, 128, 256},  {3, 3, 384, 640}};

Test(workspace, layout_aligned_and_disjoint) {
  static const int Ts[] = {0, 1, 2, 3, 4, 5, 7, 16, 31, 127, 128, 129, 1000, 1024, 4095, 4096, 16384, 65537};
  for (size_t ci = 0; ci < sizeof layout_configs / sizeof layout_configs[0]; ci++)
    for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) check_layout(&layout_configs[ci], Ts[ti]);
}

/* The small-T layer's token limit at the default tunables: 64 tokens for
 * experts under 32M weights, 16 for larger ones, at most 512 / K (the
 * plan's 8 x 64 slots); no overflow for any int K, H, I. */
Test(workspace, small_token_limit) {
  const int H30 = 2048, I30 = 768, H3 = 7168, I3 = 2048; /* Qwen3-30B: 4.7M weights; DeepSeek-V3: 44M */
  cr_assert_eq(fp8moe_small_token_limit(1, H30, I30), 64);
  cr_assert_eq(fp8moe_small_token_limit(8, H30, I30), 64);
  cr_assert_eq(fp8moe_small_token_limit(9, H30, I30), 56);
  cr_assert_eq(fp8moe_small_token_limit(16, H30, I30), 32);
  cr_assert_eq(fp8moe_small_token_limit(1, H3, I3), 16);
  cr_assert_eq(fp8moe_small_token_limit(8, H3, I3), 16);
  cr_assert_eq(fp8moe_small_token_limit(16, H3, I3), 16);
  /* 3 I H just at or above 32M: large; just below: small */
  cr_assert_eq(fp8moe_small_token_limit(8, 4096, 1024 * 8 / 3 + 1), 16);
  cr_assert_eq(fp8moe_small_token_limit(8, 4096, 1024 * 8 / 3), 64);
  cr_assert_eq(fp8moe_small_token_limit(129, H30, I30), 3);
  cr_assert_eq(fp8moe_small_token_limit(268435455, H30, I30), 0);
  cr_assert_eq(fp8moe_small_token_limit(8, 2147483647, 2147483647), 16);
  cr_assert_eq(fp8moe_small_token_limit(8, -2147483647 - 1, 2147483647), 64);
}

Test(workspace, total_grows_with_T) {
  for (size_t ci = 0; ci < sizeof layout_configs / sizeof layout_configs[0]; ci++) {
    const fp8moe_config *c = &layout_configs[ci];
    size_t prev = ws_total(c, 0);
    cr_assert_gt(prev, 0); /* the per-expert counters */
    for (int T = 1; T <= 3000; T++) {
      size_t t = ws_total(c, T);
      cr_assert_geq(t, prev, "config %zu: total(%d) = %zu < total(%d) = %zu", ci, T, t, T - 1, prev);
      prev = t;
    }
    int T = 3000;
    while (T < INT_MAX / 16) {
      int next = T * 2 + 1;
      cr_assert_geq(ws_total(c, next), ws_total(c, T));
      T = next;
    }
  }
  /* negative T is treated as 0 */
  cr_assert_eq(ws_total(&dsv3, -5), ws_total(&dsv3, 0));
}

/* Bytes the buffers need, summed in 128 bits (x_perm and y share a region). */
__extension__ typedef unsigned __int128 u128;

static u128 need_u128_shared(const fp8moe_config *c, long long T, int S) {
  u128 slots = (u128)T * (u128)c->top_k, rows = (u128)T * (u128)(c->top_k + S), H = (u128)c->hidden,
       I = (u128)c->intermediate, E = (u128)c->num_experts;
  u128 ld = (rows + 3) / 4 * 4;
  u128 x = rows * H + (H / 128) * ld * 4, y = rows * H * 2;
  /* the small-T layer's partial sums: (K + S) * max(8, min(T, its token limit)) rows of
   * max(2I, H) floats */
  const long long lim = fp8moe_small_token_limit(c->top_k, c->hidden, c->intermediate), tt = T < lim ? T : lim;
  u128 part = T > 0 && lim > 0
                  ? (u128)(c->top_k + S) * (u128)(tt > 8 ? tt : 8) * (2 * I > H ? 2 * I : H) * 4
                  : 0;
  return 3 * slots * 4 + E * 4 + (E + 1 + (u128)S + 4) * 4 + (x > y ? x : y) + rows * I + (I / 128) * ld * 4 + part;
}

static u128 need_u128(const fp8moe_config *c, long long T) { return need_u128_shared(c, T, 0); }

Test(workspace, large_T_no_overflow) {
  /* DeepSeek-V3 at a million tokens, by hand:
   *   rows = 8e6; 3 slot arrays 3 * 32,000,000 = 96,000,000
   *   expert_count 1024 -> 1024, expert_offset + tile_counter 1044 -> 1280 (256-aligned)
   *   x_perm 57,344,000,000 + x_perm_scale 56 * 8e6 * 4 = 1,792,000,000
   *   y 114,688,000,000 (larger: the shared region)
   *   act 16,384,000,000, act_scale 16 * 8e6 * 4 = 512,000,000
   *   small_part 8 * 16 rows * 7168 * 4 = 3,670,016
   *   total 131,683,672,320 bytes */
  cr_assert_eq(ws_total(&dsv3, 1000000), (size_t)131683672320ull);

  /* INT_MAX: T*K overflows an int; name_workspace_size(max_tokens) takes any int */
  static const int Ts[] = {1000000, 1 << 24, INT_MAX / 8, INT_MAX / 8 + 1, INT_MAX};
  for (size_t i = 0; i < sizeof Ts / sizeof Ts[0]; i++) {
    u128 need = need_u128(&dsv3, Ts[i]);
    u128 total = ws_total(&dsv3, Ts[i]);
    cr_assert(total >= need, "T %d: total under-counts", Ts[i]);
    cr_assert(total <= need + 11 * FP8MOE_WORKSPACE_ALIGN, "T %d: total over-counts", Ts[i]);
    check_layout(&dsv3, Ts[i]);
  }
  /* K = 1 and T = INT_MAX with the widest shape */
  fp8moe_config wide = {512, 1, 7168 * 4, 2048 * 8};
  u128 need = need_u128(&wide, INT_MAX);
  u128 total = ws_total(&wide, INT_MAX);
  cr_assert(need < ((u128)1 << 63));
  cr_assert(total >= need && total <= need + 11 * FP8MOE_WORKSPACE_ALIGN);
  check_layout(&wide, INT_MAX);
}

/* ---- the 0.3 fields (SPEC section 5.1) ------------------------------------------- */

Test(validate, fields_0_3_baselines_are_ok) {
  fp8moe_args a = good_0_3(), r = good_0_3_routed();
  EXPECT(run_nr(&dsv3, &a), FP8MOE_OK);
  EXPECT(run_r(&dsv3, &r), FP8MOE_OK);
  /* every S in range, with the workspace it needs */
  for (int S = 0; S <= FP8MOE_MAX_SHARED_EXPERTS; S++) {
    a.num_shared_experts = r.num_shared_experts = S;
    cr_assert_eq(run_nr(&dsv3, &a), FP8MOE_OK, "S %d", S);
    cr_assert_eq(run_r(&dsv3, &r), FP8MOE_OK, "routed, S %d", S);
  }
  /* the optional ones are optional: NULL SwiGLU arrays (defaults), NULL replay outputs */
  a = good_0_3();
  a.swiglu_alpha = a.swiglu_beta = a.swiglu_limit = NULL;
  a.topk_ids_out = NULL;
  a.topk_weights_out = NULL;
  EXPECT(run_nr(&dsv3, &a), FP8MOE_OK);
  a = good_0_3();
  a.swiglu_beta = NULL; /* each on its own */
  a.topk_weights_out = NULL;
  EXPECT(run_nr(&dsv3, &a), FP8MOE_OK);
  /* S = 0: the shared tensors are not looked at, not even their alignment */
  a = good_0_3();
  a.num_shared_experts = 0;
  a.shared_w1 = NULL;
  a.shared_w2 = at(16, 1);
  a.shared_w1_scale = (const float *)at(15, 3);
  a.shared_w2_scale = NULL;
  EXPECT(run_nr(&dsv3, &a), FP8MOE_OK);
  EXPECT(fp8moe_validate_args(&dsv3, &a, 0, workspace(), ws_total(&dsv3, a.num_tokens)), FP8MOE_OK);
  /* batch_invariant takes any value */
  a = good_0_3();
  a.batch_invariant = -7;
  EXPECT(run_nr(&dsv3, &a), FP8MOE_OK);
}

Test(validate, num_shared_experts_range) {
  static const int bad[] = {-1, -2, INT_MIN, FP8MOE_MAX_SHARED_EXPERTS + 1, 100, INT_MAX};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    fp8moe_args a = good_0_3(), r = good_0_3_routed();
    a.num_shared_experts = r.num_shared_experts = bad[i];
    cr_assert_eq(run_nr(&dsv3, &a), FP8MOE_ERROR_INVALID_EXPERT_RANGE, "S %d", bad[i]);
    cr_assert_eq(run_r(&dsv3, &r), FP8MOE_ERROR_INVALID_EXPERT_RANGE, "routed, S %d", bad[i]);
    cr_assert_eq(fp8moe_validate_args(&dsv3, &a, 0, workspace(), SIZE_MAX), FP8MOE_ERROR_INVALID_EXPERT_RANGE);
    /* reported at T = 0 too, like the rest of the expert range */
    a.num_tokens = r.num_tokens = 0;
    cr_assert_eq(fp8moe_validate_args(&dsv3, &a, 0, NULL, 0), FP8MOE_ERROR_INVALID_EXPERT_RANGE, "T 0, S %d", bad[i]);
    cr_assert_eq(fp8moe_validate_args(&dsv3, &r, 1, NULL, 0), FP8MOE_ERROR_INVALID_EXPERT_RANGE);
  }
}

static void null_shared(fp8moe_args *a, int which) {
  switch (which) {
  case 0: a->shared_w1 = NULL; break;
  case 1: a->shared_w1_scale = NULL; break;
  case 2: a->shared_w2 = NULL; break;
  default: a->shared_w2_scale = NULL; break;
  }
}

Test(validate, shared_tensors_null) {
  for (int p = 0; p < 4; p++) {
    fp8moe_args a = good_0_3(), r = good_0_3_routed();
    null_shared(&a, p);
    null_shared(&r, p);
    cr_assert_eq(run_nr(&dsv3, &a), FP8MOE_ERROR_NULL_ARGUMENT, "shared pointer %d", p);
    cr_assert_eq(run_r(&dsv3, &r), FP8MOE_ERROR_NULL_ARGUMENT, "routed, shared pointer %d", p);
    a.num_shared_experts = 1; /* any S > 0 */
    cr_assert_eq(run_nr(&dsv3, &a), FP8MOE_ERROR_NULL_ARGUMENT, "S 1, shared pointer %d", p);
    /* T = 0 reads nothing */
    a.num_tokens = 0;
    cr_assert_eq(fp8moe_validate_args(&dsv3, &a, 0, NULL, 0), FP8MOE_OK, "T 0, shared pointer %d", p);
    a.num_tokens = T_DEFAULT;
    a.num_shared_experts = 0;
    cr_assert_eq(run_nr(&dsv3, &a), FP8MOE_OK, "S 0, shared pointer %d", p);
  }
}

Test(validate, misaligned_0_3_pointers) {
  const fp8moe_status MIS = FP8MOE_ERROR_MISALIGNED_POINTER, OK = FP8MOE_OK;
  fp8moe_args a;
  /* shared fp8 tensors: 16 bytes, like w1 / w2 */
  static const int skews16[] = {1, 2, 4, 8, 12};
  for (size_t i = 0; i < sizeof skews16 / sizeof skews16[0]; i++) {
    int s = skews16[i];
    a = good_0_3(); a.shared_w1 = at(14, s);       cr_assert_eq(run_nr(&dsv3, &a), MIS, "shared_w1 +%d", s);
    a = good_0_3(); a.shared_w2 = at(16, s);       cr_assert_eq(run_nr(&dsv3, &a), MIS, "shared_w2 +%d", s);
    a = good_0_3_routed(); a.shared_w1 = at(14, s); cr_assert_eq(run_r(&dsv3, &a), MIS, "routed shared_w1 +%d", s);
  }
  a = good_0_3(); a.shared_w1 = at(14, 16); EXPECT(run_nr(&dsv3, &a), OK);
  a = good_0_3(); a.shared_w2 = at(16, 48); EXPECT(run_nr(&dsv3, &a), OK);

  /* shared scales, SwiGLU arrays, replay outputs: 4 bytes */
  static const int skews4[] = {1, 2, 3};
  for (size_t i = 0; i < sizeof skews4 / sizeof skews4[0]; i++) {
    int s = skews4[i];
    a = good_0_3(); a.shared_w1_scale = (const float *)at(15, s); cr_assert_eq(run_nr(&dsv3, &a), MIS, "+%d", s);
    a = good_0_3(); a.shared_w2_scale = (const float *)at(17, s); cr_assert_eq(run_nr(&dsv3, &a), MIS, "+%d", s);
    a = good_0_3(); a.swiglu_alpha = (const float *)at(18, s);    cr_assert_eq(run_nr(&dsv3, &a), MIS, "+%d", s);
    a = good_0_3(); a.swiglu_beta = (const float *)at(19, s);     cr_assert_eq(run_nr(&dsv3, &a), MIS, "+%d", s);
    a = good_0_3(); a.swiglu_limit = (const float *)at(20, s);    cr_assert_eq(run_nr(&dsv3, &a), MIS, "+%d", s);
    a = good_0_3(); a.topk_ids_out = (int32_t *)at(21, s);        cr_assert_eq(run_nr(&dsv3, &a), MIS, "+%d", s);
    a = good_0_3(); a.topk_weights_out = (float *)at(22, s);      cr_assert_eq(run_nr(&dsv3, &a), MIS, "+%d", s);
    /* the routed call checks the SwiGLU arrays and the shared tensors, and ignores the replay outputs */
    a = good_0_3_routed(); a.swiglu_limit = (const float *)at(20, s);    cr_assert_eq(run_r(&dsv3, &a), MIS);
    a = good_0_3_routed(); a.shared_w2_scale = (const float *)at(17, s); cr_assert_eq(run_r(&dsv3, &a), MIS);
    a = good_0_3_routed(); a.topk_ids_out = (int32_t *)at(21, s);        cr_assert_eq(run_r(&dsv3, &a), OK);
    a = good_0_3_routed(); a.topk_weights_out = (float *)at(22, s);      cr_assert_eq(run_r(&dsv3, &a), OK);
  }
  a = good_0_3(); a.swiglu_alpha = (const float *)at(18, 4);     EXPECT(run_nr(&dsv3, &a), OK);
  a = good_0_3(); a.shared_w2_scale = (const float *)at(17, 12); EXPECT(run_nr(&dsv3, &a), OK);
  a = good_0_3(); a.topk_ids_out = (int32_t *)at(21, 8);         EXPECT(run_nr(&dsv3, &a), OK);
  a = good_0_3(); a.topk_weights_out = (float *)at(22, 4);       EXPECT(run_nr(&dsv3, &a), OK);
}

Test(validate, workspace_with_shared_experts) {
  static const int Ts[] = {1, 5, 16, 127, 4096};
  for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++)
    for (int S = 1; S <= FP8MOE_MAX_SHARED_EXPERTS; S++) {
      fp8moe_args a = good_0_3();
      a.num_tokens = Ts[ti];
      a.num_shared_experts = S;
      size_t need = ws_total_shared(&dsv3, Ts[ti], S);
      cr_assert_gt(need, ws_total(&dsv3, Ts[ti]), "T %d S %d: shared experts need more workspace", Ts[ti], S);
      cr_assert_eq(fp8moe_validate_args(&dsv3, &a, 0, workspace(), need), FP8MOE_OK, "T %d S %d", Ts[ti], S);
      cr_assert_eq(fp8moe_validate_args(&dsv3, &a, 0, workspace(), need - 1), FP8MOE_ERROR_WORKSPACE_TOO_SMALL,
                   "T %d S %d", Ts[ti], S);
      /* name_workspace_size (no shared experts) is not enough */
      cr_assert_eq(fp8moe_validate_args(&dsv3, &a, 0, workspace(), ws_total(&dsv3, Ts[ti])),
                   FP8MOE_ERROR_WORKSPACE_TOO_SMALL, "T %d S %d", Ts[ti], S);
      /* nor one sized for fewer shared experts; more is fine */
      cr_assert_eq(fp8moe_validate_args(&dsv3, &a, 0, workspace(), ws_total_shared(&dsv3, Ts[ti], S - 1)),
                   FP8MOE_ERROR_WORKSPACE_TOO_SMALL);
      cr_assert_eq(fp8moe_validate_args(&dsv3, &a, 0, workspace(), ws_total_shared(&dsv3, Ts[ti], S + 1)), FP8MOE_OK);
      cr_assert_eq(fp8moe_validate_args(&dsv3, &a, 0, NULL, need), FP8MOE_ERROR_NULL_WORKSPACE);
      fp8moe_args r = good_0_3_routed();
      r.num_tokens = Ts[ti];
      r.num_shared_experts = S;
      cr_assert_eq(fp8moe_validate_args(&dsv3, &r, 1, workspace(), need - 1), FP8MOE_ERROR_WORKSPACE_TOO_SMALL);
      cr_assert_eq(fp8moe_validate_args(&dsv3, &r, 1, workspace(), need), FP8MOE_OK);
    }
}

Test(validate, tokens_times_rows_with_shared_experts) {
  /* T*(K + S) GEMM rows must fit an int: K = 8 */
  fp8moe_args a = good_0_3();
  a.num_shared_experts = 1;
  a.num_tokens = INT_MAX / 9 + 1;
  EXPECT(fp8moe_validate_args(&dsv3, &a, 0, workspace(), SIZE_MAX), FP8MOE_ERROR_INVALID_NUM_TOKENS);
  a.num_tokens = INT_MAX / 9;
  EXPECT(fp8moe_validate_args(&dsv3, &a, 0, workspace(), SIZE_MAX), FP8MOE_OK);
  a.num_shared_experts = FP8MOE_MAX_SHARED_EXPERTS;
  a.num_tokens = INT_MAX / (8 + FP8MOE_MAX_SHARED_EXPERTS);
  EXPECT(fp8moe_validate_args(&dsv3, &a, 0, workspace(), SIZE_MAX), FP8MOE_OK);
  a.num_tokens++;
  EXPECT(fp8moe_validate_args(&dsv3, &a, 0, workspace(), SIZE_MAX), FP8MOE_ERROR_INVALID_NUM_TOKENS);
  /* an out-of-range S is the expert range's error, not the token count's */
  a.num_shared_experts = INT_MAX;
  a.num_tokens = 1000;
  EXPECT(fp8moe_validate_args(&dsv3, &a, 0, workspace(), SIZE_MAX), FP8MOE_ERROR_INVALID_EXPERT_RANGE);
  a.num_tokens = INT_MAX / 8; /* fits with S counted as 0 */
  EXPECT(fp8moe_validate_args(&dsv3, &a, 0, workspace(), SIZE_MAX), FP8MOE_ERROR_INVALID_EXPERT_RANGE);
}

Test(validate, order_of_the_0_3_checks) {
  /* the documented order (validate.h, docs/api.md): T, expert range (S with it), routing, T = 0, pointers,
   * alignment, workspace */
  fp8moe_args a = good_0_3();
  a.num_shared_experts = -1;
  a.num_tokens = -1;
  EXPECT(run_nr(&dsv3, &a), FP8MOE_ERROR_INVALID_NUM_TOKENS); /* T before S */
  a = good_0_3();
  a.num_shared_experts = 9;
  a.routing_method = 42;
  a.shared_w1 = NULL;
  EXPECT(run_nr(&dsv3, &a), FP8MOE_ERROR_INVALID_EXPERT_RANGE); /* S before the routing method and the pointers */
  a = good_0_3();
  a.routing_method = 42;
  a.shared_w1 = NULL;
  EXPECT(run_nr(&dsv3, &a), FP8MOE_ERROR_INVALID_ROUTING_METHOD); /* routing before pointers */
  a = good_0_3();
  a.shared_w2 = NULL;
  a.w1 = at(3, 1);
  EXPECT(run_nr(&dsv3, &a), FP8MOE_ERROR_NULL_ARGUMENT); /* pointers before alignment */
  a = good_0_3();
  a.shared_w2 = NULL;
  a.output = NULL;
  EXPECT(run_nr(&dsv3, &a), FP8MOE_ERROR_NULL_ARGUMENT);
  a = good_0_3();
  a.topk_ids_out = (int32_t *)at(21, 2);
  EXPECT(fp8moe_validate_args(&dsv3, &a, 0, NULL, 0), FP8MOE_ERROR_MISALIGNED_POINTER); /* alignment before workspace */
  a = good_0_3();
  a.swiglu_alpha = (const float *)at(18, 1);
  EXPECT(fp8moe_validate_args(&dsv3, &a, 0, workspace(), 0), FP8MOE_ERROR_MISALIGNED_POINTER);
  a = good_0_3();
  EXPECT(fp8moe_validate_args(&dsv3, &a, 0, workspace(), ws_total(&dsv3, a.num_tokens)),
         FP8MOE_ERROR_WORKSPACE_TOO_SMALL); /* last */
}

Test(workspace, shared_layout_aligned_and_disjoint) {
  static const int Ts[] = {0, 1, 2, 3, 5, 16, 127, 1000, 4096, 65537};
  for (size_t ci = 0; ci < sizeof layout_configs / sizeof layout_configs[0]; ci++)
    for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++)
      for (int S = 1; S <= FP8MOE_MAX_SHARED_EXPERTS; S++) check_layout_shared(&layout_configs[ci], Ts[ti], S);
  /* the bytes by hand for DeepSeek-V3, T = 1000, S = 1, against the 128-bit sum */
  u128 need = need_u128_shared(&dsv3, 1000, 1), total = ws_total_shared(&dsv3, 1000, 1);
  cr_assert(total >= need && total <= need + 11 * FP8MOE_WORKSPACE_ALIGN);
  /* negative S is treated as 0 */
  cr_assert_eq(ws_total_shared(&dsv3, 100, -3), ws_total(&dsv3, 100));
  /* more shared experts never need less */
  for (int S = 1; S <= FP8MOE_MAX_SHARED_EXPERTS; S++)
    cr_assert_gt(ws_total_shared(&dsv3, 64, S), ws_total_shared(&dsv3, 64, S - 1));
}
