/* examples/torch/fp8moe_torch.cpp - the PyTorch binding of fp8moe.
 *
 * Built by fp8moe_torch.py with torch.utils.cpp_extension.load(), together
 * with one generated .cu per model shape (each a single FP8MOE_DEFINE) and a
 * generated header, fp8moe_torch_shapes.h, that lists those shapes:
 *
 *     #define FP8MOE_TORCH_SHAPES(X) X(0, 256, 8, 7168, 2048) X(1, 32, 4, 1024, 512)
 *
 * This file includes only the C API (<fp8moe/fp8moe.h>): the kernels are
 * compiled in the .cu files, away from the torch headers. It checks every
 * tensor (device, dtype, shape, contiguity) and raises a RuntimeError that
 * names the argument; it allocates the output and the workspace with
 * PyTorch's caching allocator and runs on the current CUDA stream, so a call
 * can be captured in a CUDA graph; a status other than FP8MOE_OK becomes a
 * RuntimeError carrying fp8moe_status_string(). The argument names follow
 * FlashInfer's trtllm_fp8_block_scale_moe; fp8moe_torch.py adds the Python
 * signatures themselves (defaults, the arguments that do not apply).
 *
 * The 0.3 fields (SPEC section 5.1): gemm1_alpha / gemm1_beta /
 * gemm1_clamp_limit (float32 [E_loc]) become fp8moe_args.swiglu_*; the
 * shared experts (shared_w1 [S, 2I, H] fp8 and the three others; S is taken
 * from the shape) become num_shared_experts and shared_*, and the workspace
 * is then sized with name_workspace_size_shared; batch_invariant is passed
 * on. Routing replay
 * (non-routed only): FlashInfer's routing_replay_out is int16 [N, top_k],
 * N >= T (a buffer sized for the largest batch; rows [0, T) are written);
 * the library writes int32 ids, so an int16 buffer gets them through an
 * int32 scratch tensor and one copy_ on the same stream (an int32 buffer,
 * an fp8moe extension, is written directly). routing_replay_weights_out
 * (fp8moe's, float32 [N, top_k]) receives the fp32 weights; fed back to
 * routed_moe with the int32 ids they give the same output bit for bit.
 */
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <climits>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include <fp8moe/fp8moe.h>

#include "fp8moe_torch_shapes.h"

#define FP8MOE_TORCH_DECLARE(i, E, K, H, I) FP8MOE_DECLARE(fp8moe_torch_i##i);
FP8MOE_TORCH_SHAPES(FP8MOE_TORCH_DECLARE)

namespace {

/* Error messages are put together with std::string and std::to_string, and
 * thrown as std::runtime_error (pybind11 raises RuntimeError), never
 * formatted through an iostream: on the GPU machine's image (g++ 13.3, torch
 * 2.11), inserting an integer into a std::ostringstream inside this
 * extension segfaulted in libstdc++'s number formatting (cuda-gdb backtrace:
 * ostream::_M_insert<long> -> codecvt::do_unshift, in this module), which
 * also covers TORCH_CHECK's own message building (c10::str is an
 * ostringstream). Strings were fine; numbers were not; the cause in that
 * toolchain was not pinned down, so no number goes through a stream here. */
std::string text(const char *s) { return s; }
std::string text(const std::string &s) { return s; }
template <class T, std::enable_if_t<std::is_integral_v<T>, int> = 0>
std::string text(T v) { return std::to_string(v); }
std::string text(at::IntArrayRef d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); i++) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}
std::string text(const at::Device &d) { return d.str(); }
std::string text(at::ScalarType t) { return c10::toString(t); }

template <class... A>
std::string cat(const A &...a) {
  std::string s;
  ((s += text(a)), ...);
  return s;
}

#define FP8MOE_TORCH_CHECK(cond, ...)                                   \
  do {                                                                  \
    if (!(cond)) throw std::runtime_error(cat(__VA_ARGS__));            \
  } while (0)

struct Instance {
  int E, K, H, I;
  size_t (*workspace_size)(int);
  size_t (*workspace_size_shared)(int, int);
  fp8moe_status (*run)(const fp8moe_args *, void *, size_t, fp8moe_stream);
  fp8moe_status (*run_routed)(const fp8moe_args *, void *, size_t, fp8moe_stream);
  fp8moe_status (*quantize)(const void *, int, void *, float *, fp8moe_stream);
};

#define FP8MOE_TORCH_ENTRY(i, E, K, H, I) \
  {E, K, H, I, fp8moe_torch_i##i##_workspace_size, fp8moe_torch_i##i##_workspace_size_shared, \
   fp8moe_torch_i##i##_run, fp8moe_torch_i##i##_run_routed, fp8moe_torch_i##i##_quantize_activations},
const Instance kInstances[] = {FP8MOE_TORCH_SHAPES(FP8MOE_TORCH_ENTRY)};

std::string shapes_text() {
  std::string s;
  for (const Instance &in : kInstances) s += cat(" (E=", in.E, ", K=", in.K, ", H=", in.H, ", I=", in.I, ")");
  return s;
}

const Instance &find_instance(int64_t E, int64_t K, int64_t H, int64_t I) {
  for (const Instance &in : kInstances)
    if (in.E == E && in.K == K && in.H == H && in.I == I) return in;
  FP8MOE_TORCH_CHECK(false, "fp8moe: no instantiation for num_experts=", E, ", top_k=", K, ", hidden_size=", H,
              ", intermediate_size=", I, "; this build has:", shapes_text(),
              ". Add the shape to fp8moe_torch.load(shapes=[...]).");
  return kInstances[0]; /* not reached: FP8MOE_TORCH_CHECK(false, ...) throws */
}

bool is_fp8(const at::Tensor &t) { return t.scalar_type() == at::kFloat8_e4m3fn || t.scalar_type() == at::kByte; }

/* device, dtype (by predicate), shape and contiguity of one argument */
template <class DtypeOk>
void check_arg(const at::Tensor &t, const char *name, const at::Device &dev, DtypeOk dtype_ok, const char *dtypes,
               std::vector<int64_t> shape) {
  FP8MOE_TORCH_CHECK(t.is_cuda() && t.device() == dev, "fp8moe: ", name, " must be on ", dev, " (hidden_states' device), is on ",
              t.device());
  FP8MOE_TORCH_CHECK(dtype_ok(t), "fp8moe: ", name, " must be ", dtypes, ", is ", t.scalar_type());
  FP8MOE_TORCH_CHECK(t.sizes() == at::IntArrayRef(shape), "fp8moe: ", name, " must have shape ", text(shape), ", has ",
              text(t.sizes()));
  FP8MOE_TORCH_CHECK(t.is_contiguous(), "fp8moe: ", name, " must be contiguous (row-major)");
}

auto fp8_ok = [](const at::Tensor &t) { return is_fp8(t); };
auto f32_ok = [](const at::Tensor &t) { return t.scalar_type() == at::kFloat; };
auto f32_bf16_ok = [](const at::Tensor &t) {
  return t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16;
};
auto i32_ok = [](const at::Tensor &t) { return t.scalar_type() == at::kInt; };
auto i16_i32_ok = [](const at::Tensor &t) { return t.scalar_type() == at::kShort || t.scalar_type() == at::kInt; };
auto bf16_ok = [](const at::Tensor &t) { return t.scalar_type() == at::kBFloat16; };

fp8moe_dtype dtype_of(const at::Tensor &t) {
  return t.scalar_type() == at::kBFloat16 ? FP8MOE_DTYPE_BF16 : FP8MOE_DTYPE_FP32;
}

/* What both entry points share: the activations, the weights, the output. */
struct Common {
  const Instance *inst;
  at::Device dev;
  int T;
  int S;  /* shared experts */
  at::Tensor output;
  fp8moe_args args;
};

Common prepare(const at::Tensor &hidden_states, const at::Tensor &hidden_states_scale, const at::Tensor &gemm1_weights,
               const at::Tensor &gemm1_weights_scale, const at::Tensor &gemm2_weights,
               const at::Tensor &gemm2_weights_scale, int64_t num_experts, int64_t top_k, int64_t intermediate_size,
               int64_t local_expert_offset, int64_t local_num_experts, bool enable_pdl,
               const std::optional<at::Tensor> &output) {
  FP8MOE_TORCH_CHECK(hidden_states.is_cuda(), "fp8moe: hidden_states must be a CUDA tensor");
  FP8MOE_TORCH_CHECK(hidden_states.dim() == 2, "fp8moe: hidden_states must be [num_tokens, hidden_size], has shape ",
              text(hidden_states.sizes()));
  const int64_t T = hidden_states.size(0), H = hidden_states.size(1), I = intermediate_size, El = local_num_experts;
  FP8MOE_TORCH_CHECK(T <= INT_MAX, "fp8moe: too many tokens (", T, ")");
  const Instance &inst = find_instance(num_experts, top_k, H, I);
  FP8MOE_TORCH_CHECK(local_expert_offset >= 0 && El >= 1 && local_expert_offset + El <= num_experts,
              "fp8moe: local experts [", local_expert_offset, ", ", local_expert_offset + El, ") are not inside [0, ",
              num_experts, ")");
  const at::Device dev = hidden_states.device();
  check_arg(hidden_states, "hidden_states", dev, fp8_ok, "float8_e4m3fn", {T, H});
  check_arg(hidden_states_scale, "hidden_states_scale", dev, f32_ok, "float32", {H / 128, T});
  check_arg(gemm1_weights, "gemm1_weights", dev, fp8_ok, "float8_e4m3fn", {El, 2 * I, H});
  check_arg(gemm1_weights_scale, "gemm1_weights_scale", dev, f32_ok, "float32", {El, 2 * I / 128, H / 128});
  check_arg(gemm2_weights, "gemm2_weights", dev, fp8_ok, "float8_e4m3fn", {El, H, I});
  check_arg(gemm2_weights_scale, "gemm2_weights_scale", dev, f32_ok, "float32", {El, H / 128, I / 128});

  at::Tensor out;
  if (output.has_value()) {
    out = *output;
    check_arg(out, "output", dev, bf16_ok, "bfloat16", {T, H});
  } else {
    out = at::empty({T, H}, hidden_states.options().dtype(at::kBFloat16));
  }

  Common c{&inst, dev, (int)T, 0, out, {}};
  fp8moe_args &a = c.args;
  a.num_tokens = (int)T;
  a.local_expert_offset = (int)local_expert_offset;
  a.local_num_experts = (int)El;
  a.hidden_states = hidden_states.data_ptr();
  a.hidden_states_scale = hidden_states_scale.data_ptr<float>();
  a.w1 = gemm1_weights.data_ptr();
  a.w1_scale = gemm1_weights_scale.data_ptr<float>();
  a.w2 = gemm2_weights.data_ptr();
  a.w2_scale = gemm2_weights_scale.data_ptr<float>();
  a.output = out.data_ptr();
  a.enable_pdl = enable_pdl ? 1 : 0;
  return c;
}

/* The 0.3 fields both entry points take (SPEC section 5.1): the SwiGLU
 * variant per local expert, the shared experts, batch invariance. */
void apply_0_3(Common &c, const std::optional<at::Tensor> &gemm1_alpha, const std::optional<at::Tensor> &gemm1_beta,
               const std::optional<at::Tensor> &gemm1_clamp_limit, const std::optional<at::Tensor> &shared_w1,
               const std::optional<at::Tensor> &shared_w1_scale, const std::optional<at::Tensor> &shared_w2,
               const std::optional<at::Tensor> &shared_w2_scale, bool batch_invariant) {
  fp8moe_args &a = c.args;
  const int64_t El = a.local_num_experts, H = c.inst->H, I = c.inst->I;
  /* FlashInfer's shape is [local_num_experts + num_fused_shared_experts]; fused shared experts are not
   * taken here, so it is [local_num_experts]: the routed local experts, in order */
  if (gemm1_alpha.has_value()) {
    check_arg(*gemm1_alpha, "gemm1_alpha", c.dev, f32_ok, "float32", {El});
    a.swiglu_alpha = gemm1_alpha->data_ptr<float>();
  }
  if (gemm1_beta.has_value()) {
    check_arg(*gemm1_beta, "gemm1_beta", c.dev, f32_ok, "float32", {El});
    a.swiglu_beta = gemm1_beta->data_ptr<float>();
  }
  if (gemm1_clamp_limit.has_value()) {
    check_arg(*gemm1_clamp_limit, "gemm1_clamp_limit", c.dev, f32_ok, "float32", {El});
    a.swiglu_limit = gemm1_clamp_limit->data_ptr<float>();
  }
  const int given = (int)shared_w1.has_value() + (int)shared_w1_scale.has_value() + (int)shared_w2.has_value() +
                    (int)shared_w2_scale.has_value();
  FP8MOE_TORCH_CHECK(given == 0 || given == 4,
                     "fp8moe: shared experts need all four of shared_w1, shared_w1_scale, shared_w2, shared_w2_scale");
  if (given == 4) {
    FP8MOE_TORCH_CHECK(shared_w1->dim() == 3, "fp8moe: shared_w1 must be [num_shared_experts, 2 * intermediate_size, "
                       "hidden_size], has shape ", text(shared_w1->sizes()));
    const int64_t S = shared_w1->size(0);
    FP8MOE_TORCH_CHECK(S >= 0 && S <= FP8MOE_MAX_SHARED_EXPERTS, "fp8moe: ", S, " shared experts; at most ",
                       FP8MOE_MAX_SHARED_EXPERTS, " are supported");
    check_arg(*shared_w1, "shared_w1", c.dev, fp8_ok, "float8_e4m3fn", {S, 2 * I, H});
    check_arg(*shared_w1_scale, "shared_w1_scale", c.dev, f32_ok, "float32", {S, 2 * I / 128, H / 128});
    check_arg(*shared_w2, "shared_w2", c.dev, fp8_ok, "float8_e4m3fn", {S, H, I});
    check_arg(*shared_w2_scale, "shared_w2_scale", c.dev, f32_ok, "float32", {S, H / 128, I / 128});
    if (S > 0) { /* an empty [0, ...] set means none */
      c.S = (int)S;
      a.num_shared_experts = (int)S;
      a.shared_w1 = shared_w1->data_ptr();
      a.shared_w1_scale = shared_w1_scale->data_ptr<float>();
      a.shared_w2 = shared_w2->data_ptr();
      a.shared_w2_scale = shared_w2_scale->data_ptr<float>();
    }
  }
  a.batch_invariant = batch_invariant ? 1 : 0;
}

/* Allocate the workspace on the current stream (caching allocator) and run. */
at::Tensor launch(Common &c, bool routed) {
  const c10::cuda::CUDAGuard guard(c.dev);
  cudaStream_t stream = at::cuda::getCurrentCUDAStream(c.dev.index()).stream();
  void *ws = nullptr;
  size_t bytes = 0;
  at::Tensor ws_tensor;
  if (c.T > 0) {
    bytes = c.S > 0 ? c.inst->workspace_size_shared(c.T, c.S) : c.inst->workspace_size(c.T);
    /* the allocator's blocks are 512-byte aligned; round up anyway, the
     * library wants FP8MOE_WORKSPACE_ALIGN */
    ws_tensor = at::empty({(int64_t)(bytes + FP8MOE_WORKSPACE_ALIGN)},
                          at::TensorOptions().dtype(at::kByte).device(c.dev));
    uintptr_t p = reinterpret_cast<uintptr_t>(ws_tensor.data_ptr());
    p = (p + FP8MOE_WORKSPACE_ALIGN - 1) / FP8MOE_WORKSPACE_ALIGN * FP8MOE_WORKSPACE_ALIGN;
    ws = reinterpret_cast<void *>(p);
  }
  fp8moe_status s = routed ? c.inst->run_routed(&c.args, ws, bytes, stream) : c.inst->run(&c.args, ws, bytes, stream);
  FP8MOE_TORCH_CHECK(s == FP8MOE_OK, "fp8moe: ", fp8moe_status_string(s));
  return c.output;
}

at::Tensor moe(const at::Tensor &routing_logits, const std::optional<at::Tensor> &routing_bias,
               const at::Tensor &hidden_states, const at::Tensor &hidden_states_scale, const at::Tensor &gemm1_weights,
               const at::Tensor &gemm1_weights_scale, const at::Tensor &gemm2_weights,
               const at::Tensor &gemm2_weights_scale, int64_t num_experts, int64_t top_k, int64_t n_group,
               int64_t topk_group, int64_t intermediate_size, int64_t local_expert_offset, int64_t local_num_experts,
               double routed_scaling_factor, int64_t routing_method_type, bool enable_pdl,
               const std::optional<at::Tensor> &output, const std::optional<at::Tensor> &gemm1_alpha,
               const std::optional<at::Tensor> &gemm1_beta, const std::optional<at::Tensor> &gemm1_clamp_limit,
               const std::optional<at::Tensor> &routing_replay_out,
               const std::optional<at::Tensor> &routing_replay_weights_out,
               const std::optional<at::Tensor> &shared_w1, const std::optional<at::Tensor> &shared_w1_scale,
               const std::optional<at::Tensor> &shared_w2, const std::optional<at::Tensor> &shared_w2_scale,
               bool batch_invariant) {
  Common c = prepare(hidden_states, hidden_states_scale, gemm1_weights, gemm1_weights_scale, gemm2_weights,
                     gemm2_weights_scale, num_experts, top_k, intermediate_size, local_expert_offset,
                     local_num_experts, enable_pdl, output);
  apply_0_3(c, gemm1_alpha, gemm1_beta, gemm1_clamp_limit, shared_w1, shared_w1_scale, shared_w2, shared_w2_scale,
            batch_invariant);
  check_arg(routing_logits, "routing_logits", c.dev, f32_bf16_ok, "float32 or bfloat16", {c.T, num_experts});
  fp8moe_args &a = c.args;
  a.routing_method = (int)routing_method_type;
  a.routing_logits = routing_logits.data_ptr();
  a.logits_dtype = dtype_of(routing_logits);
  if (routing_bias.has_value()) {
    check_arg(*routing_bias, "routing_bias", c.dev, f32_bf16_ok, "float32 or bfloat16", {num_experts});
    a.routing_bias = routing_bias->data_ptr();
    a.bias_dtype = dtype_of(*routing_bias);
  }
  a.n_group = (int)n_group;
  a.topk_group = (int)topk_group;
  a.routed_scaling_factor = (float)routed_scaling_factor;

  /* Routing replay. FlashInfer's routing_replay_out: int16, 2-D, [N, top_k] with N >= T (FlashInfer leaves N
   * unchecked so that one buffer sized for the largest batch serves every step of a CUDA graph; here N < T is
   * refused, since rows [0, T) are written), contiguous, on hidden_states' device: the global ids of the
   * chosen experts, slot order = selection order. */
  at::Tensor replay_ids32;  /* the library's int32 ids, when the caller's buffer is int16 */
  if (routing_replay_out.has_value()) {
    const at::Tensor &r = *routing_replay_out;
    FP8MOE_TORCH_CHECK(r.is_cuda() && r.device() == c.dev, "fp8moe: routing_replay_out must be on ", c.dev,
                       " (hidden_states' device), is on ", r.device());
    FP8MOE_TORCH_CHECK(i16_i32_ok(r), "fp8moe: routing_replay_out must be int16 (as in FlashInfer) or int32, is ",
                       r.scalar_type());
    FP8MOE_TORCH_CHECK(r.dim() == 2 && r.size(1) == top_k && r.size(0) >= c.T,
                       "fp8moe: routing_replay_out must have shape [N, top_k] with N >= num_tokens = ", c.T,
                       ", top_k = ", top_k, "; has ", text(r.sizes()));
    FP8MOE_TORCH_CHECK(r.is_contiguous(), "fp8moe: routing_replay_out must be contiguous (row-major)");
    if (c.T > 0) {
      if (r.scalar_type() == at::kInt) {
        a.topk_ids_out = r.data_ptr<int32_t>();
      } else {
        replay_ids32 = at::empty({(int64_t)c.T, top_k}, r.options().dtype(at::kInt));
        a.topk_ids_out = replay_ids32.data_ptr<int32_t>();
      }
    }
  }
  if (routing_replay_weights_out.has_value()) {
    const at::Tensor &w = *routing_replay_weights_out;
    FP8MOE_TORCH_CHECK(w.is_cuda() && w.device() == c.dev, "fp8moe: routing_replay_weights_out must be on ", c.dev,
                       " (hidden_states' device), is on ", w.device());
    FP8MOE_TORCH_CHECK(f32_ok(w), "fp8moe: routing_replay_weights_out must be float32, is ", w.scalar_type());
    FP8MOE_TORCH_CHECK(w.dim() == 2 && w.size(1) == top_k && w.size(0) >= c.T,
                       "fp8moe: routing_replay_weights_out must have shape [N, top_k] with N >= num_tokens = ", c.T,
                       ", top_k = ", top_k, "; has ", text(w.sizes()));
    FP8MOE_TORCH_CHECK(w.is_contiguous(), "fp8moe: routing_replay_weights_out must be contiguous (row-major)");
    if (c.T > 0) a.topk_weights_out = w.data_ptr<float>();
  }

  at::Tensor out = launch(c, false);
  if (replay_ids32.defined()) {
    /* int32 -> int16 on the current stream, after the run (graph-capturable; ids < 512 fit) */
    const c10::cuda::CUDAGuard guard(c.dev);
    routing_replay_out->narrow(0, 0, (int64_t)c.T).copy_(replay_ids32);
  }
  return out;
}

at::Tensor routed_moe(const std::optional<at::Tensor> &topk_packed, const std::optional<at::Tensor> &topk_ids,
                      const std::optional<at::Tensor> &topk_weights, const at::Tensor &hidden_states,
                      const at::Tensor &hidden_states_scale, const at::Tensor &gemm1_weights,
                      const at::Tensor &gemm1_weights_scale, const at::Tensor &gemm2_weights,
                      const at::Tensor &gemm2_weights_scale, int64_t num_experts, int64_t top_k,
                      int64_t intermediate_size, int64_t local_expert_offset, int64_t local_num_experts,
                      bool enable_pdl, const std::optional<at::Tensor> &output,
                      const std::optional<at::Tensor> &gemm1_alpha, const std::optional<at::Tensor> &gemm1_beta,
                      const std::optional<at::Tensor> &gemm1_clamp_limit, const std::optional<at::Tensor> &shared_w1,
                      const std::optional<at::Tensor> &shared_w1_scale, const std::optional<at::Tensor> &shared_w2,
                      const std::optional<at::Tensor> &shared_w2_scale, bool batch_invariant) {
  Common c = prepare(hidden_states, hidden_states_scale, gemm1_weights, gemm1_weights_scale, gemm2_weights,
                     gemm2_weights_scale, num_experts, top_k, intermediate_size, local_expert_offset,
                     local_num_experts, enable_pdl, output);
  apply_0_3(c, gemm1_alpha, gemm1_beta, gemm1_clamp_limit, shared_w1, shared_w1_scale, shared_w2, shared_w2_scale,
            batch_invariant);
  fp8moe_args &a = c.args;
  FP8MOE_TORCH_CHECK(topk_packed.has_value() != (topk_ids.has_value() || topk_weights.has_value()),
              "fp8moe: give either the packed top-k tensor or the (topk_ids, topk_weights) pair");
  if (topk_packed.has_value()) {
    check_arg(*topk_packed, "topk_ids (packed)", c.dev, i32_ok, "int32", {c.T, top_k});
    a.topk_packed = topk_packed->data_ptr<int32_t>();
  } else {
    FP8MOE_TORCH_CHECK(topk_ids.has_value() && topk_weights.has_value(), "fp8moe: topk_ids needs topk_weights");
    check_arg(*topk_ids, "topk_ids", c.dev, i32_ok, "int32", {c.T, top_k});
    check_arg(*topk_weights, "topk_weights", c.dev, f32_bf16_ok, "float32 or bfloat16", {c.T, top_k});
    a.topk_ids = topk_ids->data_ptr<int32_t>();
    a.topk_weights = topk_weights->data_ptr();
    a.topk_weights_dtype = dtype_of(*topk_weights);
  }
  return launch(c, true);
}

/* bf16 [T, H] -> (fp8 [T, H], fp32 scales [H/128, T]), by any instantiation
 * with this H (the quantizer depends on H only). */
std::tuple<at::Tensor, at::Tensor> quantize_activations(const at::Tensor &x) {
  FP8MOE_TORCH_CHECK(x.is_cuda() && x.dim() == 2, "fp8moe: x must be a CUDA tensor [num_tokens, hidden_size]");
  const int64_t T = x.size(0), H = x.size(1);
  FP8MOE_TORCH_CHECK(T <= INT_MAX, "fp8moe: too many tokens (", T, ")");
  const Instance *inst = nullptr;
  for (const Instance &in : kInstances)
    if (in.H == H) inst = &in;
  FP8MOE_TORCH_CHECK(inst, "fp8moe: no instantiation with hidden_size=", H, "; this build has:", shapes_text());
  check_arg(x, "x", x.device(), bf16_ok, "bfloat16", {T, H});
  at::Tensor q = at::empty({T, H}, x.options().dtype(at::kFloat8_e4m3fn));
  at::Tensor scale = at::empty({H / 128, T}, x.options().dtype(at::kFloat));
  const c10::cuda::CUDAGuard guard(x.device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream(x.device().index()).stream();
  fp8moe_status s = inst->quantize(x.data_ptr(), (int)T, q.data_ptr(), scale.data_ptr<float>(), stream);
  FP8MOE_TORCH_CHECK(s == FP8MOE_OK, "fp8moe: ", fp8moe_status_string(s));
  return {q, scale};
}

std::vector<std::tuple<int, int, int, int>> instances() {
  std::vector<std::tuple<int, int, int, int>> v;
  for (const Instance &in : kInstances) v.emplace_back(in.E, in.K, in.H, in.I);
  return v;
}

int64_t workspace_size(int64_t E, int64_t K, int64_t H, int64_t I, int64_t max_tokens, int64_t num_shared_experts) {
  FP8MOE_TORCH_CHECK(max_tokens >= 0 && max_tokens <= INT_MAX, "fp8moe: max_tokens out of range");
  FP8MOE_TORCH_CHECK(num_shared_experts >= 0 && num_shared_experts <= FP8MOE_MAX_SHARED_EXPERTS,
                     "fp8moe: num_shared_experts out of range [0, ", FP8MOE_MAX_SHARED_EXPERTS, "]");
  const Instance &in = find_instance(E, K, H, I);
  return (int64_t)(num_shared_experts > 0 ? in.workspace_size_shared((int)max_tokens, (int)num_shared_experts)
                                          : in.workspace_size((int)max_tokens));
}

} // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fp8moe: FP8 block-scale fused MoE (see fp8moe_torch.py for the FlashInfer-compatible signatures)";
  m.def("moe", &moe, "non-routed: router logits + routing method", py::arg("routing_logits"),
        py::arg("routing_bias"), py::arg("hidden_states"), py::arg("hidden_states_scale"), py::arg("gemm1_weights"),
        py::arg("gemm1_weights_scale"), py::arg("gemm2_weights"), py::arg("gemm2_weights_scale"),
        py::arg("num_experts"), py::arg("top_k"), py::arg("n_group"), py::arg("topk_group"),
        py::arg("intermediate_size"), py::arg("local_expert_offset"), py::arg("local_num_experts"),
        py::arg("routed_scaling_factor"), py::arg("routing_method_type"), py::arg("enable_pdl"), py::arg("output"),
        py::arg("gemm1_alpha") = py::none(), py::arg("gemm1_beta") = py::none(),
        py::arg("gemm1_clamp_limit") = py::none(), py::arg("routing_replay_out") = py::none(),
        py::arg("routing_replay_weights_out") = py::none(), py::arg("shared_w1") = py::none(),
        py::arg("shared_w1_scale") = py::none(), py::arg("shared_w2") = py::none(),
        py::arg("shared_w2_scale") = py::none(), py::arg("batch_invariant") = false);
  m.def("routed_moe", &routed_moe, "routed: packed top-k, or ids + weights", py::arg("topk_packed"),
        py::arg("topk_ids"), py::arg("topk_weights"), py::arg("hidden_states"), py::arg("hidden_states_scale"),
        py::arg("gemm1_weights"), py::arg("gemm1_weights_scale"), py::arg("gemm2_weights"),
        py::arg("gemm2_weights_scale"), py::arg("num_experts"), py::arg("top_k"), py::arg("intermediate_size"),
        py::arg("local_expert_offset"), py::arg("local_num_experts"), py::arg("enable_pdl"), py::arg("output"),
        py::arg("gemm1_alpha") = py::none(), py::arg("gemm1_beta") = py::none(),
        py::arg("gemm1_clamp_limit") = py::none(), py::arg("shared_w1") = py::none(),
        py::arg("shared_w1_scale") = py::none(), py::arg("shared_w2") = py::none(),
        py::arg("shared_w2_scale") = py::none(), py::arg("batch_invariant") = false);
  m.def("quantize_activations", &quantize_activations,
        "bf16 [T, H] -> (float8_e4m3fn [T, H], float32 scales [H/128, T]), scale = max(amax/448, FLT_MIN)",
        py::arg("x"));
  m.def("instances", &instances, "the (E, K, H, I) shapes compiled in");
  m.def("workspace_size", &workspace_size, "bytes of workspace for max_tokens tokens (and num_shared_experts)",
        py::arg("num_experts"), py::arg("top_k"), py::arg("hidden_size"), py::arg("intermediate_size"),
        py::arg("max_tokens"), py::arg("num_shared_experts") = 0);
  m.def("status_string", [](int s) { return std::string(fp8moe_status_string((fp8moe_status)s)); });
}
