/* tests/test_routing_ref.c - the CPU reference routing and top-k decode
 * (reference.h, SPEC sections 3 and 4).
 *
 * Hand-worked cases: every expected id and weight below was computed by hand
 * (the arithmetic is in the comment next to it), never by the code under
 * test. Random cases (seeded, seed printed; FP8MOE_SEED overrides) check
 * properties that hold for any input.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <fp8moe/reference.h>

#include "test_util.h"

/* ---- helpers ---------------------------------------------------------- */

#define NAN_F (nanf(""))
#define INF_F (INFINITY)

/* Route one token and compare with the hand-worked answer; weights within tol (absolute). */
static void expect_route(int method, int E, int K, const float *logits, const float *bias, int n_group,
                         int topk_group, float scale, const int32_t *want_ids, const float *want_w, float tol) {
  int32_t ids[FP8MOE_MAX_TOP_K];
  float w[FP8MOE_MAX_TOP_K];
  int k;
  memset(ids, 0x55, sizeof ids);
  fp8moe_ref_route_token(method, E, K, logits, bias, n_group, topk_group, scale, ids, w);
  for (k = 0; k < K; k++) {
    cr_assert_eq(ids[k], want_ids[k], "method %d slot %d: id %d, want %d", method, k, ids[k], want_ids[k]);
    if (isinf(want_w[k]))
      cr_assert(w[k] == want_w[k], "method %d slot %d: weight %g, want %g", method, k, w[k], want_w[k]);
    else
      cr_assert(fabsf(w[k] - want_w[k]) <= tol, "method %d slot %d: weight %.9g, want %.9g", method, k, w[k],
                want_w[k]);
  }
}

/* ---- Default ---------------------------------------------------------- */

Test(route_default, hand_case) {
  /* exp(l) = [1, 2, 4, 1], sum 8 -> p = [1/8, 2/8, 4/8, 1/8]; top-2 = experts 2, 1; no renormalization */
  const float l[4] = {0.0f, 0.69314718f, 1.38629436f, 0.0f};
  const int32_t ids[2] = {2, 1};
  const float w[2] = {0.5f, 0.25f};
  expect_route(FP8MOE_ROUTING_DEFAULT, 4, 2, l, NULL, 0, 0, 0.0f, ids, w, 1e-6f);
}

Test(route_default, all_negative_and_ties) {
  /* the same logits shifted by -30: softmax is shift-invariant, p = [1/8, 2/8, 4/8, 1/8].
   * K = 4: experts 0 and 3 tie at 1/8, the lower index (0) goes first. */
  const float l[4] = {-30.0f, -30.0f + 0.69314718f, -30.0f + 1.38629436f, -30.0f};
  const int32_t ids[4] = {2, 1, 0, 3};
  const float w[4] = {0.5f, 0.25f, 0.125f, 0.125f};
  expect_route(FP8MOE_ROUTING_DEFAULT, 4, 4, l, NULL, 0, 0, 0.0f, ids, w, 1e-6f);
}

/* ---- Renormalize ------------------------------------------------------ */

Test(route_renormalize, all_negative_logits) {
  /* top-2 of [-5, -3, -4, -10] = experts 1 (-3), 2 (-4);
   * softmax([-3, -4]) = [1/(1+e^-1), e^-1/(1+e^-1)] = [0.7310586, 0.2689414] */
  const float l[4] = {-5.0f, -3.0f, -4.0f, -10.0f};
  const int32_t ids[2] = {1, 2};
  const float w[2] = {0.7310586f, 0.2689414f};
  expect_route(FP8MOE_ROUTING_RENORMALIZE, 4, 2, l, NULL, 0, 0, 0.0f, ids, w, 1e-6f);
}

Test(route_renormalize, very_negative_logits) {
  /* [-1000, -1001]: a softmax without max subtraction gives 0/0; with it, [1/(1+e^-1), e^-1/(1+e^-1)] */
  const float l[3] = {-1001.0f, -1000.0f, -2000.0f};
  const int32_t ids[2] = {1, 0};
  const float w[2] = {0.7310586f, 0.2689414f};
  expect_route(FP8MOE_ROUTING_RENORMALIZE, 3, 2, l, NULL, 0, 0, 0.0f, ids, w, 1e-6f);
}

Test(route_renormalize, exact_ties_lower_index_wins) {
  /* experts 1, 2, 3 tie at 2: K=2 takes 1 and 2; softmax of [2, 2] = [1/2, 1/2].
   * K=3 takes 1, 2, 3 with 1/3 each. */
  const float l[5] = {1.0f, 2.0f, 2.0f, 2.0f, 0.0f};
  const int32_t ids2[2] = {1, 2}, ids3[3] = {1, 2, 3};
  const float w2[2] = {0.5f, 0.5f}, w3[3] = {1.0f / 3, 1.0f / 3, 1.0f / 3};
  expect_route(FP8MOE_ROUTING_RENORMALIZE, 5, 2, l, NULL, 0, 0, 0.0f, ids2, w2, 1e-7f);
  expect_route(FP8MOE_ROUTING_RENORMALIZE, 5, 3, l, NULL, 0, 0, 0.0f, ids3, w3, 1e-7f);
}

Test(route_renormalize, nan_logits_never_win) {
  /* NaN is -inf: top-2 of [NaN, 1, NaN, 0.5] = 1, 3; softmax([1, 0.5]) = [1/(1+e^-0.5), e^-0.5/(1+e^-0.5)]
   * = [0.6224593, 0.3775407]. K=3: one slot left, the lowest-indexed remaining expert (0, a NaN) fills it
   * with softmax weight exp(-inf) = 0. */
  const float l[4] = {NAN_F, 1.0f, NAN_F, 0.5f};
  const int32_t ids2[2] = {1, 3}, ids3[3] = {1, 3, 0};
  const float w2[2] = {0.6224593f, 0.3775407f}, w3[3] = {0.6224593f, 0.3775407f, 0.0f};
  expect_route(FP8MOE_ROUTING_RENORMALIZE, 4, 2, l, NULL, 0, 0, 0.0f, ids2, w2, 1e-6f);
  expect_route(FP8MOE_ROUTING_RENORMALIZE, 4, 3, l, NULL, 0, 0, 0.0f, ids3, w3, 1e-6f);
}

Test(route_renormalize, fewer_finite_than_k) {
  /* all NaN: every key is -inf, so experts 0, 1, 2 fill by index; the softmax of three -inf takes its
   * limit (entries equal to the max share the mass): 1/3 each */
  const float all_nan[5] = {NAN_F, NAN_F, NAN_F, NAN_F, NAN_F};
  /* +inf twice, one finite, one -inf: ids 0, 2 (the +infs, by index), then 1; the +infs split the mass */
  const float infs[4] = {INF_F, 1.0f, INF_F, -INF_F};
  const int32_t ids_a[3] = {0, 1, 2}, ids_b[3] = {0, 2, 1};
  const float w_a[3] = {1.0f / 3, 1.0f / 3, 1.0f / 3}, w_b[3] = {0.5f, 0.5f, 0.0f};
  expect_route(FP8MOE_ROUTING_RENORMALIZE, 5, 3, all_nan, NULL, 0, 0, 0.0f, ids_a, w_a, 1e-7f);
  expect_route(FP8MOE_ROUTING_RENORMALIZE, 4, 3, infs, NULL, 0, 0, 0.0f, ids_b, w_b, 0.0f);
}

/* ---- RenormalizeNaive ------------------------------------------------- */

Test(route_renormalize_naive, hand_case) {
  /* p = [1/8, 2/8, 4/8, 1/8] (as in route_default.hand_case); top-2 = 2, 1; renormalized:
   * 0.5/0.75 = 2/3, 0.25/0.75 = 1/3 */
  const float l[4] = {0.0f, 0.69314718f, 1.38629436f, 0.0f};
  const int32_t ids[2] = {2, 1};
  const float w[2] = {2.0f / 3, 1.0f / 3};
  expect_route(FP8MOE_ROUTING_RENORMALIZE_NAIVE, 4, 2, l, NULL, 0, 0, 0.0f, ids, w, 1e-6f);
}

Test(route_renormalize_naive, equals_renormalize) {
  rng_t r = {test_seed("route_renormalize_naive.equals_renormalize")};
  int it;
  for (it = 0; it < 2000; it++) {
    int E = 1 + (int)(rng_next(&r) % 256), K = 1 + (int)(rng_next(&r) % (uint64_t)(E < 16 ? E : 16)), e, k;
    float l[256], sd = 0.1f + 4.0f * rng_uniform(&r), off = 20.0f * rng_normal(&r);
    int32_t ia[16], ib[16];
    float wa[16], wb[16];
    for (e = 0; e < E; e++) l[e] = off + sd * rng_normal(&r);
    fp8moe_ref_route_token(FP8MOE_ROUTING_RENORMALIZE, E, K, l, NULL, 0, 0, 0.0f, ia, wa);
    fp8moe_ref_route_token(FP8MOE_ROUTING_RENORMALIZE_NAIVE, E, K, l, NULL, 0, 0, 0.0f, ib, wb);
    for (k = 0; k < K; k++) {
      /* ids can only differ where two probabilities round to the same fp32 value and the tie goes by index;
       * then both weights are equal too. Compare the weights of the experts, slot by slot. */
      cr_assert(fabsf(wa[k] - wb[k]) <= 1e-6f, "E %d K %d slot %d: %.9g vs %.9g", E, K, k, wa[k], wb[k]);
      if (ia[k] != ib[k])
        cr_assert(l[ia[k]] == l[ib[k]] || fabsf(wa[k]) < 1e-30f, "E %d K %d slot %d: ids %d vs %d", E, K, k, ia[k],
                  ib[k]);
    }
  }
}

/* ---- TopK, Llama4 ----------------------------------------------------- */

Test(route_topk, raw_logits_as_weights) {
  /* top-3 of [-1, 3, 0.5, 3]: 1 and 3 tie at 3 (1 first), then 2 (0.5); weights are the logits */
  const float l[4] = {-1.0f, 3.0f, 0.5f, 3.0f};
  const int32_t ids[3] = {1, 3, 2};
  const float w[3] = {3.0f, 3.0f, 0.5f};
  expect_route(FP8MOE_ROUTING_TOPK, 4, 3, l, NULL, 0, 0, 0.0f, ids, w, 0.0f);
}

Test(route_topk, nan_filler_weight_is_minus_inf) {
  /* [NaN, -2, NaN]: -2 first, then the lowest remaining (0, NaN -> -inf), whose weight is -inf */
  const float l[3] = {NAN_F, -2.0f, NAN_F};
  const int32_t ids[2] = {1, 0};
  const float w[2] = {-2.0f, -INF_F};
  expect_route(FP8MOE_ROUTING_TOPK, 3, 2, l, NULL, 0, 0, 0.0f, ids, w, 0.0f);
}

Test(route_llama4, argmax_sigmoid) {
  /* argmax of [0.5, 2, NaN, -1] = 1; sigmoid(2) = 1/(1+e^-2) = 0.8807971 */
  const float l[4] = {0.5f, 2.0f, NAN_F, -1.0f};
  const int32_t ids[1] = {1};
  const float w[1] = {0.8807971f};
  expect_route(FP8MOE_ROUTING_LLAMA4, 4, 1, l, NULL, 0, 0, 0.0f, ids, w, 1e-6f);
  {
    /* all -inf: expert 0, sigmoid(-inf) = 0 */
    const float m[3] = {-INF_F, -INF_F, NAN_F};
    const int32_t i0[1] = {0};
    const float w0[1] = {0.0f};
    expect_route(FP8MOE_ROUTING_LLAMA4, 3, 1, m, NULL, 0, 0, 0.0f, i0, w0, 0.0f);
  }
}

/* ---- DeepSeekV3 ------------------------------------------------------- */

Test(route_deepseek, group_masking_with_negative_scores) {
  /* E=8, n_group=4 (groups {0,1} {2,3} {4,5} {6,7}), topk_group=2, scale 2.5.
   * s = sigmoid(l) = [.5, .5, .75, .25, .5, .5, .5, .5]   (sigmoid(ln 3) = 3/4, sigmoid(-ln 3) = 1/4)
   * b = s + bias = [-0.5, -0.7, -0.1, -0.2, -1.5, 0.4, -0.4, -0.3]
   * group scores (sum of both) = [-1.2, -0.3, -1.1, -0.7] -> keep groups 1 and 3.
   * Expert 5 has the best b (0.4) but sits in a dropped group: masking to 0 instead of -inf would
   * wrongly rank it (and every other masked expert) above the kept, all-negative ones.
   * K=2: experts 2 (-0.1), 3 (-0.2); weights 2.5 * [.75, .25] / 1.0 = [1.875, 0.625].
   * K=3: + expert 7 (-0.3); sum s = 1.5; weights 2.5 * [.75, .25, .5] / 1.5 = [1.25, 0.4166667, 0.8333333]. */
  const float l[8] = {0.0f, 0.0f, 1.0986123f, -1.0986123f, 0.0f, 0.0f, 0.0f, 0.0f};
  const float bias[8] = {-1.0f, -1.2f, -0.85f, -0.45f, -2.0f, -0.1f, -0.9f, -0.8f};
  const int32_t ids2[2] = {2, 3}, ids3[3] = {2, 3, 7};
  const float w2[2] = {1.875f, 0.625f}, w3[3] = {1.25f, 0.4166667f, 0.8333333f};
  expect_route(FP8MOE_ROUTING_DEEPSEEK_V3, 8, 2, l, bias, 4, 2, 2.5f, ids2, w2, 2e-6f);
  expect_route(FP8MOE_ROUTING_DEEPSEEK_V3, 8, 3, l, bias, 4, 2, 2.5f, ids3, w3, 2e-6f);
}

Test(route_deepseek, no_groups_uses_biased_scores_unbiased_weights) {
  /* same s and b as above, n_group = 1: top-2 of b = experts 5 (0.4), 2 (-0.1);
   * weights from the unbiased s: 2.5 * [.5, .75] / 1.25 = [1.0, 1.5] */
  const float l[8] = {0.0f, 0.0f, 1.0986123f, -1.0986123f, 0.0f, 0.0f, 0.0f, 0.0f};
  const float bias[8] = {-1.0f, -1.2f, -0.85f, -0.45f, -2.0f, -0.1f, -0.9f, -0.8f};
  const int32_t ids[2] = {5, 2};
  const float w[2] = {1.0f, 1.5f};
  expect_route(FP8MOE_ROUTING_DEEPSEEK_V3, 8, 2, l, bias, 1, 1, 2.5f, ids, w, 2e-6f);
  expect_route(FP8MOE_ROUTING_DEEPSEEK_V3, 8, 2, l, bias, 0, 0, 2.5f, ids, w, 2e-6f);
}

Test(route_deepseek, group_score_is_top2_sum) {
  /* E=8, 2 groups of 4, keep 1, K=2, scale 0 (means 1.0). l = 0 so s = 0.5 everywhere.
   * b = 0.5 + bias = [0.9, 0.1, 0.1, 0.1 | 0.6, 0.6, 0.0, 0.0]
   * top-2 sums: group 0: 0.9+0.1 = 1.0, group 1: 0.6+0.6 = 1.2 -> keep group 1.
   * (top-1 would keep group 0; the sum of all four ties 1.2 vs 1.2 and would keep group 0.)
   * experts 4, 5; weights 0.5 * 1 / (0.5 + 0.5) = 0.5 each. */
  const float l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const float bias[8] = {0.4f, -0.4f, -0.4f, -0.4f, 0.1f, 0.1f, -0.5f, -0.5f};
  const int32_t ids[2] = {4, 5};
  const float w[2] = {0.5f, 0.5f};
  expect_route(FP8MOE_ROUTING_DEEPSEEK_V3, 8, 2, l, bias, 2, 1, 0.0f, ids, w, 1e-7f);
}

Test(route_deepseek, group_size_one_and_no_bias) {
  /* E=4, 4 groups of 1 (score = the single b), keep 2, K=2, no bias: b = s = sigmoid(l).
   * l = [-1, 2, 0, 3]: groups 3, 1 kept; experts 3, 1.
   * s3 = 1/(1+e^-3) = 0.9525741, s1 = 0.8807971; sum 1.8333712
   * weights *2: 2 * 0.9525741 / 1.8333712 = 1.0391503, 2 * 0.8807971 / 1.8333712 = 0.9608497 */
  const float l[4] = {-1.0f, 2.0f, 0.0f, 3.0f};
  const int32_t ids[2] = {3, 1};
  const float w[2] = {1.0391503f, 0.9608497f};
  expect_route(FP8MOE_ROUTING_DEEPSEEK_V3, 4, 2, l, NULL, 4, 2, 2.0f, ids, w, 2e-6f);
}

Test(route_deepseek, all_nan_logits_give_zero_weights) {
  /* NaN -> -inf -> s = 0, b = 0 everywhere: ties by index -> 0, 1, 2; weights 0 * 2.5 / (0 + 1e-20) = 0 */
  const float l[6] = {NAN_F, NAN_F, NAN_F, NAN_F, NAN_F, NAN_F};
  const int32_t ids[3] = {0, 1, 2};
  const float w[3] = {0, 0, 0};
  expect_route(FP8MOE_ROUTING_DEEPSEEK_V3, 6, 3, l, NULL, 2, 1, 2.5f, ids, w, 0.0f);
}

Test(route_deepseek, nan_bias_ranks_last) {
  /* b = s + bias with bias[0] = NaN: expert 0 ranks as -inf even though its s is the largest.
   * l = [5, 0, 0, -5] -> s = [.9933071, .5, .5, .0066929]; bias = [NaN, 0, 0, 0]
   * top-2 of b: 1, 2 (tie, by index); weights 1 * .5 / 1.0 = 0.5 each */
  const float l[4] = {5.0f, 0.0f, 0.0f, -5.0f};
  const float bias[4] = {NAN_F, 0.0f, 0.0f, 0.0f};
  const int32_t ids[2] = {1, 2};
  const float w[2] = {0.5f, 0.5f};
  expect_route(FP8MOE_ROUTING_DEEPSEEK_V3, 4, 2, l, bias, 0, 0, 1.0f, ids, w, 1e-7f);
}

/* ---- parameters, batches ---------------------------------------------- */

Test(route_params, rejected_parameters_give_minus_one) {
  const float l[4] = {1, 2, 3, 4};
  const int32_t bad[2] = {-1, -1};
  const float zero[2] = {0, 0};
  expect_route(FP8MOE_ROUTING_LLAMA4, 4, 2, l, NULL, 0, 0, 0.0f, bad, zero, 0.0f);         /* Llama4 needs K = 1 */
  expect_route(FP8MOE_ROUTING_RENORMALIZE, 4, 2, l, NULL, 2, 1, 0.0f, bad, zero, 0.0f);    /* groups: DSV3 only */
  expect_route(FP8MOE_ROUTING_DEEPSEEK_V3, 4, 2, l, NULL, 3, 1, 1.0f, bad, zero, 0.0f);    /* 4 % 3 != 0 */
  expect_route(FP8MOE_ROUTING_DEEPSEEK_V3, 4, 2, l, NULL, 0, 0, NAN_F, bad, zero, 0.0f);   /* scale NaN */
  expect_route(6, 4, 2, l, NULL, 0, 0, 0.0f, bad, zero, 0.0f);                             /* no method 6 */
  expect_route(FP8MOE_ROUTING_TOPK, 1, 2, l, NULL, 0, 0, 0.0f, bad, zero, 0.0f);           /* K > E */
}

Test(route_params, batch_equals_per_token) {
  rng_t r = {test_seed("route_params.batch_equals_per_token")};
  enum { T = 37, E = 64, K = 6 };
  static float l[T * E], bias[E];
  int32_t ids[T * K], one_ids[K];
  float w[T * K], one_w[K];
  int m, t, k, i;
  for (i = 0; i < T * E; i++) l[i] = rng_normal(&r);
  for (i = 0; i < E; i++) bias[i] = 0.1f * rng_normal(&r);
  for (m = 0; m < FP8MOE__ROUTING_COUNT; m++) {
    int KK = m == FP8MOE_ROUTING_LLAMA4 ? 1 : K, ng = m == FP8MOE_ROUTING_DEEPSEEK_V3 ? 8 : 0;
    fp8moe_ref_route(m, T, E, KK, l, bias, ng, 3, 2.5f, ids, w);
    for (t = 0; t < T; t++) {
      fp8moe_ref_route_token(m, E, KK, l + t * E, bias, ng, 3, 2.5f, one_ids, one_w);
      for (k = 0; k < KK; k++) {
        cr_assert_eq(ids[t * KK + k], one_ids[k], "method %d token %d slot %d", m, t, k);
        cr_assert(memcmp(&w[t * KK + k], &one_w[k], sizeof(float)) == 0, "method %d token %d slot %d", m, t, k);
      }
    }
  }
}

/* ---- routed decode ---------------------------------------------------- */

Test(decode, packed_matches_unpacked_fp32_and_bf16) {
  rng_t r = {test_seed("decode.packed_matches_unpacked_fp32_and_bf16")};
  enum { T = 50, K = 8, N = T * K };
  int32_t packed[N], ids[N], out_ids[3][N];
  uint16_t wb[N];
  float wf[N], out_w[3][N];
  int i, v;
  for (i = 0; i < N; i++) {
    ids[i] = (int32_t)(rng_next(&r) % 65536);
    wb[i] = (uint16_t)rng_next(&r);
    if ((wb[i] & 0x7f80u) == 0x7f80u) wb[i] &= 0xbfffu; /* keep it finite so == compares values */
    wf[i] = fp8moe_bf16_to_float(wb[i]);
    packed[i] = fp8moe_topk_pack_bits(ids[i], wb[i]);
  }
  fp8moe_ref_decode_topk(T, K, packed, NULL, NULL, FP8MOE_DTYPE_FP32, out_ids[0], out_w[0]);
  fp8moe_ref_decode_topk(T, K, NULL, ids, wf, FP8MOE_DTYPE_FP32, out_ids[1], out_w[1]);
  fp8moe_ref_decode_topk(T, K, NULL, ids, wb, FP8MOE_DTYPE_BF16, out_ids[2], out_w[2]);
  for (v = 0; v < 3; v++)
    for (i = 0; i < N; i++) {
      cr_assert_eq(out_ids[v][i], ids[i], "variant %d slot %d", v, i);
      cr_assert(memcmp(&out_w[v][i], &wf[i], 4) == 0, "variant %d slot %d: %g vs %g", v, i, out_w[v][i], wf[i]);
    }
}

Test(decode, negative_weights_and_large_ids) {
  /* by hand: -0.5 is bf16 0xBF00; 40000 = 0x9C40 and 65535 = 0xFFFF must not sign-extend;
   * -2 is bf16 0xC000 */
  const int32_t packed[4] = {(int32_t)0x0005BF00u, (int32_t)0x9C403F80u, (int32_t)0xFFFFC000u, (int32_t)0x80000000u};
  const int32_t want_ids[4] = {5, 40000, 65535, 32768};
  const float want_w[4] = {-0.5f, 1.0f, -2.0f, 0.0f};
  int32_t ids[4];
  float w[4];
  int i;
  fp8moe_ref_decode_topk(2, 2, packed, NULL, NULL, FP8MOE_DTYPE_FP32, ids, w);
  for (i = 0; i < 4; i++) {
    cr_assert_eq(ids[i], want_ids[i], "slot %d: id %d want %d", i, ids[i], want_ids[i]);
    cr_assert_eq(w[i], want_w[i], "slot %d: weight %g want %g", i, w[i], want_w[i]);
  }
  /* and through the pack helper: a negative weight does not leak into the id */
  cr_assert_eq((uint32_t)fp8moe_topk_pack(40000, -0.5f), 0x9C40BF00u);
}

Test(decode, unpacked_passes_invalid_ids_through) {
  /* the unpacked form keeps ids exactly, invalid ones included (the MoE skips them); fp32 weights are exact */
  const int32_t ids[4] = {-7, 300, 70000, 3};
  const float wf[4] = {0.1f, -1e-30f, 3.0e38f, -0.0f};
  int32_t out[4];
  float w[4];
  int i;
  fp8moe_ref_decode_topk(1, 4, NULL, ids, wf, FP8MOE_DTYPE_FP32, out, w);
  for (i = 0; i < 4; i++) {
    cr_assert_eq(out[i], ids[i]);
    cr_assert(memcmp(&w[i], &wf[i], 4) == 0, "slot %d", i);
  }
}
