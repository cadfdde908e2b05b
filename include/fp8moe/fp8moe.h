/* fp8moe/fp8moe.h - the host-side C API of fp8moe (umbrella header).
 *
 * fp8moe computes the FP8 block-scale fused Mixture-of-Experts layer of
 * DeepSeek-V3-style models on NVIDIA GPUs. This header is everything a host
 * program needs to *call* an instantiation: it compiles as C11 and as CUDA
 * C++, and needs no CUDA header (the stream is the driver's opaque
 * `struct CUstream_st *`, the very type `cudaStream_t` names).
 *
 * The kernels are instantiated in one .cu file of yours:
 *
 *     // moe_dsv3.cu   (nvcc -std=c++17 -gencode arch=compute_90a,code=sm_90a ...)
 *     #include <fp8moe/fp8moe.cuh>
 *     FP8MOE_DEFINE(dsv3, 256, 8, 7168, 2048);   // name, E, K, H, I
 *
 * and called from anywhere, C included:
 *
 *     #include <fp8moe/fp8moe.h>
 *     FP8MOE_DECLARE(dsv3);
 *     size_t bytes = dsv3_workspace_size(max_tokens);   // once; cudaMalloc it
 *     fp8moe_args a = {0};  ... fill pointers ...
 *     fp8moe_status s = dsv3_run_routed(&a, workspace, bytes, stream);
 *     if (s != FP8MOE_OK) fprintf(stderr, "%s\n", fp8moe_status_string(s));
 *
 * A run never allocates and never synchronizes with the host, so it can be
 * captured in a CUDA graph. Bad arguments return a status before anything is
 * launched, leaving the output untouched.
 */
#ifndef FP8MOE_FP8MOE_H
#define FP8MOE_FP8MOE_H

#include <stddef.h>
#include <stdint.h>

/* The version of these headers (semantic versioning; before 1.0 a minor
 * release may change the ABI, so the minor must match). */
#define FP8MOE_VERSION_MAJOR 0
#define FP8MOE_VERSION_MINOR 3
#define FP8MOE_VERSION_PATCH 0
#define FP8MOE_VERSION_STRING "0.3.0"
/* One integer that grows with every release: MAJOR*10000 + MINOR*100 + PATCH. */
#define FP8MOE_VERSION (FP8MOE_VERSION_MAJOR * 10000 + FP8MOE_VERSION_MINOR * 100 + FP8MOE_VERSION_PATCH)

/* Linkage of every host function generated or declared here: C linkage, so C
 * and C++ callers share one ABI. */
#ifdef __cplusplus
#define FP8MOE_EXTERN_C extern "C"
#else
#define FP8MOE_EXTERN_C extern
#endif


/* The CUDA stream type without the CUDA headers: cudaStream_t is a typedef of
 * exactly this pointer type. */
struct CUstream_st;
typedef struct CUstream_st *fp8moe_stream;

/* Largest supported sizes. TOP_K is bounded by the routing kernels (one
 * register array of K candidates per warp lane); experts by the routing and
 * scheduling kernels (one block of shared memory per CTA). */
#define FP8MOE_MAX_TOP_K 16
#define FP8MOE_MAX_EXPERTS 512
/* Largest fp8moe_args.num_shared_experts: the grouped GEMMs take them as
 * extra groups beside the local experts. */
#define FP8MOE_MAX_SHARED_EXPERTS 8
/* H and I are multiples of the 128-wide quantization block. */
#define FP8MOE_BLOCK 128

/* ---- status ---------------------------------------------------------- */

typedef enum fp8moe_status {
  FP8MOE_OK = 0,
  FP8MOE_ERROR_NULL_ARGUMENT = 1,       /* args, or a pointer the call needs, is NULL */
  FP8MOE_ERROR_INVALID_NUM_TOKENS = 2,  /* num_tokens < 0, or num_tokens * (K + num_shared_experts) > INT_MAX */
  FP8MOE_ERROR_INVALID_EXPERT_RANGE = 3, /* local_expert_offset < 0, local_num_experts < 1, or offset + local > E */
  FP8MOE_ERROR_INVALID_SHAPE = 4,       /* H or I not a positive multiple of 128, E out of [1, 512] */
  FP8MOE_ERROR_INVALID_TOP_K = 5,       /* K < 1, K > E or K > FP8MOE_MAX_TOP_K */
  FP8MOE_ERROR_INVALID_ROUTING_METHOD = 6, /* routing_method not one of fp8moe_routing_method */
  FP8MOE_ERROR_INVALID_ROUTING_PARAMS = 7, /* the method cannot take these K / n_group / topk_group / scale */
  FP8MOE_ERROR_INVALID_DTYPE = 8,       /* a dtype field is not FP8MOE_DTYPE_FP32 or _BF16 */
  FP8MOE_ERROR_INVALID_ROUTED_INPUT = 9, /* routed call with both or neither of topk_packed and topk_ids/topk_weights */
  FP8MOE_ERROR_MISALIGNED_POINTER = 10, /* a pointer is not aligned as docs/api.md requires */
  FP8MOE_ERROR_NULL_WORKSPACE = 11,     /* workspace is NULL while num_tokens > 0 */
  FP8MOE_ERROR_WORKSPACE_TOO_SMALL = 12, /* workspace_bytes < name_workspace_size(num_tokens) */
  FP8MOE_ERROR_UNSUPPORTED_DEVICE = 13, /* the current device is older than sm_89 (no FP8 tensor cores) */
  FP8MOE_ERROR_CUDA = 14,               /* a CUDA call or kernel launch failed; cudaGetLastError() has been cleared */
  FP8MOE_ERROR_NO_DEVICE = 15,          /* no usable CUDA device: none present, or no driver that can run this build */
  FP8MOE__STATUS_COUNT = 16             /* one past the last status (not a status) */
} fp8moe_status;

/* A static string naming the status and saying what it means, e.g.
 * "FP8MOE_ERROR_NULL_ARGUMENT: a required pointer is NULL"; an unknown value
 * gives "FP8MOE: unknown status". Never NULL, never to be freed. */
static inline const char *fp8moe_status_string(fp8moe_status s) {
  switch (s) {
  case FP8MOE_OK: return "FP8MOE_OK: success";
  case FP8MOE_ERROR_NULL_ARGUMENT: return "FP8MOE_ERROR_NULL_ARGUMENT: a required pointer is NULL";
  case FP8MOE_ERROR_INVALID_NUM_TOKENS: return "FP8MOE_ERROR_INVALID_NUM_TOKENS: num_tokens is negative or num_tokens * (top_k + num_shared_experts) exceeds INT_MAX";
  case FP8MOE_ERROR_INVALID_EXPERT_RANGE: return "FP8MOE_ERROR_INVALID_EXPERT_RANGE: local experts are not inside [0, E)";
  case FP8MOE_ERROR_INVALID_SHAPE: return "FP8MOE_ERROR_INVALID_SHAPE: H and I must be positive multiples of 128, E in [1, 512]";
  case FP8MOE_ERROR_INVALID_TOP_K: return "FP8MOE_ERROR_INVALID_TOP_K: top_k must be in [1, min(E, 16)]";
  case FP8MOE_ERROR_INVALID_ROUTING_METHOD: return "FP8MOE_ERROR_INVALID_ROUTING_METHOD: unknown routing method";
  case FP8MOE_ERROR_INVALID_ROUTING_PARAMS: return "FP8MOE_ERROR_INVALID_ROUTING_PARAMS: the routing method cannot take these parameters";
  case FP8MOE_ERROR_INVALID_DTYPE: return "FP8MOE_ERROR_INVALID_DTYPE: dtype must be FP8MOE_DTYPE_FP32 or FP8MOE_DTYPE_BF16";
  case FP8MOE_ERROR_INVALID_ROUTED_INPUT: return "FP8MOE_ERROR_INVALID_ROUTED_INPUT: give either topk_packed or topk_ids + topk_weights";
  case FP8MOE_ERROR_MISALIGNED_POINTER: return "FP8MOE_ERROR_MISALIGNED_POINTER: a pointer is not aligned as required";
  case FP8MOE_ERROR_NULL_WORKSPACE: return "FP8MOE_ERROR_NULL_WORKSPACE: workspace is NULL";
  case FP8MOE_ERROR_WORKSPACE_TOO_SMALL: return "FP8MOE_ERROR_WORKSPACE_TOO_SMALL: workspace_bytes < workspace_size(num_tokens)";
  case FP8MOE_ERROR_UNSUPPORTED_DEVICE: return "FP8MOE_ERROR_UNSUPPORTED_DEVICE: needs compute capability 8.9 or newer";
  case FP8MOE_ERROR_CUDA: return "FP8MOE_ERROR_CUDA: a CUDA call or launch failed";
  case FP8MOE_ERROR_NO_DEVICE: return "FP8MOE_ERROR_NO_DEVICE: no usable CUDA device (none present, or the driver is too old)";
  default: return "FP8MOE: unknown status";
  }
}

/* ---- enums ----------------------------------------------------------- */

/* The element type of the fields that take either (logits, bias, routed
 * weights). */
typedef enum fp8moe_dtype {
  FP8MOE_DTYPE_FP32 = 0,
  FP8MOE_DTYPE_BF16 = 1
} fp8moe_dtype;

/* Values match FlashInfer's RoutingMethodType (SPEC section 4). */
typedef enum fp8moe_routing_method {
  FP8MOE_ROUTING_DEFAULT = 0,           /* top-K of softmax(logits); weight = probability */
  FP8MOE_ROUTING_RENORMALIZE = 1,       /* top-K of logits; softmax over the K chosen */
  FP8MOE_ROUTING_DEEPSEEK_V3 = 2,       /* sigmoid + bias, groups, scaling factor */
  FP8MOE_ROUTING_LLAMA4 = 3,            /* K = 1: argmax; weight = sigmoid(logit) */
  FP8MOE_ROUTING_RENORMALIZE_NAIVE = 4, /* top-K of softmax; renormalized to sum 1 */
  FP8MOE_ROUTING_TOPK = 5,              /* top-K of logits; weight = raw logit */
  FP8MOE__ROUTING_COUNT = 6             /* one past the last method (not a method) */
} fp8moe_routing_method;

/* ---- arguments (SPEC section 5; more fields may be added at the end) -- */

typedef struct fp8moe_args {
  int num_tokens;                     /* T >= 0 */
  int local_expert_offset;            /* first global expert id held here */
  int local_num_experts;              /* E_loc */
  const void  *hidden_states;         /* fp8 e4m3 [T, H] */
  const float *hidden_states_scale;   /* [H/128, T] */
  const void  *w1;  const float *w1_scale;   /* [E_loc, 2I, H], [E_loc, 2I/128, H/128] */
  const void  *w2;  const float *w2_scale;   /* [E_loc, H, I],  [E_loc, H/128, I/128] */
  /* non-routed */
  int routing_method;                 /* fp8moe_routing_method */
  const void *routing_logits;  fp8moe_dtype logits_dtype;   /* [T, E] */
  const void *routing_bias;    fp8moe_dtype bias_dtype;     /* [E] or NULL */
  int n_group, topk_group;            /* DeepSeekV3; 0 or 1 = no groups */
  float routed_scaling_factor;        /* DeepSeekV3; 0 means 1.0 */
  /* routed: either topk_packed, or topk_ids + topk_weights */
  const int32_t *topk_packed;         /* [T, K] */
  const int32_t *topk_ids;            /* [T, K] */
  const void *topk_weights;  fp8moe_dtype topk_weights_dtype;  /* [T, K] */
  /* output and diagnostics */
  void *output;                       /* bf16 [T, H] */
  int  *invalid_id_count;             /* optional device counter, or NULL; incremented per invalid routed id */
  int   enable_pdl;                   /* nonzero: programmatic dependent launch between the run's kernels (cc >= 9.0; see docs/api.md) */
  /* added in 0.3 (SPEC section 5.1); zero / NULL keeps the behaviour above */
  const float *swiglu_alpha;          /* device [E_loc] or NULL (1): a = g * sigmoid(alpha * g) * (u + beta) */
  const float *swiglu_beta;           /* device [E_loc] or NULL (0) */
  const float *swiglu_limit;          /* device [E_loc] or NULL (no clamp): g = min(gate, limit), u = clamp(up, -limit, limit) */
  int32_t *topk_ids_out;              /* device [T, K] or NULL; name_run only: the chosen global expert ids, slot order */
  float   *topk_weights_out;          /* device [T, K] or NULL; name_run only: their fp32 weights, routed scaling applied */
  int num_shared_experts;             /* S >= 0 experts every token takes with weight 1 (0 = none) */
  const void *shared_w1;  const float *shared_w1_scale;  /* [S, 2I, H], [S, 2I/128, H/128] */
  const void *shared_w2;  const float *shared_w2_scale;  /* [S, H, I],  [S, H/128, I/128] */
  int batch_invariant;                /* nonzero: a token's output row does not depend on the rest of the batch */
} fp8moe_args;

/* ---- instantiation prototypes --------------------------------------- */

/* FP8MOE_DECLARE(name): the prototypes of what FP8MOE_DEFINE(name, ...) in
 * some .cu file generates; write it as a declaration, `FP8MOE_DECLARE(name);`.
 *   name_workspace_size(max_tokens)   bytes of scratch for up to max_tokens tokens
 *   name_workspace_size_shared(max_tokens, num_shared_experts)
 *                                     the same, for runs with shared experts
 *   name_run(args, ws, bytes, stream)          non-routed: router logits + method
 *   name_run_routed(args, ws, bytes, stream)   routed: topk_packed or topk_ids + topk_weights
 *   name_quantize_activations(x_bf16, T, x_fp8, x_scale, stream)
 *       bf16 [T,H] -> fp8 e4m3 [T,H] + fp32 [H/128,T], scale = max(amax/448, FLT_MIN)
 * Safe in C and C++ headers. */
#define FP8MOE_DECLARE(name)                                                              \
  FP8MOE_EXTERN_C size_t name##_workspace_size(int max_tokens);                           \
  FP8MOE_EXTERN_C size_t name##_workspace_size_shared(int max_tokens, int num_shared_experts); \
  FP8MOE_EXTERN_C fp8moe_status name##_run(const fp8moe_args *args, void *workspace,      \
                                           size_t workspace_bytes, fp8moe_stream stream); \
  FP8MOE_EXTERN_C fp8moe_status name##_run_routed(const fp8moe_args *args, void *workspace, \
                                                  size_t workspace_bytes, fp8moe_stream stream); \
  FP8MOE_EXTERN_C fp8moe_status name##_quantize_activations(const void *x_bf16, int num_tokens,   \
                                                           void *x_fp8, float *x_scale,            \
                                                           fp8moe_stream stream)

#include "tunables.h"
#include "topk_pack.h"
#include "numeric.h"
#include "workspace.h"
#include "validate.h"

#endif /* FP8MOE_FP8MOE_H */
