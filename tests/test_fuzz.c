/* tests/test_fuzz.c - seeded randomized tests of the host-side checks, the
 * packed top-k format and the CPU reference routing.
 *
 * Each group runs FUZZ_N cases (default 20000, env FP8MOE_FUZZ_N overrides)
 * on fresh random inputs; the seed is printed, FP8MOE_SEED replays a run.
 * Validation is compared with an independent predicate written here from the
 * documentation (docs/api.md, the status table): FP8MOE_OK exactly when every
 * documented precondition holds, the 0.3 fields included (shared experts,
 * SwiGLU arrays, replay outputs). Routing is checked for properties that hold
 * for any input: ids unique and in range, weights finite, sums as each method
 * defines, selection order. Built with -fsanitize=address,undefined in CI,
 * so the test itself avoids UB (no float->int of NaN, no signed overflow).
 */
#include <criterion/criterion.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <fp8moe/reference.h>

#include "test_util.h"

/* ---- helpers ---------------------------------------------------------- */

static uint32_t rng_below(rng_t *r, uint32_t n) { return (uint32_t)(rng_next(r) % n); }
static int rng_chance(rng_t *r, uint32_t one_in) { return rng_below(r, one_in) == 0; }
static int fuzz_n(void) {
  const char *s = getenv("FP8MOE_FUZZ_N");
  long n = s ? strtol(s, NULL, 0) : 20000;
  return n < 10000 ? 10000 : (n > 10000000 ? 10000000 : (int)n);
}

/* An int: mostly in [lo, hi], sometimes an extreme. */
static int rand_int(rng_t *r, int lo, int hi) {
  static const int extremes[] = {INT_MIN, INT_MIN + 1, -65536, -129, -128, -2, -1, 0, 1, 2, 127, 128, 129,
                                 512, 513, 65536, INT_MAX / 16, INT_MAX / 8, INT_MAX - 1, INT_MAX};
  if (rng_chance(r, 8)) return extremes[rng_below(r, sizeof extremes / sizeof extremes[0])];
  return lo + (int)rng_below(r, (uint32_t)((long long)hi - lo + 1));
}

/* A fake pointer (never dereferenced): NULL, aligned to 256, or off by 1..255 bytes. */
static const void *rand_ptr(rng_t *r, uint32_t null_one_in, uint32_t misalign_one_in) {
  uintptr_t base = (uintptr_t)0x10000000u + (uintptr_t)rng_below(r, 1u << 20) * 256u;
  if (rng_chance(r, null_one_in)) return NULL;
  if (rng_chance(r, misalign_one_in)) base += 1 + rng_below(r, 255);
  return (const void *)base;
}

static int aligned_to(const void *p, uintptr_t a) { return (uintptr_t)p % a == 0; }
static int dtype_valid(long long d) { return d == 0 || d == 1; }
static uintptr_t dtype_bytes(long long d) { return d == 1 ? 2 : 4; }

/* ---- the independent predicates (from docs/api.md) -------------------- */

static int config_ok(const fp8moe_config *c) {
  if (!c) return 0;
  if (c->num_experts < 1 || c->num_experts > 512) return 0;
  if (c->hidden < 128 || c->hidden % 128 != 0) return 0;
  if (c->intermediate < 128 || c->intermediate % 128 != 0) return 0;
  if (c->top_k < 1 || c->top_k > 16 || c->top_k > c->num_experts) return 0;
  return 1;
}

static int routing_ok(int method, int E, int K, int n_group, int topk_group, float scale) {
  if (method < 0 || method > 5) return 0;
  if (n_group < 0 || topk_group < 0) return 0;
  if (method == 2) {
    if (isnan(scale) || isinf(scale)) return 0;
    if (n_group > 1) {
      if (E % n_group != 0) return 0;
      if (topk_group < 1 || topk_group > n_group) return 0;
      if ((long long)K > (long long)topk_group * (E / n_group)) return 0;
    }
  } else if (n_group > 1) {
    return 0;
  }
  if (method == 3 && K != 1) return 0;
  return 1;
}

static int args_ok(const fp8moe_config *c, const fp8moe_args *a, int routed, const void *ws, size_t ws_bytes) {
  long long T;
  int S_ok, S;
  if (!config_ok(c) || !a) return 0;
  T = a->num_tokens;
  S_ok = a->num_shared_experts >= 0 && a->num_shared_experts <= 8;
  S = S_ok ? a->num_shared_experts : 0;
  if (T < 0 || T * (c->top_k + S) > INT_MAX) return 0; /* GEMM rows T*(K + S) */
  if (a->local_expert_offset < 0 || a->local_num_experts < 1 ||
      (long long)a->local_expert_offset + a->local_num_experts > c->num_experts)
    return 0;
  if (!S_ok) return 0;
  if (!routed) {
    if (!routing_ok(a->routing_method, c->num_experts, c->top_k, a->n_group, a->topk_group, a->routed_scaling_factor))
      return 0;
    if (!dtype_valid(a->logits_dtype)) return 0;
    if (a->routing_bias && !dtype_valid(a->bias_dtype)) return 0;
  } else {
    int has_packed = a->topk_packed != NULL, has_unpacked = a->topk_ids != NULL || a->topk_weights != NULL;
    if (has_packed && has_unpacked) return 0;
    if (T > 0 && !has_packed && !has_unpacked) return 0;
    if (T > 0 && has_unpacked && (!a->topk_ids || !a->topk_weights)) return 0;
    if (has_unpacked && !dtype_valid(a->topk_weights_dtype)) return 0;
  }
  if (T == 0) return 1;
  if (!a->hidden_states || !a->hidden_states_scale || !a->w1 || !a->w1_scale || !a->w2 || !a->w2_scale || !a->output)
    return 0;
  if (!routed && !a->routing_logits) return 0;
  if (S > 0 && (!a->shared_w1 || !a->shared_w1_scale || !a->shared_w2 || !a->shared_w2_scale)) return 0;
  if (!aligned_to(a->hidden_states, 16) || !aligned_to(a->w1, 16) || !aligned_to(a->w2, 16) ||
      !aligned_to(a->output, 16))
    return 0;
  if (!aligned_to(a->hidden_states_scale, 4) || !aligned_to(a->w1_scale, 4) || !aligned_to(a->w2_scale, 4) ||
      !aligned_to(a->invalid_id_count, 4))
    return 0;
  /* optional fp32 arrays: when given, 4 bytes */
  if (!aligned_to(a->swiglu_alpha, 4) || !aligned_to(a->swiglu_beta, 4) || !aligned_to(a->swiglu_limit, 4)) return 0;
  if (S > 0 && (!aligned_to(a->shared_w1, 16) || !aligned_to(a->shared_w2, 16) ||
                !aligned_to(a->shared_w1_scale, 4) || !aligned_to(a->shared_w2_scale, 4)))
    return 0;
  if (!routed) {
    if (!aligned_to(a->routing_logits, dtype_bytes(a->logits_dtype))) return 0;
    if (a->routing_bias && !aligned_to(a->routing_bias, dtype_bytes(a->bias_dtype))) return 0;
    if (!aligned_to(a->topk_ids_out, 4) || !aligned_to(a->topk_weights_out, 4)) return 0; /* name_run only */
  } else if (a->topk_packed) {
    if (!aligned_to(a->topk_packed, 4)) return 0;
  } else {
    if (!aligned_to(a->topk_ids, 4) || !aligned_to(a->topk_weights, dtype_bytes(a->topk_weights_dtype))) return 0;
  }
  if (!ws || !aligned_to(ws, 256)) return 0;
  /* the documented size: name_workspace_size_shared(T, S), i.e. the layout's total */
  if (ws_bytes <
      fp8moe_workspace_layout_shared(a->num_tokens, c->num_experts, c->top_k, c->hidden, c->intermediate, S).total)
    return 0;
  return 1;
}

/* ---- random arguments ------------------------------------------------- */

static fp8moe_config rand_config(rng_t *r) {
  fp8moe_config c;
  c.num_experts = rng_chance(r, 10) ? rand_int(r, -4, 600) : 1 + (int)rng_below(r, 512);
  c.top_k = rng_chance(r, 10) ? rand_int(r, -2, 20)
                              : 1 + (int)rng_below(r, (uint32_t)(c.num_experts >= 1 && c.num_experts < 16 ? c.num_experts : 16));
  c.hidden = rng_chance(r, 10) ? rand_int(r, -256, 20000) : 128 * (1 + (int)rng_below(r, 64));
  c.intermediate = rng_chance(r, 10) ? rand_int(r, -256, 20000) : 128 * (1 + (int)rng_below(r, 64));
  return c;
}

static float rand_scale(rng_t *r) {
  static const float specials[] = {0.0f, -0.0f, 1.0f, 2.5f, 2.827f, -1.0f, 1e-30f, 3.0e38f};
  switch (rng_below(r, 10)) {
  case 0: return NAN;
  case 1: return rng_chance(r, 2) ? INFINITY : -INFINITY;
  case 2: return float_of((uint32_t)rng_next(r));
  case 3: case 4: return 10.0f * rng_uniform(r);
  default: return specials[rng_below(r, sizeof specials / sizeof specials[0])];
  }
}

static fp8moe_dtype rand_dtype(rng_t *r) {
  static const int bad[] = {2, 3, -1, 100, INT_MAX};
  if (rng_chance(r, 12)) return (fp8moe_dtype)bad[rng_below(r, 5)];
  return (fp8moe_dtype)rng_below(r, 2);
}

/* n_group / topk_group: usually a valid DeepSeekV3 choice for E, sometimes anything. */
static void rand_groups(rng_t *r, int E, int K, int *ng, int *tg) {
  if (rng_chance(r, 6)) {
    *ng = rand_int(r, -2, 40);
    *tg = rand_int(r, -2, 40);
    return;
  }
  if (rng_chance(r, 3) || E < 2) {
    *ng = (int)rng_below(r, 2);
    *tg = (int)rng_below(r, 3);
    return;
  }
  {
    int d = 2 + (int)rng_below(r, (uint32_t)(E > 64 ? 63 : E - 1)), gs, need;
    if (K < 1) K = 1;
    if (K > E) K = E;
    while (E % d) d--; /* ends at a divisor >= 1 */
    *ng = d;
    gs = E / d;
    need = (int)(((long long)K + gs - 1) / gs); /* 1 <= need <= d */
    *tg = need + (int)rng_below(r, (uint32_t)(d - need + 1 > 0 ? d - need + 1 : 1));
    if (*tg < 1) *tg = 1;
  }
}

static fp8moe_args rand_args(rng_t *r, const fp8moe_config *c, int routed, int *pt_routed_mode) {
  fp8moe_args a;
  /* E for drawing the other fields, kept small so E + 2 cannot overflow */
  int E = c->num_experts < 1 ? 1 : (c->num_experts > 1024 ? 1024 : c->num_experts), mode;
  memset(&a, 0, sizeof a);
  switch (rng_below(r, 4)) {
  case 0: a.num_tokens = 0; break;
  case 1: a.num_tokens = rand_int(r, -3, 100000); break;
  default: a.num_tokens = 1 + (int)rng_below(r, 5000); break;
  }
  if (rng_chance(r, 6)) {
    a.local_expert_offset = rand_int(r, -2, E + 2);
    a.local_num_experts = rand_int(r, -2, E + 2);
  } else {
    a.local_num_experts = 1 + (int)rng_below(r, (uint32_t)E);
    a.local_expert_offset = (int)rng_below(r, (uint32_t)(E - a.local_num_experts + 1));
  }
  a.hidden_states = rand_ptr(r, 40, 30);
  a.hidden_states_scale = (const float *)rand_ptr(r, 40, 30);
  a.w1 = rand_ptr(r, 40, 30);
  a.w1_scale = (const float *)rand_ptr(r, 40, 30);
  a.w2 = rand_ptr(r, 40, 30);
  a.w2_scale = (const float *)rand_ptr(r, 40, 30);
  a.output = (void *)(uintptr_t)rand_ptr(r, 40, 30);
  a.invalid_id_count = (int *)(uintptr_t)rand_ptr(r, 2, 30);
  a.enable_pdl = (int)rng_below(r, 3);
  a.routing_method = rng_chance(r, 10) ? rand_int(r, -2, 8) : (int)rng_below(r, 6);
  a.logits_dtype = rand_dtype(r);
  a.bias_dtype = rand_dtype(r);
  a.topk_weights_dtype = rand_dtype(r);
  a.routed_scaling_factor = rand_scale(r);
  rand_groups(r, E, c->top_k, &a.n_group, &a.topk_group);
  /* 0.3: shared experts (mostly none or a valid count), SwiGLU arrays and replay outputs (often NULL) */
  switch (rng_below(r, 10)) {
  case 0: a.num_shared_experts = rand_int(r, -3, 12); break;
  case 1: case 2: case 3: case 4: a.num_shared_experts = 1 + (int)rng_below(r, 8); break;
  default: a.num_shared_experts = 0; break;
  }
  a.shared_w1 = rand_ptr(r, 40, 30);
  a.shared_w1_scale = (const float *)rand_ptr(r, 40, 30);
  a.shared_w2 = rand_ptr(r, 40, 30);
  a.shared_w2_scale = (const float *)rand_ptr(r, 40, 30);
  a.swiglu_alpha = (const float *)rand_ptr(r, 2, 40);
  a.swiglu_beta = (const float *)rand_ptr(r, 2, 40);
  a.swiglu_limit = (const float *)rand_ptr(r, 2, 40);
  a.topk_ids_out = (int32_t *)(uintptr_t)rand_ptr(r, 2, 40);
  a.topk_weights_out = (float *)(uintptr_t)rand_ptr(r, 2, 40);
  a.batch_invariant = (int)rng_below(r, 3) - 1;
  if (!routed) {
    a.routing_logits = rand_ptr(r, 30, 20);
    a.routing_bias = rand_ptr(r, 2, 20);
    if (rng_chance(r, 10)) a.topk_packed = (const int32_t *)rand_ptr(r, 2, 20); /* ignored when non-routed */
  } else {
    mode = (int)rng_below(r, 8); /* 0-3 packed, 4-6 unpacked, 7 a random mix */
    if (mode < 4) {
      a.topk_packed = (const int32_t *)rand_ptr(r, 1000, 20);
    } else if (mode < 7) {
      a.topk_ids = (const int32_t *)rand_ptr(r, 40, 20);
      a.topk_weights = rand_ptr(r, 40, 20);
    } else {
      a.topk_packed = (const int32_t *)rand_ptr(r, 2, 20);
      a.topk_ids = (const int32_t *)rand_ptr(r, 2, 20);
      a.topk_weights = rand_ptr(r, 2, 20);
    }
    if (rng_chance(r, 10)) a.routing_logits = rand_ptr(r, 2, 2); /* ignored when routed */
    *pt_routed_mode = mode;
  }
  return a;
}

/* ---- validation fuzz -------------------------------------------------- */

Test(fuzz_validate, config) {
  rng_t r = {test_seed("fuzz_validate.config")};
  int i, n = fuzz_n(), ok = 0;
  for (i = 0; i < n; i++) {
    fp8moe_config c = rand_config(&r);
    fp8moe_status s = fp8moe_validate_config(&c);
    cr_assert(s >= 0 && s < FP8MOE__STATUS_COUNT, "status %d out of range", (int)s);
    cr_assert_eq(s == FP8MOE_OK, config_ok(&c), "case %d: E %d K %d H %d I %d: status %d", i, c.num_experts, c.top_k,
                 c.hidden, c.intermediate, (int)s);
    ok += s == FP8MOE_OK;
  }
  cr_assert_eq(fp8moe_validate_config(NULL), FP8MOE_ERROR_NULL_ARGUMENT);
  cr_assert(ok > n / 10 && ok < n - n / 20, "not a useful mix: %d of %d valid", ok, n);
}

Test(fuzz_validate, routing) {
  rng_t r = {test_seed("fuzz_validate.routing")};
  int i, n = fuzz_n(), ok = 0;
  for (i = 0; i < n; i++) {
    int E = rng_chance(&r, 10) ? rand_int(&r, 1, 600) : 1 + (int)rng_below(&r, 512);
    int K = rng_chance(&r, 10) ? rand_int(&r, -2, 20)
                               : 1 + (int)rng_below(&r, (uint32_t)(E < 1 ? 1 : (E < 16 ? E : 16)));
    int m = rng_chance(&r, 10) ? rand_int(&r, -2, 8) : (int)rng_below(&r, 6), ng, tg;
    float scale = rand_scale(&r);
    fp8moe_status s;
    if (m == FP8MOE_ROUTING_LLAMA4 && !rng_chance(&r, 4)) K = 1;
    rand_groups(&r, E, K, &ng, &tg);
    s = fp8moe_validate_routing(m, E, K, ng, tg, scale);
    cr_assert(s >= 0 && s < FP8MOE__STATUS_COUNT, "status %d out of range", (int)s);
    cr_assert_eq(s == FP8MOE_OK, routing_ok(m, E, K, ng, tg, scale),
                 "case %d: method %d E %d K %d n_group %d topk_group %d scale %g: status %d", i, m, E, K, ng, tg,
                 scale, (int)s);
    if (s != FP8MOE_OK)
      cr_assert(s == FP8MOE_ERROR_INVALID_ROUTING_METHOD || s == FP8MOE_ERROR_INVALID_ROUTING_PARAMS, "status %d",
                (int)s);
    ok += s == FP8MOE_OK;
  }
  cr_assert(ok > n / 10 && ok < n - n / 20, "not a useful mix: %d of %d valid", ok, n);
}

Test(fuzz_validate, args) {
  /* both directions: accepted exactly when the predicate holds, on every draw (NULL config and
   * NULL args included); the mix of valid and invalid draws is checked so the test cannot pass
   * by rejecting everything */
  rng_t r = {test_seed("fuzz_validate.args")};
  int i, n = 5 * fuzz_n(), ok = 0, ok_routed = 0, ok_t0 = 0, ok_shared = 0;
  for (i = 0; i < n; i++) {
    fp8moe_config c = rand_config(&r);
    int routed = (int)rng_below(&r, 2), mode = -1;
    fp8moe_args a = rand_args(&r, &c, routed, &mode);
    const fp8moe_config *cp = rng_chance(&r, 500) ? NULL : &c;
    const fp8moe_args *ap = rng_chance(&r, 500) ? NULL : &a;
    const void *ws = rand_ptr(&r, 40, 20);
    int S = a.num_shared_experts >= 0 && a.num_shared_experts <= 8 ? a.num_shared_experts : 0;
    size_t need =
        fp8moe_workspace_layout_shared(a.num_tokens, c.num_experts, c.top_k, c.hidden, c.intermediate, S).total;
    size_t bytes;
    int want;
    fp8moe_status s;
    switch (rng_below(&r, 10)) {
    case 0: bytes = need > 0 ? need - 1 - (size_t)rng_below(&r, need < 4096 ? (uint32_t)need : 4096u) : 0; break;
    case 1: bytes = 0; break;
    case 2: bytes = SIZE_MAX; break;
    case 3: bytes = need; break;
    default: bytes = need + (size_t)rng_below(&r, 1u << 20); break;
    }
    want = args_ok(cp, ap, routed, ws, bytes);
    s = fp8moe_validate_args(cp, ap, routed, ws, bytes);
    cr_assert(s >= 0 && s < FP8MOE__STATUS_COUNT, "status %d out of range", (int)s);
    cr_assert(s != FP8MOE_ERROR_CUDA && s != FP8MOE_ERROR_UNSUPPORTED_DEVICE, "host validation gave %d", (int)s);
    cr_assert_eq(s == FP8MOE_OK, want,
                 "case %d: status %d (%s) but the predicate says %s (routed %d mode %d T %d E %d K %d H %d I %d "
                 "offset %d E_loc %d method %d n_group %d topk_group %d S %d)",
                 i, (int)s, fp8moe_status_string(s), want ? "valid" : "invalid", routed, mode, a.num_tokens,
                 c.num_experts, c.top_k, c.hidden, c.intermediate, a.local_expert_offset, a.local_num_experts,
                 a.routing_method, a.n_group, a.topk_group, a.num_shared_experts);
    if (want) {
      ok++;
      ok_routed += routed;
      ok_t0 += a.num_tokens == 0;
      ok_shared += a.num_shared_experts > 0 && a.num_tokens > 0;
    }
  }
  cr_assert(ok_shared > ok / 10, "too few valid cases with shared experts: %d of %d", ok_shared, ok);
  cr_assert(ok > n / 50 && ok < n - n / 10, "not a useful mix: %d of %d valid", ok, n);
  cr_assert(ok_routed > ok / 5 && ok_routed < ok - ok / 5, "valid cases lopsided: %d of %d routed", ok_routed, ok);
  cr_assert(ok_t0 < ok / 2, "valid cases are mostly T = 0 (%d of %d)", ok_t0, ok);
  fprintf(stderr, "fuzz_validate.args: %d of %d valid (%d routed, %d with T = 0, %d with shared experts)\n", ok, n,
          ok_routed, ok_t0, ok_shared);
}

/* ---- packed top-k ----------------------------------------------------- */

Test(fuzz_pack, bits_round_trip) {
  rng_t r = {test_seed("fuzz_pack.bits_round_trip")};
  int i, n = 10 * fuzz_n();
  for (i = 0; i < n; i++) {
    int id = (int)rng_below(&r, 65536);
    uint16_t wb = (uint16_t)rng_next(&r);
    int32_t p = fp8moe_topk_pack_bits(id, wb), id_out;
    float w_out;
    cr_assert_eq(fp8moe_topk_id(p), id, "id %d bits 0x%04x", id, wb);
    cr_assert_eq(fp8moe_topk_weight_bits(p), wb, "id %d bits 0x%04x", id, wb);
    cr_assert_eq((uint32_t)p, ((uint32_t)id << 16) | wb, "layout: id %d bits 0x%04x", id, wb);
    cr_assert_eq(bits_of(fp8moe_topk_weight(p)), (uint32_t)wb << 16);
    fp8moe_ref_decode_topk(1, 1, &p, NULL, NULL, FP8MOE_DTYPE_FP32, &id_out, &w_out);
    cr_assert_eq(id_out, id);
    cr_assert_eq(bits_of(w_out), (uint32_t)wb << 16);
  }
}

Test(fuzz_pack, float_weights_round_to_nearest_even) {
  rng_t r = {test_seed("fuzz_pack.float_weights_round_to_nearest_even")};
  int i, n = 10 * fuzz_n();
  for (i = 0; i < n; i++) {
    int id = (int)rng_below(&r, 65536);
    uint32_t fb = (uint32_t)rng_next(&r);
    float f = float_of(fb), w;
    int32_t p;
    if (rng_chance(&r, 4)) fb &= 0xffff0000u, f = float_of(fb); /* exactly representable */
    p = fp8moe_topk_pack(id, f);
    w = fp8moe_topk_weight(p);
    cr_assert_eq(fp8moe_topk_id(p), id, "weight bits 0x%08x leaked into the id", fb);
    if (isnan(f)) {
      cr_assert(isnan(w), "NaN weight 0x%08x", fb);
      continue;
    }
    {
      /* the bf16 neighbours below and above |f| (in magnitude); hi may be the overflow value 2^128 */
      uint32_t lo_b = fb & 0xffff0000u, mag = lo_b & 0x7fffffffu;
      double lo = (double)float_of(lo_b), hi, df = (double)f, dlo, dhi;
      if (mag == 0x7f800000u) {
        cr_assert(w == f, "inf 0x%08x", fb); /* infinities stay */
        continue;
      }
      hi = mag + 0x10000u >= 0x7f800000u ? ldexp(1.0, 128) : (double)fabsf(float_of(mag + 0x10000u));
      if (lo_b & 0x80000000u) hi = -hi;
      dlo = fabs(df - lo);
      dhi = fabs(hi - df);
      if (dlo < dhi || (dlo == dhi && ((lo_b >> 16) & 1u) == 0))
        cr_assert_eq(bits_of(w), lo_b, "0x%08x -> 0x%08x, want 0x%08x", fb, bits_of(w), lo_b);
      else if (fabs(hi) == ldexp(1.0, 128))
        cr_assert(isinf(w) && (w < 0) == (f < 0), "0x%08x should round to inf", fb);
      else
        cr_assert_eq(bits_of(w), lo_b + 0x10000u, "0x%08x -> 0x%08x, want 0x%08x", fb, bits_of(w), lo_b + 0x10000u);
    }
  }
}

/* ---- routing fuzz ----------------------------------------------------- */

static float sanitize(float v) { return isnan(v) ? -INFINITY : v; }

/* Random logits of one of several shapes: normal, with specials, ties, all equal, raw bit patterns, huge. */
static void rand_logits(rng_t *r, float *l, int E, int *all_finite) {
  static const float specials[] = {NAN, INFINITY, -INFINITY, 0.0f, -0.0f, FLT_MAX, -FLT_MAX, FLT_MIN};
  int kind = (int)rng_below(r, 7), e;
  float off = 10.0f * rng_normal(r), sd = 0.01f + 5.0f * rng_uniform(r),
        same = rng_chance(r, 3) ? specials[rng_below(r, 8)] : rng_normal(r);
  for (e = 0; e < E; e++) {
    switch (kind) {
    case 0: l[e] = off + sd * rng_normal(r); break;
    case 1: l[e] = rng_chance(r, 8) ? specials[rng_below(r, 8)] : off + sd * rng_normal(r); break;
    case 2: l[e] = (float)((int)rng_below(r, 4) - 2); break; /* many exact ties */
    case 3: l[e] = same; break;
    case 4: l[e] = float_of((uint32_t)rng_next(r)); break;
    case 5: l[e] = -1e30f * rng_uniform(r) - 1e20f; break; /* all very negative */
    default: l[e] = rng_chance(r, 2) ? NAN : off + sd * rng_normal(r); break;
    }
  }
  *all_finite = 1;
  for (e = 0; e < E; e++) *all_finite &= isfinite(l[e]) != 0;
}

/* key_i ranks before key_j: greater, or equal with the lower index */
static int ranks_before(float ki, int i, float kj, int j) { return ki > kj || (ki == kj && i < j); }

/* selection order on keys the test computes itself: slots in rank order, and every unselected expert
 * ranks after every selected one */
static void check_selection(const float *key, int E, int K, const int32_t *ids, const char *what) {
  unsigned char chosen[FP8MOE_MAX_EXPERTS];
  int k, j;
  memset(chosen, 0, sizeof chosen);
  for (k = 0; k < K; k++) chosen[ids[k]] = 1;
  for (k = 1; k < K; k++)
    cr_assert(ranks_before(key[ids[k - 1]], ids[k - 1], key[ids[k]], ids[k]), "%s: slots %d/%d out of order", what,
              k - 1, k);
  for (j = 0; j < E; j++)
    if (!chosen[j])
      cr_assert(ranks_before(key[ids[K - 1]], ids[K - 1], key[j], j), "%s: expert %d (key %g) should beat %d (key %g)",
                what, j, key[j], ids[K - 1], key[ids[K - 1]]);
}

static void fuzz_method(int method, const char *name) {
  rng_t r = {test_seed(name)};
  int it, n = fuzz_n();
  for (it = 0; it < n; it++) {
    int E = 1 + (int)rng_below(&r, rng_chance(&r, 4) ? 512u : 64u);
    int K = method == FP8MOE_ROUTING_LLAMA4 ? 1 : 1 + (int)rng_below(&r, (uint32_t)(E < 16 ? E : 16));
    int ng = 0, tg = 0, all_finite, bias_finite = 1, k, e;
    float l[FP8MOE_MAX_EXPERTS], bias[FP8MOE_MAX_EXPERTS], w[FP8MOE_MAX_TOP_K], scale = 0.0f, sum = 0.0f;
    const float *bp = NULL;
    int32_t ids[FP8MOE_MAX_TOP_K];
    unsigned char seen[FP8MOE_MAX_EXPERTS];
    rand_logits(&r, l, E, &all_finite);
    if (method == FP8MOE_ROUTING_DEEPSEEK_V3) {
      do rand_groups(&r, E, K, &ng, &tg);
      while (!routing_ok(method, E, K, ng, tg, 1.0f));
      scale = rng_chance(&r, 4) ? 0.0f : (rng_chance(&r, 10) ? -2.0f : 4.0f * rng_uniform(&r));
      if (!rng_chance(&r, 3)) {
        for (e = 0; e < E; e++) {
          bias[e] = rng_chance(&r, 50) ? (rng_chance(&r, 2) ? NAN : INFINITY) : 0.5f * rng_normal(&r);
          bias_finite &= isfinite(bias[e]) != 0;
        }
        bp = bias;
      }
    }
    memset(w, 0x7f, sizeof w);
    fp8moe_ref_route_token(method, E, K, l, bp, ng, tg, scale, ids, w);

    /* ids: in range and unique */
    memset(seen, 0, sizeof seen);
    for (k = 0; k < K; k++) {
      cr_assert(ids[k] >= 0 && ids[k] < E, "%s case %d: id %d outside [0, %d)", name, it, ids[k], E);
      cr_assert(!seen[ids[k]], "%s case %d: id %d twice", name, it, ids[k]);
      seen[ids[k]] = 1;
    }
    /* weights: never NaN; finite for finite inputs (TopK passes +-inf logits through) */
    for (k = 0; k < K; k++) {
      cr_assert(!isnan(w[k]), "%s case %d slot %d: NaN weight", name, it, k);
      if (method != FP8MOE_ROUTING_TOPK || (all_finite && bias_finite))
        cr_assert(isfinite(w[k]), "%s case %d slot %d: weight %g", name, it, k, w[k]);
      sum += w[k];
    }

    switch (method) {
    case FP8MOE_ROUTING_DEFAULT:
      for (k = 0; k < K; k++) cr_assert(w[k] >= 0.0f && w[k] <= 1.0f, "%s case %d: weight %g", name, it, w[k]);
      for (k = 1; k < K; k++) cr_assert(w[k] <= w[k - 1], "%s case %d: probabilities out of order", name, it);
      cr_assert(sum <= 1.0f + 1e-5f, "%s case %d: sum %.9g > 1", name, it, sum);
      break;
    case FP8MOE_ROUTING_RENORMALIZE:
    case FP8MOE_ROUTING_RENORMALIZE_NAIVE:
      cr_assert(fabsf(sum - 1.0f) <= 1e-5f, "%s case %d: sum %.9g", name, it, sum);
      for (k = 0; k < K; k++) cr_assert(w[k] >= 0.0f, "%s case %d: weight %g", name, it, w[k]);
      if (method == FP8MOE_ROUTING_RENORMALIZE) {
        float key[FP8MOE_MAX_EXPERTS];
        for (e = 0; e < E; e++) key[e] = sanitize(l[e]);
        check_selection(key, E, K, ids, name);
      }
      break;
    case FP8MOE_ROUTING_TOPK:
    case FP8MOE_ROUTING_LLAMA4: {
      float key[FP8MOE_MAX_EXPERTS];
      for (e = 0; e < E; e++) key[e] = sanitize(l[e]);
      check_selection(key, E, K, ids, name);
      for (k = 0; k < K; k++) {
        float want = method == FP8MOE_ROUTING_TOPK ? key[ids[k]] : (float)(1.0 / (1.0 + exp(-(double)key[ids[k]])));
        if (method == FP8MOE_ROUTING_TOPK)
          cr_assert(w[k] == want, "%s case %d: weight %g, logit %g", name, it, w[k], want);
        else
          cr_assert(fabsf(w[k] - want) <= 1e-6f, "%s case %d: weight %.9g, sigmoid %.9g", name, it, w[k], want);
      }
      break;
    }
    default: { /* DeepSeekV3 */
      double s_sum = 0, eff = scale == 0.0f ? 1.0 : scale;
      float key[FP8MOE_MAX_EXPERTS];
      for (k = 0; k < K; k++) s_sum += 1.0 / (1.0 + exp(-(double)sanitize(l[ids[k]])));
      if (s_sum > 1e-3)
        cr_assert(fabs(sum - eff) <= 1e-5 * fabs(eff) + 1e-7, "%s case %d: sum %.9g, scale %.9g", name, it, sum, eff);
      for (e = 0; e < E; e++) key[e] = sanitize(1.0f / (1.0f + expf(-sanitize(l[e]))) + (bp ? bp[e] : 0.0f));
      if (ng <= 1) {
        check_selection(key, E, K, ids, name);
      } else if (all_finite && bias_finite) {
        /* every b finite: no slot needs a filler, so the chosen experts span at most topk_group groups */
        unsigned char g_used[FP8MOE_MAX_EXPERTS];
        int groups = 0, gs = E / ng;
        memset(g_used, 0, sizeof g_used);
        for (k = 0; k < K; k++)
          if (!g_used[ids[k] / gs]) g_used[ids[k] / gs] = 1, groups++;
        cr_assert(groups <= tg, "%s case %d: %d groups used, topk_group %d", name, it, groups, tg);
      }
      break;
    }
    }
  }
}

Test(fuzz_routing, default_method) { fuzz_method(FP8MOE_ROUTING_DEFAULT, "fuzz_routing.default"); }
Test(fuzz_routing, renormalize) { fuzz_method(FP8MOE_ROUTING_RENORMALIZE, "fuzz_routing.renormalize"); }
Test(fuzz_routing, deepseek_v3) { fuzz_method(FP8MOE_ROUTING_DEEPSEEK_V3, "fuzz_routing.deepseek_v3"); }
Test(fuzz_routing, llama4) { fuzz_method(FP8MOE_ROUTING_LLAMA4, "fuzz_routing.llama4"); }
Test(fuzz_routing, renormalize_naive) { fuzz_method(FP8MOE_ROUTING_RENORMALIZE_NAIVE, "fuzz_routing.renormalize_naive"); }
Test(fuzz_routing, topk) { fuzz_method(FP8MOE_ROUTING_TOPK, "fuzz_routing.topk"); }
