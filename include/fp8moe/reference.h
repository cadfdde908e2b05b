/* fp8moe/reference.h - the CPU reference of fp8moe: routing, top-k decode,
 * activation quantization and the MoE itself (SPEC sections 2-4), plain C.
 *
 * Role. Every GPU test compares against these functions, and users without a
 * GPU can validate their data with fp8moe_reference_run(), which takes the
 * very fp8moe_args a GPU run takes, with host pointers. The code follows the
 * SPEC step by step and rounds exactly as the kernels are specified to
 * (numeric.h): fp32 routing, fp32 GEMM accumulation with the scales applied
 * per 128-wide K block, SwiGLU in fp32 (with the per-expert alpha, beta and
 * clamp limit of SPEC section 5.1 when given), fp8 requantization with
 * scale = max(amax/448, FLT_MIN), fp32 combine in slot order followed by the
 * shared experts' outputs in index order, bf16 output.
 *
 *     #include <fp8moe/reference.h>
 *     fp8moe_config c = {256, 8, 7168, 2048};          // E, K, H, I
 *     fp8moe_args a;  memset(&a, 0, sizeof a);  ... host pointers ...
 *     fp8moe_status s = fp8moe_reference_run(&c, &a, 0);  // 0: route from logits
 *
 * Compiles as C11 and as C++17 (nvcc); host only. Link with -lm; build with
 * -fopenmp to spread fp8moe_ref_moe / fp8moe_reference_run over tokens.
 *
 * Thread safety: no global or static state; every function may be called
 * from several threads at once on distinct outputs.
 *
 * The 0.3 fields (SPEC section 5.1) are all honoured; zero / NULL gives the
 * results of before bit for bit. SwiGLU variant: per local expert alpha, beta
 * and limit arrays (NULL: 1, 0, +inf), through fp8moe_swiglu(), the element
 * function the kernels use; shared experts run with the defaults. Shared
 * experts: each of the S experts runs on every token, and its output is added
 * with weight 1 after the routed slots, in index order:
 * out = bf16(w_0*y_0 + ... + w_{K-1}*y_{K-1} + ys_0 + ... + ys_{S-1}), the sum
 * left to right in fp32, non-local slots skipped. Routing replay:
 * fp8moe_reference_run(..., routed = 0) writes the chosen ids and fp32
 * weights to topk_ids_out / topk_weights_out when non-NULL; fed back as
 * topk_ids + fp32 topk_weights to a routed run they give the same output bit
 * for bit. batch_invariant needs nothing here: every token is computed on
 * its own, so a row never depends on the rest of the batch.
 *
 * Cost: one token costs (3*H*I) multiply-adds per selected local expert and
 * per shared expert; a DeepSeek-V3 token (8 experts, H 7168, I 2048) takes
 * about 0.1-0.3 s on one core at -O2. Each token mallocs one scratch block of
 * (2H + 3I + H/128 + I/128) floats; if that fails, its output row is filled
 * with NaN (bf16 0x7FFF) rather than silently wrong numbers.
 *
 * Routing rules at the edges (SPEC section 4 leaves these to us):
 *  - NaN logits are replaced by -inf before anything else; every method then
 *    works on those sanitized logits, weights included (a TopK weight of a
 *    NaN logit is -inf).
 *  - Selection ranks experts by a key (per method, below), higher first; equal
 *    keys go to the lower expert index. Experts whose key is -inf (NaN or -inf
 *    logits, DeepSeekV3 masked groups) are ranked last, among themselves by
 *    index: when fewer than K experts have a key above -inf, the slots left
 *    are filled by the lowest-indexed experts not yet chosen, from any group.
 *  - A softmax whose maximum is not finite is taken as its limit: the entries
 *    equal to the maximum share the mass equally, all others get 0. So all
 *    -inf (or all NaN) logits give a uniform softmax, and +inf logits split
 *    the mass between themselves. Softmax results are therefore always finite,
 *    and Renormalize / RenormalizeNaive weights always sum to 1.
 *  - Keys: Default and RenormalizeNaive rank by softmax probability (equal
 *    probabilities, e.g. several that underflow to 0, go to the lower index,
 *    so they can pick other experts than Renormalize there); Renormalize,
 *    TopK and Llama4 by the sanitized logit; DeepSeekV3 by b = sigmoid(l) +
 *    bias, a NaN b (from a NaN bias) ranking as -inf. A group score that is
 *    NaN (+inf + -inf, from infinite biases) also ranks as -inf. sigmoid(l) =
 *    1 / (1 + exp(-l)), so sigmoid(-inf) = 0 and sigmoid(+inf) = 1, and
 *    DeepSeekV3 weights are finite whenever the scaling factor is.
 *  - Parameters fp8moe_validate_routing() rejects, E outside [1, 512] or K
 *    outside [1, min(E, 16)] give ids -1 and weights 0 in every slot.
 */
#ifndef FP8MOE_REFERENCE_H
#define FP8MOE_REFERENCE_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fp8moe.h"

#ifdef __cplusplus
#define FP8MOE__RESTRICT __restrict__
#else
#define FP8MOE__RESTRICT restrict
#endif

/* `#pragma omp` only where OpenMP is on: -Wall warns about unknown pragmas. */
#ifdef _OPENMP
#define FP8MOE__OMP_FOR _Pragma("omp parallel for schedule(dynamic, 1)")
#else
#define FP8MOE__OMP_FOR
#endif

/* ---- routing ----------------------------------------------------------- */

static inline float fp8moe__ref_sanitize(float v) { return v != v ? -INFINITY : v; }

static inline float fp8moe__ref_sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }

/* softmax of n values with no NaN among them; a non-finite maximum takes the
 * limit (the entries equal to it share the mass). Always finite. */
static inline void fp8moe__ref_softmax(const float *v, int n, float *p) {
  float m = -INFINITY, sum = 0.0f;
  int i;
  for (i = 0; i < n; i++)
    if (v[i] > m) m = v[i];
  if (m - m == 0.0f) {
    for (i = 0; i < n; i++) sum += (p[i] = expf(v[i] - m));
  } else {
    for (i = 0; i < n; i++) sum += (p[i] = v[i] == m ? 1.0f : 0.0f);
  }
  for (i = 0; i < n; i++) p[i] /= sum; /* sum >= 1: the maximum contributes exp(0) */
}

/* The k best of n keys (no NaN among them), best first; ties to the lower
 * index. O(n*k), which is nothing next to the MoE. */
static inline void fp8moe__ref_topk(const float *key, int n, int k, int *idx) {
  unsigned char taken[FP8MOE_MAX_EXPERTS];
  int s, i;
  memset(taken, 0, (size_t)n);
  for (s = 0; s < k; s++) {
    int best = -1;
    for (i = 0; i < n; i++)
      if (!taken[i] && (best < 0 || key[i] > key[best])) best = i;
    taken[best] = 1;
    idx[s] = best;
  }
}

/* Routing for one token (SPEC section 4). logits: [E] fp32 (callers convert bf16 first with
 * fp8moe_bf16_to_float); bias: [E] or NULL (DeepSeekV3 only; ignored by other methods).
 * Writes K global expert ids and K fp32 weights, in selection order (best first). */
static inline void fp8moe_ref_route_token(int method, int E, int K, const float *logits, const float *bias,
                                          int n_group, int topk_group, float routed_scaling_factor,
                                          int32_t *ids_out, float *weights_out) {
  float l[FP8MOE_MAX_EXPERTS], key[FP8MOE_MAX_EXPERTS], p[FP8MOE_MAX_EXPERTS];
  int sel[FP8MOE_MAX_TOP_K];
  int i, k;
  if (K < 1 || !ids_out || !weights_out) return;
  if (!logits || E < 1 || E > FP8MOE_MAX_EXPERTS || K > E || K > FP8MOE_MAX_TOP_K ||
      fp8moe_validate_routing(method, E, K, n_group, topk_group, routed_scaling_factor) != FP8MOE_OK) {
    for (k = 0; k < K; k++) {
      ids_out[k] = -1;
      weights_out[k] = 0.0f;
    }
    return;
  }
  for (i = 0; i < E; i++) l[i] = fp8moe__ref_sanitize(logits[i]);

  switch (method) {
  case FP8MOE_ROUTING_DEFAULT:
  case FP8MOE_ROUTING_RENORMALIZE_NAIVE: {
    float sum = 0.0f;
    fp8moe__ref_softmax(l, E, p);
    fp8moe__ref_topk(p, E, K, sel);
    for (k = 0; k < K; k++) sum += p[sel[k]];
    for (k = 0; k < K; k++)
      weights_out[k] = method == FP8MOE_ROUTING_DEFAULT ? p[sel[k]] : p[sel[k]] / sum; /* sum > 0: the best p > 0 */
    break;
  }
  case FP8MOE_ROUTING_RENORMALIZE: {
    float v[FP8MOE_MAX_TOP_K];
    fp8moe__ref_topk(l, E, K, sel);
    for (k = 0; k < K; k++) v[k] = l[sel[k]];
    fp8moe__ref_softmax(v, K, weights_out);
    break;
  }
  case FP8MOE_ROUTING_LLAMA4: /* K == 1 (validated) */
  case FP8MOE_ROUTING_TOPK:
    fp8moe__ref_topk(l, E, K, sel);
    for (k = 0; k < K; k++)
      weights_out[k] = method == FP8MOE_ROUTING_LLAMA4 ? fp8moe__ref_sigmoid(l[sel[k]]) : l[sel[k]];
    break;
  default: { /* FP8MOE_ROUTING_DEEPSEEK_V3 */
    float scale = routed_scaling_factor == 0.0f ? 1.0f : routed_scaling_factor, sum = 0.0f;
    for (i = 0; i < E; i++) {
      p[i] = fp8moe__ref_sigmoid(l[i]); /* s, in [0, 1] */
      key[i] = fp8moe__ref_sanitize(p[i] + (bias ? bias[i] : 0.0f));
    }
    if (n_group > 1) {
      int gs = E / n_group, g, top[2], keep[FP8MOE_MAX_EXPERTS];
      float score[FP8MOE_MAX_EXPERTS];
      unsigned char kept[FP8MOE_MAX_EXPERTS];
      for (g = 0; g < n_group; g++) {
        fp8moe__ref_topk(key + g * gs, gs, gs > 1 ? 2 : 1, top);
        score[g] = key[g * gs + top[0]] + (gs > 1 ? key[g * gs + top[1]] : 0.0f);
        score[g] = fp8moe__ref_sanitize(score[g]);
      }
      fp8moe__ref_topk(score, n_group, topk_group, keep);
      memset(kept, 0, (size_t)n_group);
      for (g = 0; g < topk_group; g++) kept[keep[g]] = 1;
      for (i = 0; i < E; i++)
        if (!kept[i / gs]) key[i] = -INFINITY;
    }
    fp8moe__ref_topk(key, E, K, sel);
    for (k = 0; k < K; k++) sum += p[sel[k]];
    for (k = 0; k < K; k++) weights_out[k] = p[sel[k]] * scale / (sum + 1e-20f);
    break;
  }
  }
  for (k = 0; k < K; k++) ids_out[k] = sel[k];
}

/* All T tokens: logits [T,E] -> ids/weights [T,K]. */
static inline void fp8moe_ref_route(int method, int T, int E, int K, const float *logits, const float *bias,
                                    int n_group, int topk_group, float routed_scaling_factor,
                                    int32_t *ids_out, float *weights_out) {
  int t;
  if (K < 1 || !ids_out || !weights_out) return;
  for (t = 0; t < T; t++)
    fp8moe_ref_route_token(method, E, K, logits ? logits + (size_t)t * (size_t)E : NULL, bias, n_group,
                           topk_group, routed_scaling_factor, ids_out + (size_t)t * (size_t)K,
                           weights_out + (size_t)t * (size_t)K);
}

/* Routed decode: packed [T,K] (if non-NULL) or ids [T,K] + weights [T,K] (fp32 or bf16 per wdtype)
 * -> global ids (int32, as given: invalid ids are passed through unchanged) and fp32 weights.
 * Packed ids come out in [0, 65535] (the unsigned top half). */
static inline void fp8moe_ref_decode_topk(int T, int K, const int32_t *packed, const int32_t *ids,
                                          const void *weights, fp8moe_dtype wdtype,
                                          int32_t *ids_out, float *weights_out) {
  size_t n = T > 0 && K > 0 ? (size_t)T * (size_t)K : 0, i;
  for (i = 0; i < n; i++) {
    if (packed) {
      ids_out[i] = fp8moe_topk_id(packed[i]);
      weights_out[i] = fp8moe_topk_weight(packed[i]);
    } else {
      ids_out[i] = ids[i];
      weights_out[i] = wdtype == FP8MOE_DTYPE_BF16 ? fp8moe_bf16_to_float(((const uint16_t *)weights)[i])
                                                   : ((const float *)weights)[i];
    }
  }
}

/* ---- activation quantization -------------------------------------------- */

/* bf16 [T,H] (raw bits) -> fp8 e4m3 [T,H] + scales [H/128, T] (transposed), scale = max(amax/448, FLT_MIN)
 * per (token, 128-column block), q = e4m3(x / scale) (fp8moe_e4m3_from_float). NaN inputs do not
 * count towards amax (they quantize to the fp8 NaN 0x7F). */
static inline void fp8moe_ref_quantize_activations(int T, int H, const uint16_t *x_bf16, uint8_t *x_fp8,
                                                   float *x_scale) {
  int t, b, j, nb = H / FP8MOE_BLOCK;
  for (t = 0; t < T; t++) {
    for (b = 0; b < nb; b++) {
      size_t base = (size_t)t * (size_t)H + (size_t)b * FP8MOE_BLOCK;
      float amax = 0.0f, s;
      for (j = 0; j < FP8MOE_BLOCK; j++) {
        float a = fabsf(fp8moe_bf16_to_float(x_bf16[base + j]));
        if (a > amax) amax = a;
      }
      s = fp8moe_quant_scale(amax);
      x_scale[(size_t)b * (size_t)T + (size_t)t] = s;
      for (j = 0; j < FP8MOE_BLOCK; j++) x_fp8[base + j] = fp8moe_quantize_e4m3(fp8moe_bf16_to_float(x_bf16[base + j]), s);
    }
  }
}

/* ---- the MoE ------------------------------------------------------------ */

/* The layer's inputs for fp8moe_ref_moe. Zero-initialize it (memset, or
 * `= {0}`) and set what is needed: the fields added in 0.3 then keep the
 * behaviour of before. */
typedef struct fp8moe_ref_moe_input {
  int num_tokens;                         /* T: the stride of hidden_states_scale */
  int local_expert_offset, local_num_experts;
  const uint8_t *hidden_states;           /* fp8 [T,H] */
  const float *hidden_states_scale;       /* [H/128, T] */
  const uint8_t *w1; const float *w1_scale;   /* [E_loc,2I,H], [E_loc,2I/128,H/128] */
  const uint8_t *w2; const float *w2_scale;   /* [E_loc,H,I], [E_loc,H/128,I/128] */
  const int32_t *topk_ids;                /* [T,K] global ids; ids outside [0,E) or not local contribute nothing */
  const float *topk_weights;              /* [T,K] fp32 */
  /* added in 0.3 (SPEC section 5.1); zero / NULL keeps the behaviour above */
  const float *swiglu_alpha;              /* [E_loc] or NULL (1), indexed by local expert */
  const float *swiglu_beta;               /* [E_loc] or NULL (0) */
  const float *swiglu_limit;              /* [E_loc] or NULL (+inf: no clamp) */
  int num_shared_experts;                 /* S; <= 0: none. With S > 0 all four shared pointers must be set
                                           * (a NULL one gives NaN rows, not a silently partial sum) */
  const uint8_t *shared_w1; const float *shared_w1_scale;  /* [S,2I,H], [S,2I/128,H/128] */
  const uint8_t *shared_w2; const float *shared_w2_scale;  /* [S,H,I], [S,H/128,I/128] */
} fp8moe_ref_moe_input;

/* Sum over one 128-wide block of x[k] * fp8(w[k]), in fp32. Eight partial sums in a fixed
 * order: deterministic, and short dependency chains the compiler can vectorize. */
static inline float fp8moe__ref_dot128(const float *FP8MOE__RESTRICT x, const uint8_t *FP8MOE__RESTRICT w,
                                       const float *FP8MOE__RESTRICT lut) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int k, j;
  for (k = 0; k < FP8MOE_BLOCK; k += 8)
    for (j = 0; j < 8; j++) s[j] += x[k + j] * lut[w[k + j]];
  return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

static inline void fp8moe__ref_fill_nan(int H, uint16_t *out_bf16, float *out_f32) {
  int h;
  for (h = 0; h < H; h++) {
    if (out_bf16) out_bf16[h] = 0x7fffu;
    if (out_f32) out_f32[h] = NAN;
  }
}

/* One expert on one token (SPEC section 2 steps 2-5) with its weight w in the combine (step 6):
 * acc[h] += w * y[h]. w1/w1_scale/w2/w2_scale point at this expert's matrices; x [H] and sx [H/128]
 * are the token's dequantized activations and scales; g (2I), aq (I), sa (I/128) are scratch.
 * A shared expert passes w = 1, which adds y[h] itself (1 * y is exact). */
static inline void fp8moe__ref_expert(const fp8moe_config *c, const uint8_t *w1, const float *w1_scale,
                                      const uint8_t *w2, const float *w2_scale, float alpha, float beta,
                                      float limit, float w, const float *x, const float *sx, const float *lut,
                                      float *g, float *aq, float *sa, float *acc) {
  const int H = c->hidden, I = c->intermediate, HB = H / FP8MOE_BLOCK, IB = I / FP8MOE_BLOCK;
  int n, h, j, b;
  /* step 2: GEMM1, g[n] = sum over K blocks of (block dot) * sx * sw1 */
  for (n = 0; n < 2 * I; n++) {
    const uint8_t *wr = w1 + (size_t)n * (size_t)H;
    const float *sw = w1_scale + (size_t)(n / FP8MOE_BLOCK) * (size_t)HB;
    float gn = 0.0f;
    for (b = 0; b < HB; b++) gn += fp8moe__ref_dot128(x + b * FP8MOE_BLOCK, wr + b * FP8MOE_BLOCK, lut) * sx[b] * sw[b];
    g[n] = gn;
  }
  /* step 3: SwiGLU in place, gate = g[I + j], up = g[j]: a = g' * sigmoid(alpha * g') * (u + beta) with
   * g' = min(gate, limit), u = clamp(up, -limit, limit); silu(gate) * up for the defaults */
  for (j = 0; j < I; j++) g[j] = fp8moe_swiglu(g[I + j], g[j], alpha, beta, limit);
  /* step 4: requantize per 128 columns; keep the fp8 values unscaled, as the GEMM reads them */
  for (b = 0; b < IB; b++) {
    float amax = 0.0f, s;
    for (j = b * FP8MOE_BLOCK; j < (b + 1) * FP8MOE_BLOCK; j++) {
      float a = fabsf(g[j]);
      if (a > amax) amax = a;
    }
    s = fp8moe_quant_scale(amax);
    sa[b] = s;
    for (j = b * FP8MOE_BLOCK; j < (b + 1) * FP8MOE_BLOCK; j++) aq[j] = lut[fp8moe_quantize_e4m3(g[j], s)];
  }
  /* steps 5-6: GEMM2 and this expert's term of the combine */
  for (h = 0; h < H; h++) {
    const uint8_t *wr = w2 + (size_t)h * (size_t)I;
    const float *sw = w2_scale + (size_t)(h / FP8MOE_BLOCK) * (size_t)IB;
    float yh = 0.0f;
    for (b = 0; b < IB; b++) yh += fp8moe__ref_dot128(aq + b * FP8MOE_BLOCK, wr + b * FP8MOE_BLOCK, lut) * sa[b] * sw[b];
    acc[h] += w * yh;
  }
}

/* SPEC section 2 (and 5.1) for token t with its K (id, weight) slots; one output row. lut: e4m3 -> fp32. */
static inline void fp8moe__ref_moe_token(const fp8moe_config *c, const fp8moe_ref_moe_input *in, int t,
                                         const int32_t *ids, const float *wts, const float *lut,
                                         uint16_t *out_bf16, float *out_f32) {
  const int E = c->num_experts, K = c->top_k, H = c->hidden, I = c->intermediate;
  const int HB = H / FP8MOE_BLOCK, IB = I / FP8MOE_BLOCK, T = in->num_tokens;
  const int S = in->num_shared_experts > 0 ? in->num_shared_experts : 0;
  const size_t w1_elems = (size_t)2 * I * (size_t)H, w2_elems = (size_t)H * (size_t)I;
  const size_t w1s_elems = (size_t)(2 * IB) * (size_t)HB, w2s_elems = (size_t)HB * (size_t)IB;
  /* scratch: x (H), x scales (HB), g (2I; SwiGLU overwrites its first half), a_q (I), a scales (IB), acc (H) */
  float *scratch;
  float *x, *sx, *g, *aq, *sa, *acc;
  int k, h, b, s;
  if (S > 0 && (!in->shared_w1 || !in->shared_w1_scale || !in->shared_w2 || !in->shared_w2_scale)) {
    fp8moe__ref_fill_nan(H, out_bf16, out_f32);
    return;
  }
  scratch = (float *)malloc(((size_t)2 * H + (size_t)3 * I + HB + IB) * sizeof(float));
  if (!scratch) {
    fp8moe__ref_fill_nan(H, out_bf16, out_f32);
    return;
  }
  x = scratch;
  sx = x + H;
  g = sx + HB;
  aq = g + 2 * (size_t)I;
  sa = aq + I;
  acc = sa + IB;

  for (h = 0; h < H; h++) {
    x[h] = lut[in->hidden_states[(size_t)t * H + h]];
    acc[h] = 0.0f;
  }
  for (b = 0; b < HB; b++) sx[b] = in->hidden_states_scale[(size_t)b * T + t];

  /* the routed slots, in slot order */
  for (k = 0; k < K; k++) {
    const int32_t id = ids[k];
    size_t le;
    if (id < 0 || id >= E || id < in->local_expert_offset || id - in->local_expert_offset >= in->local_num_experts)
      continue; /* step 1: invalid or not local */
    le = (size_t)(id - in->local_expert_offset);
    fp8moe__ref_expert(c, in->w1 + le * w1_elems, in->w1_scale + le * w1s_elems, in->w2 + le * w2_elems,
                       in->w2_scale + le * w2s_elems, in->swiglu_alpha ? in->swiglu_alpha[le] : 1.0f,
                       in->swiglu_beta ? in->swiglu_beta[le] : 0.0f,
                       in->swiglu_limit ? in->swiglu_limit[le] : INFINITY, wts[k], x, sx, lut, g, aq, sa, acc);
  }
  /* then the shared experts, in index order, weight 1, default SwiGLU (SPEC section 5.1) */
  for (s = 0; s < S; s++)
    fp8moe__ref_expert(c, in->shared_w1 + (size_t)s * w1_elems, in->shared_w1_scale + (size_t)s * w1s_elems,
                       in->shared_w2 + (size_t)s * w2_elems, in->shared_w2_scale + (size_t)s * w2s_elems, 1.0f,
                       0.0f, INFINITY, 1.0f, x, sx, lut, g, aq, sa, acc);
  for (h = 0; h < H; h++) {
    if (out_bf16) out_bf16[h] = fp8moe_bf16_from_float(acc[h]);
    if (out_f32) out_f32[h] = acc[h];
  }
  free(scratch);
}

static inline void fp8moe__ref_e4m3_table(float *lut) {
  int v;
  for (v = 0; v < 256; v++) lut[v] = fp8moe_e4m3_to_float((uint8_t)v);
}

/* SPEC section 2 steps 1-6 (and the 0.3 fields of section 5.1 that in carries) for the tokens
 * tokens[0..n) (tokens == NULL: all T, n ignored and taken as T).
 * out_bf16: [n, H] bf16 bits (may be NULL); out_f32: [n, H] the fp32 combine sum before bf16 rounding (may be NULL).
 * Must be thread-safe and parallelize over tokens with `#pragma omp parallel for` (a no-op without -fopenmp).
 * Does nothing when c fails fp8moe_validate_config or in is NULL; a token index outside [0, T) gets a NaN row. */
static inline void fp8moe_ref_moe(const fp8moe_config *c, const fp8moe_ref_moe_input *in, const int *tokens, int n,
                                  uint16_t *out_bf16, float *out_f32) {
  float lut[256];
  int i;
  if (fp8moe_validate_config(c) != FP8MOE_OK || !in) return;
  if (!tokens) n = in->num_tokens;
  fp8moe__ref_e4m3_table(lut);
  FP8MOE__OMP_FOR
  for (i = 0; i < n; i++) {
    const int t = tokens ? tokens[i] : i;
    const size_t row = (size_t)i * (size_t)c->hidden;
    uint16_t *ob = out_bf16 ? out_bf16 + row : NULL;
    float *of = out_f32 ? out_f32 + row : NULL;
    if (t < 0 || t >= in->num_tokens)
      fp8moe__ref_fill_nan(c->hidden, ob, of);
    else
      fp8moe__ref_moe_token(c, in, t, in->topk_ids + (size_t)t * c->top_k, in->topk_weights + (size_t)t * c->top_k,
                            lut, ob, of);
  }
}

/* ---- the whole run, from fp8moe_args ------------------------------------ */

/* Convenience for users validating without a GPU: the same fp8moe_args a GPU call takes, with HOST pointers.
 * Runs fp8moe_validate_args-equivalent checks (no workspace: call fp8moe_validate_args with a dummy
 * aligned workspace pointer and SIZE_MAX bytes), then route (routed == 0) or decode (routed != 0), then the MoE,
 * writing args->output (bf16 [T,H]). Every 0.3 field is honoured: the swiglu arrays, the shared experts, and,
 * for routed == 0, topk_ids_out / topk_weights_out ([T,K] each, when non-NULL: the chosen global ids and fp32
 * weights in slot order, routed scaling applied; a routed run ignores them). batch_invariant changes nothing
 * (every row is computed on its own). Returns the status; on failure nothing is written.
 * args->invalid_id_count is ignored (it names a device counter in a GPU call; it is never dereferenced here). */
static inline fp8moe_status fp8moe_reference_run(const fp8moe_config *c, const fp8moe_args *args, int routed) {
  const void *dummy_workspace = (const void *)(uintptr_t)FP8MOE_WORKSPACE_ALIGN; /* never dereferenced */
  fp8moe_status st = fp8moe_validate_args(c, args, routed, dummy_workspace, SIZE_MAX);
  fp8moe_ref_moe_input in;
  float lut[256];
  int t, T;
  if (st != FP8MOE_OK) return st;
  T = args->num_tokens;
  memset(&in, 0, sizeof in);
  in.num_tokens = T;
  in.local_expert_offset = args->local_expert_offset;
  in.local_num_experts = args->local_num_experts;
  in.hidden_states = (const uint8_t *)args->hidden_states;
  in.hidden_states_scale = args->hidden_states_scale;
  in.w1 = (const uint8_t *)args->w1;
  in.w1_scale = args->w1_scale;
  in.w2 = (const uint8_t *)args->w2;
  in.w2_scale = args->w2_scale;
  in.topk_ids = NULL; /* per token below */
  in.topk_weights = NULL;
  in.swiglu_alpha = args->swiglu_alpha;
  in.swiglu_beta = args->swiglu_beta;
  in.swiglu_limit = args->swiglu_limit;
  in.num_shared_experts = args->num_shared_experts; /* validated: 0..FP8MOE_MAX_SHARED_EXPERTS */
  in.shared_w1 = (const uint8_t *)args->shared_w1;
  in.shared_w1_scale = args->shared_w1_scale;
  in.shared_w2 = (const uint8_t *)args->shared_w2;
  in.shared_w2_scale = args->shared_w2_scale;
  fp8moe__ref_e4m3_table(lut);

#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1)
#endif
  for (t = 0; t < T; t++) {
    const int E = c->num_experts, K = c->top_k;
    int32_t ids[FP8MOE_MAX_TOP_K];
    float w[FP8MOE_MAX_TOP_K];
    if (!routed) {
      float l[FP8MOE_MAX_EXPERTS], bias[FP8MOE_MAX_EXPERTS];
      int e;
      for (e = 0; e < E; e++) {
        size_t i = (size_t)t * E + e;
        l[e] = args->logits_dtype == FP8MOE_DTYPE_BF16 ? fp8moe_bf16_to_float(((const uint16_t *)args->routing_logits)[i])
                                                       : ((const float *)args->routing_logits)[i];
        if (args->routing_bias)
          bias[e] = args->bias_dtype == FP8MOE_DTYPE_BF16 ? fp8moe_bf16_to_float(((const uint16_t *)args->routing_bias)[e])
                                                          : ((const float *)args->routing_bias)[e];
      }
      fp8moe_ref_route_token(args->routing_method, E, K, l, args->routing_bias ? bias : NULL, args->n_group,
                             args->topk_group, args->routed_scaling_factor, ids, w);
      /* routing replay: exactly what the MoE below is given */
      if (args->topk_ids_out) memcpy(args->topk_ids_out + (size_t)t * K, ids, (size_t)K * sizeof(int32_t));
      if (args->topk_weights_out) memcpy(args->topk_weights_out + (size_t)t * K, w, (size_t)K * sizeof(float));
    } else {
      size_t off = (size_t)t * K;
      const void *wt = NULL;
      if (args->topk_weights)
        wt = args->topk_weights_dtype == FP8MOE_DTYPE_BF16 ? (const void *)((const uint16_t *)args->topk_weights + off)
                                                           : (const void *)((const float *)args->topk_weights + off);
      fp8moe_ref_decode_topk(1, K, args->topk_packed ? args->topk_packed + off : NULL,
                             args->topk_ids ? args->topk_ids + off : NULL, wt, args->topk_weights_dtype, ids, w);
    }
    fp8moe__ref_moe_token(c, &in, t, ids, w, lut, (uint16_t *)args->output + (size_t)t * c->hidden, NULL);
  }
  return FP8MOE_OK;
}

#endif /* FP8MOE_REFERENCE_H */
