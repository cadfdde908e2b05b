"""fp8moe_torch - fp8moe's FP8 block-scale fused MoE layer for PyTorch, with
FlashInfer's call signatures.

    import sys; sys.path.insert(0, "<fp8moe>/examples/torch")
    import fp8moe_torch as fm
    fm.load()        # JIT build (cached): DeepSeek-V3 and a small shape, for this GPU
    out = fm.trtllm_fp8_block_scale_moe(
        routing_logits, routing_bias, hidden_states, hidden_states_scale,
        gemm1_weights, gemm1_weights_scale, gemm2_weights, gemm2_weights_scale,
        num_experts=256, top_k=8, n_group=8, topk_group=4, intermediate_size=2048,
        local_expert_offset=0, local_num_experts=256, routed_scaling_factor=2.5,
        routing_method_type=2)                               # DeepSeekV3

``trtllm_fp8_block_scale_moe`` and ``trtllm_fp8_block_scale_routed_moe`` take
the arguments of FlashInfer's functions of the same names (``flashinfer.
fused_moe``), in the same order, with the same tensor layouts, so code written
for FlashInfer (which runs them on Blackwell only) switches with one import.
``moe`` and ``routed_moe`` are the same functions under short names.

Layouts (SPEC section 1): hidden_states float8_e4m3fn [T, H]; hidden_states_scale
float32 [H/128, T] (transposed); gemm1_weights float8_e4m3fn [E_loc, 2I, H]
(rows [0, I) up, [I, 2I) gate); gemm1_weights_scale float32 [E_loc, 2I/128,
H/128]; gemm2_weights [E_loc, H, I]; gemm2_weights_scale [E_loc, H/128, I/128];
routing_logits float32 or bfloat16 [T, E]; routing_bias float32 or bfloat16 [E]
or None. Routed: topk_ids is int32 [T, K] packed ((id << 16) | bf16 bits of the
weight, see pack_topk) or a pair (int32 ids [T, K], float32/bfloat16 weights
[T, K]). The result is a new bfloat16 [T, H] tensor (or ``output``, filled).

Taken as in FlashInfer (fp8moe 0.3, SPEC section 5.1):
  - gemm1_alpha, gemm1_beta, gemm1_clamp_limit: float32 [local_num_experts]
    CUDA tensors or None (defaults 1, 0, no clamp), per local expert: with
    gate = GEMM1 rows [I, 2I) and up = rows [0, I), g = min(gate, limit),
    u = clamp(up, -limit, limit), a = g * sigmoid(alpha * g) * (u + beta).
    (FlashInfer's shape is [local_num_experts + num_fused_shared_experts];
    fused shared experts are not taken here, see below.) Both entry points.
  - routing_replay_out (non-routed): as FlashInfer has it, an int16 CUDA
    tensor [N, top_k], N >= T (one buffer sized for the largest batch can
    serve every call; FlashInfer does not check N, fp8moe refuses N < T),
    contiguous; rows [0, T) receive the global ids of the chosen experts in
    selection order. An int32 tensor is accepted too and is written directly.
Added by fp8moe (keyword-only):
  - routing_replay_weights_out (non-routed): float32 [N, top_k], N >= T: the
    fp32 routing weights (routed_scaling_factor applied). The int32 ids and
    these weights, given back to trtllm_fp8_block_scale_routed_moe as the
    pair (ids, weights), reproduce the output bit for bit.
  - shared_w1 float8_e4m3fn [S, 2I, H], shared_w1_scale float32 [S, 2I/128,
    H/128], shared_w2 [S, H, I], shared_w2_scale [S, H/128, I/128] (all four
    or none; S <= 8 from the shape): shared experts every token takes with
    weight 1, added after the routed experts before the bf16 rounding. Under
    expert parallelism pass them on one rank only. Both entry points.
  - batch_invariant (bool): a token's output row is bitwise independent of
    the rest of the batch (and of T). Both entry points.

What does not apply is accepted with its default meaning and refused
otherwise, with a ValueError / NotImplementedError that says why:
use_shuffled_weight (must be False: plain row-major weights), weight_layout
(0, MajorK, only), do_finalize (True only), fp8_quantization_type
(DeepSeekFp8 only), activation_type (Swiglu only), num_fused_shared_experts
(None or 0: pass the shared experts' weights as shared_w1... instead), the
bias tensors gemm1_bias / gemm2_bias, and the routed path's gemm1_lora_delta
(None only); norm_topk_prob=False is refused for
the methods that normalize. tune_max_num_tokens (no autotuner here) and
tile_tokens_dim (older FlashInfer; keyword only here) are ignored. enable_pdl
is passed on (None: on for compute capability 9.0 and newer, as FlashInfer
does). The routed entry point takes routing_bias, n_group, topk_group,
routed_scaling_factor and routing_method_type for signature compatibility and
ignores them: routed weights are used exactly as given (SPEC section 3).

Each call allocates its output and workspace with PyTorch's caching allocator
and runs on the current CUDA stream, with no host synchronization (CUDA-graph
capturable). A bad argument raises before anything runs; a status from the
library other than FP8MOE_OK raises a RuntimeError with its reason string.

Build: load() writes one .cu per (E, K, H, I) shape (FP8MOE_DEFINE) and
compiles them with torch.utils.cpp_extension.load for the architectures in
FP8MOE_TORCH_ARCHS or TORCH_CUDA_ARCH_LIST (e.g. "9.0a"; "9.0a" is what turns
on the Hopper wgmma/TMA path), else the current GPU's (9.0 -> 9.0a). A shape
not compiled in raises a RuntimeError listing the ones that are.
"""

import enum
import hashlib
import os
import pathlib
import re

import torch

HERE = pathlib.Path(__file__).resolve().parent
INCLUDE_DIR = pathlib.Path(os.environ.get("FP8MOE_INCLUDE", HERE.parent.parent / "include")).resolve()

DEEPSEEK_V3 = (256, 8, 7168, 2048)  # (num_experts, top_k, hidden_size, intermediate_size)
SMALL = (32, 4, 1024, 512)          # a quick-test shape
DEFAULT_SHAPES = (DEEPSEEK_V3, SMALL)


class RoutingMethodType(enum.IntEnum):
    """FlashInfer's values (SPEC section 4)."""
    Default = 0           # top-K of softmax(logits); weight = probability
    Renormalize = 1       # top-K of logits; softmax over the K chosen
    DeepSeekV3 = 2        # sigmoid + bias, groups, routed_scaling_factor
    Llama4 = 3            # K = 1: argmax; weight = sigmoid(logit)
    RenormalizeNaive = 4  # top-K of softmax, renormalized
    TopK = 5              # top-K of logits; weight = the logit


_WEIGHT_LAYOUT_MAJOR_K = 0
_FP8_QUANTIZATION_DEEPSEEK = 1  # FlashInfer's Fp8QuantizationType.DeepSeekFp8
_ACTIVATION_SWIGLU = 3          # FlashInfer's ActivationType.Swiglu
_NORMALIZING_METHODS = (RoutingMethodType.Renormalize, RoutingMethodType.DeepSeekV3,
                        RoutingMethodType.RenormalizeNaive)

_module = None


def _library_version():
    text = (INCLUDE_DIR / "fp8moe" / "fp8moe.h").read_text()
    m = re.search(r'#define FP8MOE_VERSION_STRING "([^"]+)"', text)
    return m.group(1) if m else "unknown"


def _archs():
    """Architectures as nvcc spells them ("90a", "89", "100a")."""
    env = os.environ.get("FP8MOE_TORCH_ARCHS") or os.environ.get("TORCH_CUDA_ARCH_LIST")
    if env:
        archs = [a.replace("+PTX", "").replace(".", "").lower() for a in re.split(r"[;,\s]+", env.strip()) if a]
    else:
        major, minor = torch.cuda.get_device_capability()
        archs = [f"{major}{minor}" + ("a" if (major, minor) == (9, 0) else "")]
    for a in archs:
        if not re.fullmatch(r"\d+[af]?", a) or int(re.match(r"\d+", a).group()) < 89:
            raise ValueError(f"fp8moe needs FP8 tensor cores (sm_89 or newer); cannot build for '{a}'")
    return archs


def _write_if_changed(path, text):
    path = pathlib.Path(path)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def load(shapes=DEFAULT_SHAPES, archs=None, build_directory=None, verbose=False):
    """Build (once; torch caches it) and load the extension for these
    (num_experts, top_k, hidden_size, intermediate_size) shapes. Returns the
    compiled module; the functions of this file use the last one loaded."""
    global _module
    shapes = tuple(tuple(int(v) for v in s) for s in shapes)
    for E, K, H, I in shapes:
        if not (1 <= E <= 512 and 1 <= K <= min(E, 16) and H > 0 and H % 128 == 0 and I > 0 and I % 128 == 0):
            raise ValueError(f"fp8moe cannot be instantiated for E={E}, K={K}, H={H}, I={I}: "
                             "E in [1, 512], K in [1, min(E, 16)], H and I positive multiples of 128")
    archs = list(archs) if archs else _archs()
    tag = hashlib.sha1(repr((shapes, archs, _library_version())).encode()).hexdigest()[:12]
    name = f"fp8moe_torch_{tag}"
    root = build_directory or os.environ.get("FP8MOE_TORCH_BUILD") or pathlib.Path.home() / ".cache" / "fp8moe_torch"
    build_dir = pathlib.Path(root) / name
    build_dir.mkdir(parents=True, exist_ok=True)

    # one translation unit per shape: ninja compiles them in parallel
    table = " ".join(f"X({i}, {E}, {K}, {H}, {I})" for i, (E, K, H, I) in enumerate(shapes))
    _write_if_changed(build_dir / "fp8moe_torch_shapes.h",
                      "/* generated by fp8moe_torch.py: the shapes compiled in, X(index, E, K, H, I) */\n"
                      f"#define FP8MOE_TORCH_SHAPES(X) {table}\n")
    sources = [str(HERE / "fp8moe_torch.cpp")]
    for i, (E, K, H, I) in enumerate(shapes):
        cu = build_dir / f"fp8moe_torch_i{i}.cu"
        _write_if_changed(cu, "/* generated by fp8moe_torch.py */\n#include <fp8moe/fp8moe.cuh>\n"
                              f"FP8MOE_DEFINE(fp8moe_torch_i{i}, {E}, {K}, {H}, {I});\n")
        sources.append(str(cu))

    from torch.utils import cpp_extension
    # explicit -gencode flags: cpp_extension then adds no arch flags of its
    # own, so "90a" (wgmma, TMA) is not lost to a plain sm_90 build
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    _module = cpp_extension.load(
        name=name,
        sources=sources,
        extra_include_paths=[str(INCLUDE_DIR), str(build_dir)],
        extra_cflags=["-O2"],
        extra_cuda_cflags=["-O3", "-std=c++17"] + gencode,
        build_directory=str(build_dir),
        verbose=verbose,
    )
    return _module


def _ext():
    return _module if _module is not None else load()


def instances():
    """The (E, K, H, I) shapes compiled into the loaded extension."""
    return [tuple(s) for s in _ext().instances()]


def workspace_size(num_experts, top_k, hidden_size, intermediate_size, max_tokens, num_shared_experts=0):
    """Bytes of device workspace a call with max_tokens tokens (and
    num_shared_experts shared experts) allocates."""
    return _ext().workspace_size(num_experts, top_k, hidden_size, intermediate_size, max_tokens,
                                 num_shared_experts)


def quantize_activations(x):
    """bfloat16 [T, H] -> (float8_e4m3fn [T, H], float32 scales [H/128, T]),
    scale = max(amax / 448, FLT_MIN) per token and 128 columns."""
    return _ext().quantize_activations(x)


def pack_topk(ids, weights):
    """int32 [T, K] packed top-k: (id << 16) | bfloat16 bits of the weight.
    The weight half is masked to 16 bits, so negative weights keep their id."""
    bits = weights.to(torch.bfloat16).view(torch.int16).to(torch.int32) & 0xFFFF
    return (ids.to(torch.int32) << 16) | bits


def _check_not_applicable(use_shuffled_weight, weight_layout, do_finalize, fp8_quantization_type, activation_type,
                          must_be_none):
    if use_shuffled_weight:
        raise ValueError("fp8moe: use_shuffled_weight=True (FlashInfer's shuffled weight layout for its Blackwell "
                         "kernels) is not supported; pass plain row-major [E, 2I, H] and [E, H, I] weights")
    if int(weight_layout) != _WEIGHT_LAYOUT_MAJOR_K:
        raise ValueError(f"fp8moe: weight_layout={int(weight_layout)} is not supported; only 0 (MajorK: "
                         "row-major [E, M, K] weights) is")
    if not do_finalize:
        raise NotImplementedError("fp8moe: do_finalize=False is not supported; the result is always the combined "
                                  "[T, H] output")
    if fp8_quantization_type is not None and int(fp8_quantization_type) != _FP8_QUANTIZATION_DEEPSEEK:
        raise ValueError(f"fp8moe: fp8_quantization_type={fp8_quantization_type!r} is not supported; only "
                         "DeepSeekFp8 (1x128 activation and 128x128 weight block scales) is")
    if activation_type is not None and int(activation_type) != _ACTIVATION_SWIGLU:
        raise ValueError(f"fp8moe: activation_type={activation_type!r} is not supported; only Swiglu (3) is")
    for arg, value in must_be_none.items():
        if value is not None and not (arg == "num_fused_shared_experts" and int(value) == 0):
            hint = (" and give the shared experts' weights as shared_w1, shared_w1_scale, shared_w2, "
                    "shared_w2_scale" if arg == "num_fused_shared_experts" else "")
            raise NotImplementedError(f"fp8moe: {arg} is not supported (pass None{hint})")


def _pdl(enable_pdl, x):
    """enable_pdl=None means on where the GPU has it (compute capability 9.0
    and newer), as in FlashInfer."""
    if enable_pdl is None:
        return x.is_cuda and torch.cuda.get_device_capability(x.device)[0] >= 9
    return bool(enable_pdl)


def trtllm_fp8_block_scale_moe(
    routing_logits, routing_bias, hidden_states, hidden_states_scale,
    gemm1_weights, gemm1_weights_scale, gemm2_weights, gemm2_weights_scale,
    num_experts, top_k, n_group, topk_group, intermediate_size,
    local_expert_offset, local_num_experts, routed_scaling_factor,
    routing_method_type=0, use_shuffled_weight=False, weight_layout=0, do_finalize=True,
    enable_pdl=None, tune_max_num_tokens=8192, fp8_quantization_type=None,
    num_fused_shared_experts=None, activation_type=None, norm_topk_prob=True,
    routing_replay_out=None, gemm1_alpha=None, gemm1_beta=None, gemm1_clamp_limit=None,
    gemm1_bias=None, gemm2_bias=None, output=None, *, tile_tokens_dim=None,
    routing_replay_weights_out=None, shared_w1=None, shared_w1_scale=None, shared_w2=None, shared_w2_scale=None,
    batch_invariant=False,
):
    """Non-routed: router logits in, the routing method picks the top-k
    (FlashInfer's trtllm_fp8_block_scale_moe). Returns bfloat16 [T, H].
    routing_replay_out (int16 or int32 [N >= T, top_k]) and
    routing_replay_weights_out (float32 [N >= T, top_k]) receive the chosen
    ids and weights when given."""
    _check_not_applicable(use_shuffled_weight, weight_layout, do_finalize, fp8_quantization_type, activation_type,
                          {"num_fused_shared_experts": num_fused_shared_experts,
                           "gemm1_bias": gemm1_bias, "gemm2_bias": gemm2_bias})
    method = int(routing_method_type)
    if method not in {m.value for m in RoutingMethodType}:
        raise NotImplementedError(f"fp8moe: routing_method_type={method} is not supported; supported: "
                                  + ", ".join(f"{m.value} ({m.name})" for m in RoutingMethodType))
    if not norm_topk_prob and method in _NORMALIZING_METHODS:
        raise NotImplementedError(f"fp8moe: norm_topk_prob=False is not supported with "
                                  f"{RoutingMethodType(method).name} routing (its weights are normalized)")
    return _ext().moe(
        routing_logits, routing_bias, hidden_states, hidden_states_scale,
        gemm1_weights, gemm1_weights_scale, gemm2_weights, gemm2_weights_scale,
        int(num_experts), int(top_k), 0 if n_group is None else int(n_group),
        0 if topk_group is None else int(topk_group), int(intermediate_size),
        int(local_expert_offset), int(local_num_experts),
        0.0 if routed_scaling_factor is None else float(routed_scaling_factor),  # 0 means 1.0
        method, _pdl(enable_pdl, hidden_states), output,
        gemm1_alpha=gemm1_alpha, gemm1_beta=gemm1_beta, gemm1_clamp_limit=gemm1_clamp_limit,
        routing_replay_out=routing_replay_out, routing_replay_weights_out=routing_replay_weights_out,
        shared_w1=shared_w1, shared_w1_scale=shared_w1_scale, shared_w2=shared_w2, shared_w2_scale=shared_w2_scale,
        batch_invariant=bool(batch_invariant))


def trtllm_fp8_block_scale_routed_moe(
    topk_ids, routing_bias, hidden_states, hidden_states_scale,
    gemm1_weights, gemm1_weights_scale, gemm2_weights, gemm2_weights_scale,
    num_experts, top_k, n_group, topk_group, intermediate_size,
    local_expert_offset, local_num_experts, routed_scaling_factor,
    routing_method_type=0, use_shuffled_weight=False, weight_layout=0, do_finalize=True,
    enable_pdl=None, gemm1_lora_delta=None, output=None, tune_max_num_tokens=8192,
    fp8_quantization_type=None, activation_type=None, gemm1_alpha=None, gemm1_beta=None,
    gemm1_clamp_limit=None, *, tile_tokens_dim=None,
    shared_w1=None, shared_w1_scale=None, shared_w2=None, shared_w2_scale=None, batch_invariant=False,
):
    """Routed: the top-k is given, packed int32 [T, K] or a pair (int32 ids,
    float32/bfloat16 weights), and used exactly as given (FlashInfer's
    trtllm_fp8_block_scale_routed_moe). routing_bias, n_group, topk_group,
    routed_scaling_factor and routing_method_type are ignored. Returns
    bfloat16 [T, H]."""
    _check_not_applicable(use_shuffled_weight, weight_layout, do_finalize, fp8_quantization_type, activation_type,
                          {"gemm1_lora_delta": gemm1_lora_delta})
    if isinstance(topk_ids, (tuple, list)):
        if len(topk_ids) != 2:
            raise ValueError("fp8moe: the unpacked top-k is a pair (topk_ids, topk_weights)")
        packed, ids, weights = None, topk_ids[0], topk_ids[1]
    else:
        packed, ids, weights = topk_ids, None, None
    return _ext().routed_moe(
        packed, ids, weights, hidden_states, hidden_states_scale,
        gemm1_weights, gemm1_weights_scale, gemm2_weights, gemm2_weights_scale,
        int(num_experts), int(top_k), int(intermediate_size),
        int(local_expert_offset), int(local_num_experts), _pdl(enable_pdl, hidden_states), output,
        gemm1_alpha=gemm1_alpha, gemm1_beta=gemm1_beta, gemm1_clamp_limit=gemm1_clamp_limit,
        shared_w1=shared_w1, shared_w1_scale=shared_w1_scale, shared_w2=shared_w2, shared_w2_scale=shared_w2_scale,
        batch_invariant=bool(batch_invariant))


moe = trtllm_fp8_block_scale_moe
routed_moe = trtllm_fp8_block_scale_routed_moe
