/* fp8moe/fp8moe.cuh - everything, for the one .cu file that instantiates.
 *
 *     #include <fp8moe/fp8moe.cuh>
 *     FP8MOE_DEFINE(dsv3, 256, 8, 7168, 2048);   // name, E, K, H, I
 *
 * generates, with C linkage (prototypes: FP8MOE_DECLARE(dsv3); in fp8moe.h):
 *
 *     size_t        dsv3_workspace_size(int max_tokens);
 *     size_t        dsv3_workspace_size_shared(int max_tokens, int num_shared_experts);
 *     fp8moe_status dsv3_run(const fp8moe_args *, void *workspace, size_t bytes, cudaStream_t);        // router logits
 *     fp8moe_status dsv3_run_routed(const fp8moe_args *, void *workspace, size_t bytes, cudaStream_t); // top-k given
 *     fp8moe_status dsv3_quantize_activations(const void *x_bf16, int num_tokens, void *x_fp8,
 *                                             float *x_scale, cudaStream_t);   // bf16 [T,H] -> fp8 + [H/128,T]
 *
 * One run is a fixed sequence of launches on the caller's stream, all scratch
 * in the caller's workspace (layout: workspace.h), no allocation and no host
 * synchronization, so it can be captured in a CUDA graph and replayed on new
 * data in the same buffers:
 *
 *   memset(counts) -> [route] -> decode_topk -> scan -> permute_rows
 *     -> GEMM1 (+SwiGLU +fp8 requant) -> GEMM2 -> combine
 *
 * Shared experts (fp8moe_args.num_shared_experts) ride along as extra
 * groups of both GEMMs (T rows each, after the routed rows; their weights
 * are read where the caller keeps them) and are added by the combine, so
 * they cost no launch of their own. The SwiGLU variant is applied in GEMM1's
 * epilogue; the replay outputs are written by the routing kernel.
 *
 * Build the .cu for each GPU you target, e.g.
 *   nvcc -std=c++17 -O3 -gencode arch=compute_89,code=sm_89 \
 *        -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_100a,code=sm_100a ...
 * The Hopper path (wgmma + TMA) is chosen at run time on compute capability
 * 9.0 when the binary holds sm_90a code and the experts average at least
 * FP8MOE_SM90_MIN_ROWS_PER_GROUP rows (detail/gemm/dispatch.cuh: below that,
 * decode-sized groups of small experts stream faster through the portable
 * path), or always for experts of at least
 * FP8MOE_SM90_DECODE_MIN_EXPERT_WEIGHTS weights (DeepSeek-V3, Kimi-K2,
 * Mixtral-style) or with batch_invariant set; every other GPU from sm_89 on
 * runs the portable mma.sync path, which is batch invariant by construction.
 */
#ifndef FP8MOE_FP8MOE_CUH
#define FP8MOE_FP8MOE_CUH

#include "fp8moe.h"
#include "detail/common.cuh"
#include "detail/gemm/params.cuh"
#include "detail/gemm/dispatch.cuh"
#include "detail/routing.cuh"
#include "detail/quantize.cuh"
#include "detail/permute.cuh"
#include "detail/combine.cuh"
#include "detail/small.cuh"

namespace fp8moe {
namespace detail {

/* The routing kernel: the router logits -> global ids and fp32 weights in
 * the slot buffers (and the replay outputs, if asked). */
template <int E, int K>
static fp8moe_status route(const fp8moe_args *a, char *ws, const fp8moe_workspace_layout &L, cudaStream_t s) {
  routing_params rp;
  rp.logits = a->routing_logits;
  rp.logits_dtype = a->logits_dtype;
  rp.bias = a->routing_bias;
  rp.bias_dtype = a->bias_dtype;
  rp.method = a->routing_method;
  rp.n_group = a->n_group;
  rp.topk_group = a->topk_group;
  rp.routed_scaling_factor = a->routed_scaling_factor;
  rp.num_tokens = a->num_tokens;
  rp.ids_out = reinterpret_cast<int *>(ws + L.slot_expert);
  rp.weights_out = reinterpret_cast<float *>(ws + L.slot_weight);
  rp.replay_ids = a->topk_ids_out;
  rp.replay_weights = a->topk_weights_out;
  return routing_launch<E, K>(rp, s);
}

/* Where a run reads its top-k: the caller's routed input, or (non-routed)
 * global ids and fp32 weights the routing kernel writes, whose buffers the
 * caller fills in (the router only produces valid ids: nothing to count). */
template <int K>
static decode_params topk_source(const fp8moe_args *a, int routed) {
  decode_params dp;
  dp.num_slots = a->num_tokens * K;
  dp.local_expert_offset = a->local_expert_offset;
  dp.local_num_experts = a->local_num_experts;
  if (routed) {
    dp.packed = a->topk_packed;
    dp.ids = a->topk_ids;
    dp.weights = a->topk_weights;
    dp.weights_dtype = a->topk_weights_dtype;
    dp.invalid_id_count = a->invalid_id_count;
  } else {
    dp.weights_dtype = FP8MOE_DTYPE_FP32;
  }
  return dp;
}

/* The front half of a run: the counts zeroed, routing (non-routed), decode,
 * scan and permutation. Afterwards the workspace (laid out as L) holds
 * expert_offset, slot_row, slot_weight, x_perm and x_perm_scale, what the
 * grouped GEMMs and the combine read; the rows of the shared experts
 * (a->num_shared_experts, T rows each) follow the routed ones. The arguments
 * were validated by the caller. The benchmark's cuBLASLt peer
 * (bench/bench_layer.cuh) runs this same front. */
template <int E, int K, int H>
static fp8moe_status moe_front(const fp8moe_args *a, char *ws, const fp8moe_workspace_layout &L, cudaStream_t s,
                               int routed, bool pdl, int *row_token = nullptr) {
  const int T = a->num_tokens, E_loc = a->local_num_experts, S = a->num_shared_experts;
  int *slot_expert = reinterpret_cast<int *>(ws + L.slot_expert);
  float *slot_weight = reinterpret_cast<float *>(ws + L.slot_weight);
  int *expert_count = reinterpret_cast<int *>(ws + L.expert_count);
  int *expert_offset = reinterpret_cast<int *>(ws + L.expert_offset);
  fp8moe_status st;

  FP8MOE__CHECK_CUDA(cudaMemsetAsync(expert_count, 0, sizeof(int) * (size_t)E_loc, s));

  decode_params dp = topk_source<K>(a, routed);
  dp.slot_expert = slot_expert;
  dp.slot_weight = slot_weight;
  dp.expert_count = expert_count;
  dp.slot_rank = reinterpret_cast<int *>(ws + L.slot_row); /* permute_rows turns each rank into its row */
  if (!routed) {
    /* route into the slot buffers as global ids + fp32 weights (and the
     * replay outputs, if asked), then decode them in place */
    if ((st = route<E, K>(a, ws, L, s)) != FP8MOE_OK) return st;
    dp.ids = slot_expert;
    dp.weights = slot_weight;
  }
  /* the first kernel of a run (decode when routed) is never launched with PDL */
  if ((st = decode_topk_launch<E>(dp, s, pdl && !routed)) != FP8MOE_OK) return st;
  int *tile_counter = reinterpret_cast<int *>(ws + L.tile_counter);
  if ((st = scan_expert_counts_launch(expert_count, expert_offset, E_loc, s, pdl, S, T, tile_counter)) != FP8MOE_OK)
    return st;

  permute_params pp;
  pp.num_tokens = T;
  pp.num_local_experts = E_loc;
  pp.num_shared = S;
  pp.x = static_cast<const uint8_t *>(a->hidden_states);
  pp.x_scale = a->hidden_states_scale;
  pp.slot_expert = slot_expert;
  pp.expert_offset = expert_offset;
  pp.slot_row = reinterpret_cast<int *>(ws + L.slot_row);
  pp.x_perm = reinterpret_cast<uint8_t *>(ws + L.x_perm);
  pp.x_perm_scale = reinterpret_cast<float *>(ws + L.x_perm_scale);
  pp.scale_ld = (long long)L.scale_ld;
  pp.row_token = row_token; /* GEMM1 gathers: each row's token instead of the copies */
  return permute_rows_launch<K, H>(pp, s, pdl);
}

/* The layer at small T (detail/small.cuh, small_takes): the routing kernel
 * (non-routed) and one cooperative kernel. */
template <int E, int K, int H, int I>
static fp8moe_status small_run(const fp8moe_args *a, char *ws, const fp8moe_workspace_layout &L, cudaStream_t s,
                               int routed, const device_info &dev, bool pdl) {
  small_params sp;
  sp.top = topk_source<K>(a, routed);
  if (!routed) {
    fp8moe_status st = route<E, K>(a, ws, L, s);
    if (st != FP8MOE_OK) return st;
    sp.top.ids = reinterpret_cast<const int32_t *>(ws + L.slot_expert);
    sp.top.weights = ws + L.slot_weight;
  }
  sp.num_tokens = a->num_tokens;
  sp.num_shared = a->num_shared_experts;
  sp.x = static_cast<const uint8_t *>(a->hidden_states);
  sp.x_scale = a->hidden_states_scale;
  sp.w1 = static_cast<const uint8_t *>(a->w1);
  sp.w1_scale = a->w1_scale;
  sp.w2 = static_cast<const uint8_t *>(a->w2);
  sp.w2_scale = a->w2_scale;
  sp.shared_w1 = static_cast<const uint8_t *>(a->shared_w1);
  sp.shared_w1_scale = a->shared_w1_scale;
  sp.shared_w2 = static_cast<const uint8_t *>(a->shared_w2);
  sp.shared_w2_scale = a->shared_w2_scale;
  sp.swiglu_alpha = a->swiglu_alpha;
  sp.swiglu_beta = a->swiglu_beta;
  sp.swiglu_limit = a->swiglu_limit;
  sp.part = reinterpret_cast<float *>(ws + L.small_part);
  sp.part_rows = (int)L.small_rows;
  sp.act = reinterpret_cast<uint8_t *>(ws + L.act);
  sp.act_scale = reinterpret_cast<float *>(ws + L.act_scale);
  sp.out = static_cast<uint16_t *>(a->output);
  return small_launch<E, K, H, I>(sp, s, dev, pdl && !routed, pdl);
}

template <int E, int K, int H, int I>
static fp8moe_status moe_run(const fp8moe_args *a, void *workspace, size_t workspace_bytes, cudaStream_t s,
                             int routed) {
  static_assert(E >= 1 && E <= FP8MOE_MAX_EXPERTS, "NUM_EXPERTS must be in [1, 512]");
  static_assert(K >= 1 && K <= E && K <= FP8MOE_MAX_TOP_K, "TOP_K must be in [1, min(NUM_EXPERTS, 16)]");
  static_assert(H > 0 && H % FP8MOE_BLOCK == 0, "HIDDEN must be a positive multiple of 128");
  static_assert(I > 0 && I % FP8MOE_BLOCK == 0, "INTERMEDIATE must be a positive multiple of 128");
  const fp8moe_config cfg = {E, K, H, I};
  fp8moe_status st = fp8moe_validate_args(&cfg, a, routed, workspace, workspace_bytes);
  if (st != FP8MOE_OK || a->num_tokens == 0) return st;

  device_info dev;
  FP8MOE__GET_DEVICE_INFO(dev);
  if (dev.cc < 89) return FP8MOE_ERROR_UNSUPPORTED_DEVICE;
  /* PDL (common.cuh) between the run's kernels, where the device has it */
  const bool pdl = a->enable_pdl != 0 && dev.cc >= 90;
  /* the same GEMM kernel whatever T (dispatch.cuh): for batch invariance,
   * and for experts large enough that the Hopper path is the faster one at
   * every size (tunables.h) */
  constexpr bool big_experts = FP8MOE_SM90_DECODE_MIN_EXPERT_WEIGHTS > 0 &&
                               3LL * I * H >= (long long)FP8MOE_SM90_DECODE_MIN_EXPERT_WEIGHTS;
  const bool pin = a->batch_invariant != 0 || big_experts;

  const int T = a->num_tokens, S = a->num_shared_experts;
  const fp8moe_workspace_layout L = fp8moe_workspace_layout_shared(T, E, K, H, I, S);
  char *ws = static_cast<char *>(workspace);
  if constexpr (FP8MOE_SMALL_MAX_TOKENS > 0) {
    if (!a->batch_invariant && small_takes<E, K, H, I>(T, a->local_num_experts, S, dev.sm_count))
      return small_run<E, K, H, I>(a, ws, L, s, routed, dev, pdl);
  }
  /* GEMM1 on the Hopper path gathers its rows from hidden_states
   * (FP8MOE_GATHER_A): the permutation writes each row's token, over the
   * start of x_perm (which the gather leaves unused until GEMM2's output) */
  const bool gather =
      FP8MOE_GATHER_A &&
      grouped_gemm_takes_sm90<2 * I, H, epilogue::swiglu_quant>(dev, (long long)L.rows, a->local_num_experts + S, pin);
  int *row_token = gather ? reinterpret_cast<int *>(ws + L.x_perm) : nullptr;
  if ((st = moe_front<E, K, H>(a, ws, L, s, routed, pdl, row_token)) != FP8MOE_OK) return st;

  /* the shared experts are extra groups of both GEMMs, after the local ones */
  grouped_gemm_params g1;
  if (gather) {
    g1.a = static_cast<const uint8_t *>(a->hidden_states);
    g1.a_scale = a->hidden_states_scale;
    g1.a_scale_ld = T;
    g1.a_rows = row_token;
  } else {
    g1.a = reinterpret_cast<const uint8_t *>(ws + L.x_perm);
    g1.a_scale = reinterpret_cast<const float *>(ws + L.x_perm_scale);
    g1.a_scale_ld = (long long)L.scale_ld;
  }
  g1.b = static_cast<const uint8_t *>(a->w1);
  g1.b_scale = a->w1_scale;
  g1.b_extra = static_cast<const uint8_t *>(a->shared_w1);
  g1.b_extra_scale = a->shared_w1_scale;
  g1.extra_groups = S;
  g1.group_offset = reinterpret_cast<const int *>(ws + L.expert_offset);
  g1.num_groups = a->local_num_experts + S;
  g1.m_total = (int)L.rows;
  g1.c = ws + L.act;
  g1.c_scale = reinterpret_cast<float *>(ws + L.act_scale);
  g1.c_scale_ld = (long long)L.scale_ld;
  g1.swiglu_alpha = a->swiglu_alpha;
  g1.swiglu_beta = a->swiglu_beta;
  g1.swiglu_limit = a->swiglu_limit;
  if (FP8MOE_SM90_DYNAMIC_SCHEDULE) g1.tile_counter = reinterpret_cast<int *>(ws + L.tile_counter); /* zeroed by the scan */
  g1.early_weights = true; /* the offsets: written by the scan, two kernels ahead (three for GEMM2) */
  if ((st = grouped_gemm_launch<2 * I, H, epilogue::swiglu_quant>(g1, s, pdl, pin)) != FP8MOE_OK) return st;

  grouped_gemm_params g2 = g1;
  g2.a = reinterpret_cast<const uint8_t *>(ws + L.act);
  g2.a_scale = reinterpret_cast<const float *>(ws + L.act_scale);
  g2.a_scale_ld = (long long)L.scale_ld;
  g2.a_rows = nullptr;
  g2.b = static_cast<const uint8_t *>(a->w2);
  g2.b_scale = a->w2_scale;
  g2.b_extra = static_cast<const uint8_t *>(a->shared_w2);
  g2.b_extra_scale = a->shared_w2_scale;
  g2.c = ws + L.y; /* bf16 rows, over x_perm (dead after GEMM1) */
  g2.c_scale = NULL;
  if (FP8MOE_SM90_DYNAMIC_SCHEDULE) g2.tile_counter = reinterpret_cast<int *>(ws + L.tile_counter) + 2;
  if ((st = grouped_gemm_launch<H, I, epilogue::store_bf16>(g2, s, pdl, pin)) != FP8MOE_OK) return st;

  combine_params cp;
  cp.num_tokens = T;
  cp.slot_row = reinterpret_cast<const int *>(ws + L.slot_row);
  cp.slot_weight = reinterpret_cast<const float *>(ws + L.slot_weight);
  cp.y = reinterpret_cast<const uint16_t *>(ws + L.y);
  cp.out = static_cast<uint16_t *>(a->output);
  cp.num_shared = S;
  cp.shared_row0 = reinterpret_cast<const int *>(ws + L.expert_offset) + a->local_num_experts;
  return combine_launch<K, H>(cp, s, pdl);
}

template <int H>
static fp8moe_status quantize_run(const void *x_bf16, int T, void *x_fp8, float *x_scale, cudaStream_t s) {
  if (T < 0) return FP8MOE_ERROR_INVALID_NUM_TOKENS;
  if (T == 0) return FP8MOE_OK;
  if (!x_bf16 || !x_fp8 || !x_scale) return FP8MOE_ERROR_NULL_ARGUMENT;
  if (!fp8moe__aligned(x_bf16, 16) || !fp8moe__aligned(x_fp8, 16) || !fp8moe__aligned(x_scale, 4))
    return FP8MOE_ERROR_MISALIGNED_POINTER;
  device_info dev; /* FP8MOE_ERROR_NO_DEVICE on a machine without a usable GPU, as a run */
  FP8MOE__GET_DEVICE_INFO(dev);
  return quantize_activations_launch<H>(x_bf16, T, x_fp8, x_scale, s);
}

} // namespace detail
} // namespace fp8moe

/* The instantiation macro: pastes the compile-time shape into the generic
 * pipeline above; every generated symbol is name_<verb> with C linkage
 * (FP8MOE_EXTERN_C). Write it as a statement: `FP8MOE_DEFINE(...);`. */
#define FP8MOE_DEFINE(name, NUM_EXPERTS, TOP_K, HIDDEN, INTERMEDIATE)                                      \
  FP8MOE_DECLARE(name);                                                                                   \
  FP8MOE_EXTERN_C size_t name##_workspace_size(int max_tokens) {                                          \
    return fp8moe_workspace_layout_for(max_tokens, NUM_EXPERTS, TOP_K, HIDDEN, INTERMEDIATE).total;        \
  }                                                                                                       \
  FP8MOE_EXTERN_C size_t name##_workspace_size_shared(int max_tokens, int num_shared_experts) {           \
    return fp8moe_workspace_layout_shared(max_tokens, NUM_EXPERTS, TOP_K, HIDDEN, INTERMEDIATE,            \
                                          num_shared_experts).total;                                      \
  }                                                                                                       \
  FP8MOE_EXTERN_C fp8moe_status name##_run(const fp8moe_args *args, void *workspace, size_t workspace_bytes, \
                                           fp8moe_stream stream) {                                        \
    return fp8moe::detail::moe_run<NUM_EXPERTS, TOP_K, HIDDEN, INTERMEDIATE>(args, workspace,             \
                                                                             workspace_bytes, stream, 0); \
  }                                                                                                       \
  FP8MOE_EXTERN_C fp8moe_status name##_run_routed(const fp8moe_args *args, void *workspace,               \
                                                  size_t workspace_bytes, fp8moe_stream stream) {         \
    return fp8moe::detail::moe_run<NUM_EXPERTS, TOP_K, HIDDEN, INTERMEDIATE>(args, workspace,             \
                                                                             workspace_bytes, stream, 1); \
  }                                                                                                       \
  FP8MOE_EXTERN_C fp8moe_status name##_quantize_activations(const void *x_bf16, int num_tokens, void *x_fp8, \
                                                            float *x_scale, fp8moe_stream stream) {       \
    return fp8moe::detail::quantize_run<HIDDEN>(x_bf16, num_tokens, x_fp8, x_scale, stream);              \
  }                                                                                                       \
  static_assert(true, "FP8MOE_DEFINE(name, ...) takes a trailing semicolon")

#endif /* FP8MOE_FP8MOE_CUH */
