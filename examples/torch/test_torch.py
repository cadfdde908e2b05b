#!/usr/bin/env python3
"""test_torch.py - fp8moe's PyTorch extension against the plain-PyTorch
reference (reference.py), on fresh random data.

    python3 examples/torch/test_torch.py        # needs a CUDA GPU (sm_89+), torch, nvcc, ninja

Builds the extension (fp8moe_torch.load(): DeepSeek-V3 and a small shape),
then checks, each against reference.py with relative L2 error <= 1e-2 (SPEC
section 6) over the tokens whose routing is not ambiguous:
  - the non-routed layer (FlashInfer's trtllm_fp8_block_scale_moe) for every
    routing method at the small shape, and DeepSeekV3 / Renormalize routing
    at the DeepSeek-V3 shape, T = 16 and 512, fp32 and bf16 logits and bias;
  - an expert-parallel shard (local_expert_offset > 0), into a NaN-filled
    output= tensor: every element written, tokens without local experts 0;
  - the routed layer (trtllm_fp8_block_scale_routed_moe), packed top-k and
    the (ids, weights) pair with fp32 and bf16 weights;
  - the activation quantizer, bit for bit against the reference rule;
  - T = 0, a CUDA graph capture replayed on new data (equal to an eager
    run, bit for bit), and the errors: an unknown shape, the FlashInfer
    arguments that do not apply, a library status turned RuntimeError;
  - the 0.3 arguments (SPEC section 5.1): gemm1_alpha / gemm1_beta /
    gemm1_clamp_limit per expert with limits that clamp, on both entry
    points and an expert-parallel shard; routing_replay_out (int16, as in
    FlashInfer, and int32) with routing_replay_weights_out, replayed through
    the routed entry point bit for bit; shared experts (shared_w1...) on
    both entry points and split over two expert-parallel ranks; batch
    invariance of one probe token across batch sizes; a CUDA graph with all
    of them; their argument errors.
and times fp8moe against the reference implementation (CUDA events,
median). The seed is printed; FP8MOE_SEED=<n> repeats a run. The last line
is "N passed, N failed"; the exit status is 1 if anything failed.
"""

import os
import statistics
import sys
import time
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fp8moe_torch as fm  # noqa: E402
import reference as ref  # noqa: E402

FP8 = torch.float8_e4m3fn
DEV = "cuda"
TOL = 1e-2

results = []  # (ok, name, detail)
timings = []  # (name, fp8moe ms, reference ms)


def check(name, ok, detail=""):
    results.append((bool(ok), name, detail))
    print(f"{'PASS' if ok else 'FAIL'}  {name}  {detail}", flush=True)


def guarded(name, fn):
    """Run one test function; an exception is a failure of that test."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - report and go on
        traceback.print_exc()
        check(name, False, f"raised {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")


def expect_raise(name, exc_types, fn, must_contain):
    try:
        fn()
    except exc_types as e:
        msg = str(e)
        check(name, must_contain in msg, f"{type(e).__name__}: {msg.splitlines()[0][:150]}")
        return
    except Exception as e:  # noqa: BLE001
        check(name, False, f"raised {type(e).__name__} instead: {str(e)[:150]}")
        return
    check(name, False, "did not raise")


def time_ms(fn, warmup, iters):
    """Median time of fn on the current stream, CUDA events."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def rel_l2(out, expect, keep=None):
    o, r = out.float(), expect.float()
    if keep is not None:
        o, r = o[keep], r[keep]
    return ((o - r).norm() / r.norm().clamp(min=1e-30)).item()


class Weights:
    """Random fp8 weights of all E experts of one shape, with block scales."""

    def __init__(self, shape):
        E, K, H, I = shape
        self.E, self.K, self.H, self.I = shape
        self.w1 = torch.empty(E, 2 * I, H, dtype=FP8, device=DEV)
        self.w2 = torch.empty(E, H, I, dtype=FP8, device=DEV)
        for e in range(E):  # one expert at a time: the fp32 randn of all would not fit
            self.w1[e] = torch.randn(2 * I, H, device=DEV).to(FP8)
            self.w2[e] = torch.randn(H, I, device=DEV).to(FP8)
        self.w1s = (0.5 + torch.rand(E, 2 * I // 128, H // 128, device=DEV)) / H ** 0.5
        self.w2s = (0.5 + torch.rand(E, H // 128, I // 128, device=DEV)) / I ** 0.5

    def shard(self, offset, count):
        s = slice(offset, offset + count)
        return self.w1[s], self.w1s[s], self.w2[s], self.w2s[s]


def activations(T, H):
    x = torch.randn(T, H, device=DEV).to(FP8)
    xs = 0.25 + torch.rand(H // 128, T, device=DEV)
    return x, xs


def nonrouted_case(W, T, method, n_group=0, topk_group=0, scale=0.0, logits_dtype=torch.float32,
                   bias_dtype=None, offset=0, count=None, time_it=False, nan_output=False):
    E, K, H, I = W.E, W.K, W.H, W.I
    count = E if count is None else count
    name = (f"moe E={E} K={K} H={H} I={I} T={T} {fm.RoutingMethodType(method).name} "
            f"logits={str(logits_dtype)[6:]}" + (f" bias={str(bias_dtype)[6:]}" if bias_dtype else "")
            + (f" n_group={n_group}/{topk_group}" if n_group > 1 else "")
            + (f" EP {count}@{offset}" if count != E else ""))
    logits = (2 * torch.randn(T, E, device=DEV)).to(logits_dtype)
    bias = (0.5 * torch.randn(E, device=DEV)).to(bias_dtype) if bias_dtype else None
    x, xs = activations(T, H)
    w1, w1s, w2, w2s = W.shard(offset, count)
    output = torch.full((T, H), float("nan"), dtype=torch.bfloat16, device=DEV) if nan_output else None

    def run():
        return fm.trtllm_fp8_block_scale_moe(
            logits, bias, x, xs, w1, w1s, w2, w2s, num_experts=E, top_k=K, n_group=n_group or None,
            topk_group=topk_group or None, intermediate_size=I, local_expert_offset=offset,
            local_num_experts=count, routed_scaling_factor=scale or None, routing_method_type=method,
            output=output)

    def reference():
        return ref.layer(logits, bias, x, xs, w1, w1s, w2, w2s, K, n_group, topk_group, offset, scale, method)

    out = run()
    torch.cuda.synchronize()
    expect, ambiguous = reference()
    keep = ~ambiguous
    err = rel_l2(out, expect, keep)
    finite = bool(torch.isfinite(out).all())
    ok = err <= TOL and finite and (output is None or out.data_ptr() == output.data_ptr())
    detail = f"rel L2 {err:.3e}" + ("" if finite else ", NOT FINITE")
    if int(ambiguous.sum()):
        detail += f" ({int(ambiguous.sum())} of {T} tokens with ambiguous routing left out)"
    if count != E:  # tokens with no local slot: exact zeros
        ids, _, _ = ref.route(logits, bias, method, K, n_group, topk_group, scale)
        no_local = (((ids >= offset) & (ids < offset + count)).sum(-1) == 0) & keep
        zeros = bool((out[no_local] == 0).all())
        ok = ok and zeros
        detail += f", {int(no_local.sum())} tokens without local experts {'all 0' if zeros else 'NOT 0'}"
    check(name, ok, detail)
    if time_it:
        timings.append((name, time_ms(run, 3, 20), time_ms(reference, 1, 3)))


def routed_case(W, T, form, time_it=False):
    E, K, H, I = W.E, W.K, W.H, W.I
    name = f"routed_moe E={E} K={K} H={H} I={I} T={T} {form}"
    ids = torch.rand(T, E, device=DEV).argsort(dim=-1)[:, :K].to(torch.int32).contiguous()  # K distinct experts
    w = 0.05 + torch.rand(T, K, device=DEV) / K
    if form == "packed":
        topk = fm.pack_topk(ids, w)
        w_used = w.to(torch.bfloat16).float()  # what the packed form carries
    elif form == "ids+fp32 weights":
        topk, w_used = (ids, w), w
    else:
        wb = w.to(torch.bfloat16)
        topk, w_used = (ids, wb), wb.float()
    x, xs = activations(T, H)

    def run():
        return fm.trtllm_fp8_block_scale_routed_moe(
            topk, None, x, xs, W.w1, W.w1s, W.w2, W.w2s, num_experts=E, top_k=K, n_group=None, topk_group=None,
            intermediate_size=I, local_expert_offset=0, local_num_experts=E, routed_scaling_factor=None)

    def reference():
        return ref.moe(x, xs, W.w1, W.w1s, W.w2, W.w2s, ids, w_used, 0)

    out = run()
    torch.cuda.synchronize()
    err = rel_l2(out, reference())
    finite = bool(torch.isfinite(out).all())
    check(name, err <= TOL and finite, f"rel L2 {err:.3e}" + ("" if finite else ", NOT FINITE"))
    if time_it:
        timings.append((name, time_ms(run, 3, 20), time_ms(reference, 1, 3)))


def quantizer_case(T, H):
    x = (3 * torch.randn(T, H, device=DEV)).to(torch.bfloat16)
    q, s = fm.quantize_activations(x)
    rq, rs = ref.quantize_activations(x)
    same_q = bool(torch.equal(q.view(torch.uint8), rq.view(torch.uint8)))
    same_s = bool(torch.equal(s, rs))
    check(f"quantize_activations T={T} H={H}", same_q and same_s and q.shape == (T, H) and s.shape == (H // 128, T),
          f"fp8 codes {'equal' if same_q else 'DIFFER'}, scales {'equal' if same_s else 'DIFFER'}")


def empty_case(W):
    E, K, H, I = W.E, W.K, W.H, W.I
    x, xs = activations(0, H)
    out = fm.moe(torch.empty(0, E, device=DEV), None, x, xs, W.w1, W.w1s, W.w2, W.w2s, E, K, None, None, I, 0, E,
                 None, routing_method_type=1)
    outr = fm.routed_moe(torch.empty(0, K, dtype=torch.int32, device=DEV), None, x, xs, W.w1, W.w1s, W.w2, W.w2s,
                         E, K, None, None, I, 0, E, None)
    check("T=0 (moe and routed_moe)", out.shape == (0, H) and outr.shape == (0, H) and out.dtype == torch.bfloat16,
          f"shapes {tuple(out.shape)} {tuple(outr.shape)}")


def graph_case(W, T=64):
    """Capture a routed call in a CUDA graph, replay it on new data."""
    E, K, H, I = W.E, W.K, W.H, W.I

    def inputs():
        ids = torch.rand(T, E, device=DEV).argsort(dim=-1)[:, :K].to(torch.int32).contiguous()
        x, xs = activations(T, H)
        return fm.pack_topk(ids, 0.05 + torch.rand(T, K, device=DEV) / K), x, xs

    topk, x, xs = inputs()

    def run():
        return fm.routed_moe(topk, None, x, xs, W.w1, W.w1s, W.w2, W.w2s, E, K, None, None, I, 0, E, None)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture, as torch asks
        run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = run()
    new_topk, new_x, new_xs = inputs()
    topk.copy_(new_topk)
    x.copy_(new_x)
    xs.copy_(new_xs)
    graph.replay()
    torch.cuda.synchronize()
    eager = fm.routed_moe(new_topk, None, new_x, new_xs, W.w1, W.w1s, W.w2, W.w2s, E, K, None, None, I, 0, E, None)
    check(f"CUDA graph capture + replay on new data (T={T})", torch.equal(out, eager),
          "replay == eager run, bit for bit" if torch.equal(out, eager) else
          f"replay differs from eager (rel L2 {rel_l2(out, eager):.3e})")


def error_cases(W):
    E, K, H, I = W.E, W.K, W.H, W.I
    T = 16  # not H/128, so a transposed scale tensor has the wrong shape
    x, xs = activations(T, H)
    logits = torch.randn(T, E, device=DEV)

    def call(**kw):
        a = dict(routing_logits=logits, routing_bias=None, hidden_states=x, hidden_states_scale=xs,
                 gemm1_weights=W.w1, gemm1_weights_scale=W.w1s, gemm2_weights=W.w2, gemm2_weights_scale=W.w2s,
                 num_experts=E, top_k=K, n_group=None, topk_group=None, intermediate_size=I, local_expert_offset=0,
                 local_num_experts=E, routed_scaling_factor=None, routing_method_type=1)
        a.update(kw)
        return fm.trtllm_fp8_block_scale_moe(**a)

    expect_raise("error: a shape not compiled in", RuntimeError, lambda: call(top_k=K - 1), "no instantiation")
    expect_raise("error: use_shuffled_weight=True", ValueError, lambda: call(use_shuffled_weight=True),
                 "use_shuffled_weight")
    expect_raise("error: weight_layout=2 (BlockMajorK)", ValueError, lambda: call(weight_layout=2), "weight_layout")
    expect_raise("error: do_finalize=False", NotImplementedError, lambda: call(do_finalize=False), "do_finalize")
    expect_raise("error: routing_method_type=7", NotImplementedError, lambda: call(routing_method_type=7),
                 "routing_method_type")
    expect_raise("error: hidden_states_scale as [T, H/128]", RuntimeError,
                 lambda: call(hidden_states_scale=xs.t().contiguous()), "hidden_states_scale must have shape")
    expect_raise("error: weights of the wrong expert count", RuntimeError,
                 lambda: call(local_num_experts=E - 1), "gemm1_weights must have shape")
    # a combination only the library rejects: its status string comes through
    expect_raise("error: library status (DeepSeekV3, n_group not dividing E)", RuntimeError,
                 lambda: call(routing_method_type=2, n_group=E + 1, topk_group=1),
                 "FP8MOE_ERROR_INVALID_ROUTING_PARAMS")
    # accepted with their default meaning
    out = call(tile_tokens_dim=8, enable_pdl=True, tune_max_num_tokens=4096, fp8_quantization_type=1,
               activation_type=3, use_shuffled_weight=False, weight_layout=0, do_finalize=True)
    check("FlashInfer-only arguments with their default meaning are accepted", out.shape == (T, H))


# ---- the 0.3 arguments (SPEC section 5.1) ----------------------------------


def swiglu_params(count, clamp=True):
    """Per-expert SwiGLU coefficients, all different: alpha in [0.5, 2.5],
    beta in [-1, 1], limit in [0.25, 1.25] (about the size of GEMM1's
    outputs here, so a good share is clamped) or inf for every fourth."""
    alpha = 0.5 + 2.0 * torch.rand(count, device=DEV)
    beta = 2.0 * torch.rand(count, device=DEV) - 1.0
    limit = None
    if clamp:
        limit = 0.25 + torch.rand(count, device=DEV)
        limit[3::4] = float("inf")
    return alpha, beta, limit


def shared_weights(W, S):
    """S shared experts in W's shape, as (w1, w1_scale, w2, w2_scale)."""
    if S == 0:
        return None
    sw = Weights((S, W.K, W.H, W.I))
    return sw.w1, sw.w1s, sw.w2, sw.w2s


def shared_kwargs(shared):
    if shared is None:
        return {}
    return dict(shared_w1=shared[0], shared_w1_scale=shared[1], shared_w2=shared[2], shared_w2_scale=shared[3])


def swiglu_case(W, T, routed, offset=0, count=None, which="alpha+beta+limit"):
    E, K, H, I = W.E, W.K, W.H, W.I
    count = E if count is None else count
    name = (f"{'routed_moe' if routed else 'moe'} SwiGLU variant ({which}) E={E} K={K} T={T}"
            + (f" EP {count}@{offset}" if count != E else ""))
    alpha, beta, limit = swiglu_params(count)
    alpha = alpha if "alpha" in which else None
    beta = beta if "beta" in which else None
    limit = limit if "limit" in which else None
    x, xs = activations(T, H)
    w1, w1s, w2, w2s = W.shard(offset, count)
    stats = {}
    if routed:
        ids = torch.rand(T, E, device=DEV).argsort(dim=-1)[:, :K].to(torch.int32).contiguous()
        w = 0.05 + torch.rand(T, K, device=DEV) / K
        out = fm.trtllm_fp8_block_scale_routed_moe(
            (ids, w), None, x, xs, w1, w1s, w2, w2s, num_experts=E, top_k=K, n_group=None, topk_group=None,
            intermediate_size=I, local_expert_offset=offset, local_num_experts=count, routed_scaling_factor=None,
            gemm1_alpha=alpha, gemm1_beta=beta, gemm1_clamp_limit=limit)
        torch.cuda.synchronize()
        expect = ref.moe(x, xs, w1, w1s, w2, w2s, ids, w, offset, alpha, beta, limit, stats=stats)
        plain = ref.moe(x, xs, w1, w1s, w2, w2s, ids, w, offset)
        keep = None
    else:
        logits = 2 * torch.randn(T, E, device=DEV)
        out = fm.trtllm_fp8_block_scale_moe(
            logits, None, x, xs, w1, w1s, w2, w2s, num_experts=E, top_k=K, n_group=None, topk_group=None,
            intermediate_size=I, local_expert_offset=offset, local_num_experts=count, routed_scaling_factor=None,
            routing_method_type=1, gemm1_alpha=alpha, gemm1_beta=beta, gemm1_clamp_limit=limit)
        torch.cuda.synchronize()
        expect, ambiguous = ref.layer(logits, None, x, xs, w1, w1s, w2, w2s, K, 0, 0, offset, 0.0, 1,
                                      alpha, beta, limit, stats=stats)
        plain, _ = ref.layer(logits, None, x, xs, w1, w1s, w2, w2s, K, 0, 0, offset, 0.0, 1)
        keep = ~ambiguous
    err = rel_l2(out, expect, keep)
    moved = rel_l2(plain, expect, keep)  # how far the coefficients move the result
    finite = bool(torch.isfinite(out).all())
    ok = err <= TOL and finite and moved > 3 * TOL
    detail = f"rel L2 {err:.3e}, the variant moves the output by {moved:.2f}" + ("" if finite else ", NOT FINITE")
    if limit is not None:
        frac_g = stats.get("clamped_gate", 0) / max(stats.get("values", 1), 1)
        frac_u = stats.get("clamped_up", 0) / max(stats.get("values", 1), 1)
        ok = ok and 0.02 < frac_g < 0.9 and 0.02 < frac_u < 0.9
        detail += f", clamped {frac_g:.0%} of gates and {frac_u:.0%} of ups"
    check(name, ok, detail)


def replay_case(W, T, method, n_group=0, topk_group=0, scale=0.0, S=1):
    """name_run with routing_replay_out (FlashInfer's int16, and int32) and
    routing_replay_weights_out, then the routed entry point with them: the
    same output bit for bit, with the SwiGLU variant and shared experts on."""
    E, K, H, I = W.E, W.K, W.H, W.I
    name = f"routing replay {fm.RoutingMethodType(method).name} E={E} K={K} T={T} S={S}"
    logits = 2 * torch.randn(T, E, device=DEV)
    bias = 0.5 * torch.randn(E, device=DEV) if method == 2 else None
    x, xs = activations(T, H)
    alpha, beta, limit = swiglu_params(E)
    shared = shared_weights(W, S)
    common = dict(num_experts=E, top_k=K, n_group=n_group or None, topk_group=topk_group or None,
                  intermediate_size=I, local_expert_offset=0, local_num_experts=E,
                  routed_scaling_factor=scale or None, gemm1_alpha=alpha, gemm1_beta=beta,
                  gemm1_clamp_limit=limit, **shared_kwargs(shared))
    pad = 5  # a buffer sized for a larger batch: rows T.. stay untouched
    replay16 = torch.full((T + pad, K), -7, dtype=torch.int16, device=DEV)
    replay32 = torch.full((T, K), -7, dtype=torch.int32, device=DEV)
    wout = torch.full((T + pad, K), float("nan"), dtype=torch.float32, device=DEV)
    out16 = fm.trtllm_fp8_block_scale_moe(logits, bias, x, xs, W.w1, W.w1s, W.w2, W.w2s,
                                          routing_method_type=method, routing_replay_out=replay16, **common)
    out32 = fm.trtllm_fp8_block_scale_moe(logits, bias, x, xs, W.w1, W.w1s, W.w2, W.w2s,
                                          routing_method_type=method, routing_replay_out=replay32,
                                          routing_replay_weights_out=wout, **common)
    routed_kw = {k: v for k, v in common.items() if k not in ("n_group", "topk_group", "routed_scaling_factor")}
    outr = fm.trtllm_fp8_block_scale_routed_moe((replay32, wout[:T]), None, x, xs, W.w1, W.w1s, W.w2, W.w2s,
                                                n_group=None, topk_group=None, routed_scaling_factor=None,
                                                **routed_kw)
    torch.cuda.synchronize()
    ids, weights, ambiguous = ref.route(logits, bias, method, K, n_group, topk_group, scale)
    keep = ~ambiguous
    same_replay = torch.equal(outr, out32)
    same_16_32 = torch.equal(replay16[:T].to(torch.int32), replay32) and torch.equal(out16, out32)
    untouched = bool((replay16[T:] == -7).all()) and bool(torch.isnan(wout[T:]).all())
    ids_ok = torch.equal(replay32.long()[keep], ids[keep])
    w_err = ((wout[:T] - weights).abs() / weights.abs().clamp(min=1e-30))[keep].max().item() if int(keep.sum()) else 0
    ok = same_replay and same_16_32 and untouched and ids_ok and w_err <= 1e-5
    detail = (f"replay {'== run, bit for bit' if same_replay else 'DIFFERS (rel L2 %.3e)' % rel_l2(outr, out32)}; "
              f"int16 {'== int32' if same_16_32 else 'DIFFERS from int32'}; rows >= T "
              f"{'untouched' if untouched else 'WRITTEN'}; ids {'== reference' if ids_ok else 'DIFFER from reference'}"
              f" ({int(keep.sum())} of {T} unambiguous tokens), weights within {w_err:.1e}")
    if method == 2:
        sums = wout[:T].sum(-1)
        sum_ok = bool(((sums - (scale or 1.0)).abs() <= 1e-4 * (scale or 1.0)).all())
        ok = ok and sum_ok
        detail += f", weights sum to the scaling factor {'yes' if sum_ok else 'NO'}"
    check(name, ok, detail)


def shared_case(W, T, S, routed):
    E, K, H, I = W.E, W.K, W.H, W.I
    name = f"{'routed_moe' if routed else 'moe'} shared experts S={S} E={E} K={K} T={T}"
    shared = shared_weights(W, S)
    x, xs = activations(T, H)
    alpha, beta, limit = swiglu_params(E)  # the routed experts' variant; the shared ones use the defaults
    kw = dict(num_experts=E, top_k=K, n_group=None, topk_group=None, intermediate_size=I, local_expert_offset=0,
              local_num_experts=E, routed_scaling_factor=None, gemm1_alpha=alpha, gemm1_beta=beta,
              gemm1_clamp_limit=limit, **shared_kwargs(shared))
    if routed:
        ids = torch.rand(T, E, device=DEV).argsort(dim=-1)[:, :K].to(torch.int32).contiguous()
        w = 0.05 + torch.rand(T, K, device=DEV) / K
        out = fm.trtllm_fp8_block_scale_routed_moe(fm.pack_topk(ids, w), None, x, xs, W.w1, W.w1s, W.w2, W.w2s, **kw)
        w = w.to(torch.bfloat16).float()  # what the packed form carries
        keep = None
    else:
        logits = 2 * torch.randn(T, E, device=DEV)
        out = fm.trtllm_fp8_block_scale_moe(logits, None, x, xs, W.w1, W.w1s, W.w2, W.w2s, routing_method_type=1,
                                            **kw)
        ids, w, ambiguous = ref.route(logits, None, 1, K)
        keep = ~ambiguous
    torch.cuda.synchronize()
    expect = ref.moe(x, xs, W.w1, W.w1s, W.w2, W.w2s, ids, w, 0, alpha, beta, limit, shared)
    without = ref.moe(x, xs, W.w1, W.w1s, W.w2, W.w2s, ids, w, 0, alpha, beta, limit)
    err = rel_l2(out, expect, keep)
    moved = rel_l2(without, expect, keep)  # how far the shared experts move the result
    finite = bool(torch.isfinite(out).all())
    check(name, err <= TOL and finite and moved > 3 * TOL,
          f"rel L2 {err:.3e}, the shared experts move the output by {moved:.2f}" + ("" if finite else ", NOT FINITE"))


def shared_ep_case(W, T, S=2):
    """Two expert-parallel ranks, the shared experts on rank 0 only: each rank
    matches its reference (tokens with no local slot get exactly the shared
    experts on rank 0 and zeros on rank 1), and the sum matches one rank."""
    E, K, H, I = W.E, W.K, W.H, W.I
    half = E // 2
    name = f"shared experts S={S} over 2 EP ranks E={E} K={K} T={T}"
    shared = shared_weights(W, S)
    x, xs = activations(T, H)
    logits = 2 * torch.randn(T, E, device=DEV)
    logits[0, half:] -= 100.0  # token 0 routes to rank 0 only
    outs, errs = [], []
    for rank, offset in enumerate((0, half)):
        w1, w1s, w2, w2s = W.shard(offset, half)
        sh = shared if rank == 0 else None
        out = fm.trtllm_fp8_block_scale_moe(
            logits, None, x, xs, w1, w1s, w2, w2s, num_experts=E, top_k=K, n_group=None, topk_group=None,
            intermediate_size=I, local_expert_offset=offset, local_num_experts=half, routed_scaling_factor=None,
            routing_method_type=1, output=torch.full((T, H), float("nan"), dtype=torch.bfloat16, device=DEV),
            **shared_kwargs(sh))
        torch.cuda.synchronize()
        expect, ambiguous = ref.layer(logits, None, x, xs, w1, w1s, w2, w2s, K, 0, 0, offset, 0.0, 1, shared=sh)
        outs.append(out)
        errs.append(rel_l2(out, expect, ~ambiguous))
    full, ambiguous = ref.layer(logits, None, x, xs, W.w1, W.w1s, W.w2, W.w2s, K, 0, 0, 0, 0.0, 1, shared=shared)
    summed = outs[0].float() + outs[1].float()
    err_sum = rel_l2(summed, full, ~ambiguous)
    token0_rank1_zero = bool((outs[1][0] == 0).all())
    ok = max(errs) <= TOL and err_sum <= TOL and token0_rank1_zero and bool(torch.isfinite(summed).all())
    check(name, ok, f"rank errors {errs[0]:.3e} {errs[1]:.3e}, sum vs one rank {err_sum:.3e}, token 0 on rank 1 "
                    f"{'all 0' if token0_rank1_zero else 'NOT 0'}")


def batch_invariance_case(W, S=1):
    """batch_invariant=True: one probe token's output row is the same bit for
    bit whatever the batch around it (sizes 1 .. 1024, the probe anywhere),
    on both entry points, with the SwiGLU variant and shared experts on."""
    E, K, H, I = W.E, W.K, W.H, W.I
    x0, xs0 = activations(1, H)
    logits0 = 2 * torch.randn(1, E, device=DEV)
    ids0 = torch.rand(1, E, device=DEV).argsort(dim=-1)[:, :K].to(torch.int32)
    w0 = 0.05 + torch.rand(1, K, device=DEV) / K
    alpha, beta, limit = swiglu_params(E)
    shared = shared_weights(W, S)
    kw = dict(num_experts=E, top_k=K, n_group=None, topk_group=None, intermediate_size=I, local_expert_offset=0,
              local_num_experts=E, routed_scaling_factor=None, gemm1_alpha=alpha, gemm1_beta=beta,
              gemm1_clamp_limit=limit, batch_invariant=True, **shared_kwargs(shared))
    for routed in (False, True):
        rows, sizes = [], (1, 3, 16, 64, 200, 1024)
        for T in sizes:
            p = int(torch.randint(0, T, (1,)))
            x, xs = activations(T, H)
            x[p], xs[:, p] = x0[0], xs0[:, 0]
            if routed:
                ids = torch.rand(T, E, device=DEV).argsort(dim=-1)[:, :K].to(torch.int32)
                w = 0.05 + torch.rand(T, K, device=DEV) / K
                ids[p], w[p] = ids0[0], w0[0]
                out = fm.trtllm_fp8_block_scale_routed_moe((ids.contiguous(), w), None, x, xs, W.w1, W.w1s, W.w2,
                                                           W.w2s, **kw)
            else:
                logits = 2 * torch.randn(T, E, device=DEV)
                logits[p] = logits0[0]
                out = fm.trtllm_fp8_block_scale_moe(logits, None, x, xs, W.w1, W.w1s, W.w2, W.w2s,
                                                    routing_method_type=1, **kw)
            rows.append(out[p].clone())
        torch.cuda.synchronize()
        same = all(torch.equal(r, rows[0]) for r in rows)
        differing = [sizes[i] for i, r in enumerate(rows) if not torch.equal(r, rows[0])]
        check(f"batch_invariant: probe token row over T={sizes} ({'routed_moe' if routed else 'moe'}, S={S})", same,
              "bit for bit the same" if same else f"differs at T={differing}")


def graph_case_0_3(W, T=48):
    """A non-routed call with every 0.3 argument (int16 replay buffer, replay
    weights, SwiGLU variant, shared experts, batch_invariant) in a CUDA graph,
    replayed on new data: output and replay buffers equal to an eager run."""
    E, K, H, I = W.E, W.K, W.H, W.I
    alpha, beta, limit = swiglu_params(E)
    shared = shared_weights(W, 2)
    logits = 2 * torch.randn(T, E, device=DEV)
    x, xs = activations(T, H)
    replay16 = torch.zeros(T, K, dtype=torch.int16, device=DEV)
    wout = torch.zeros(T, K, device=DEV)

    def run(logits, x, xs, replay, wo):
        return fm.trtllm_fp8_block_scale_moe(
            logits, None, x, xs, W.w1, W.w1s, W.w2, W.w2s, num_experts=E, top_k=K, n_group=None, topk_group=None,
            intermediate_size=I, local_expert_offset=0, local_num_experts=E, routed_scaling_factor=None,
            routing_method_type=1, gemm1_alpha=alpha, gemm1_beta=beta, gemm1_clamp_limit=limit,
            routing_replay_out=replay, routing_replay_weights_out=wo, batch_invariant=True, **shared_kwargs(shared))

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run(logits, x, xs, replay16, wout)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = run(logits, x, xs, replay16, wout)
    new_logits, (new_x, new_xs) = 2 * torch.randn(T, E, device=DEV), activations(T, H)
    logits.copy_(new_logits)
    x.copy_(new_x)
    xs.copy_(new_xs)
    graph.replay()
    torch.cuda.synchronize()
    e_replay, e_w = torch.zeros_like(replay16), torch.zeros_like(wout)
    eager = run(new_logits, new_x, new_xs, e_replay, e_w)
    torch.cuda.synchronize()
    ok = torch.equal(out, eager) and torch.equal(replay16, e_replay) and torch.equal(wout, e_w)
    check(f"CUDA graph with the 0.3 arguments (T={T})", ok,
          "output and replay buffers == eager run, bit for bit" if ok else
          f"differs from eager (output rel L2 {rel_l2(out, eager):.3e}, ids "
          f"{'equal' if torch.equal(replay16, e_replay) else 'DIFFER'})")


def error_cases_0_3(W):
    E, K, H, I = W.E, W.K, W.H, W.I
    T = 16
    x, xs = activations(T, H)
    logits = torch.randn(T, E, device=DEV)
    alpha, beta, limit = swiglu_params(E)
    sh = shared_weights(W, 1)

    def call(**kw):
        a = dict(routing_logits=logits, routing_bias=None, hidden_states=x, hidden_states_scale=xs,
                 gemm1_weights=W.w1, gemm1_weights_scale=W.w1s, gemm2_weights=W.w2, gemm2_weights_scale=W.w2s,
                 num_experts=E, top_k=K, n_group=None, topk_group=None, intermediate_size=I, local_expert_offset=0,
                 local_num_experts=E, routed_scaling_factor=None, routing_method_type=1)
        a.update(kw)
        return fm.trtllm_fp8_block_scale_moe(**a)

    expect_raise("error: gemm1_alpha of the wrong length", RuntimeError,
                 lambda: call(gemm1_alpha=torch.ones(E + 1, device=DEV)), "gemm1_alpha must have shape")
    expect_raise("error: gemm1_clamp_limit in bfloat16", RuntimeError,
                 lambda: call(gemm1_clamp_limit=limit.to(torch.bfloat16)), "gemm1_clamp_limit must be float32")
    expect_raise("error: gemm1_beta on the CPU", RuntimeError, lambda: call(gemm1_beta=beta.cpu()),
                 "gemm1_beta must be on")
    expect_raise("error: shared_w1 without the other shared tensors", RuntimeError,
                 lambda: call(shared_w1=sh[0]), "all four")
    expect_raise("error: shared_w2 of another intermediate size", RuntimeError,
                 lambda: call(**shared_kwargs((sh[0], sh[1], sh[2][:, :, :128].contiguous(), sh[3]))),
                 "shared_w2 must have shape")
    nine = (torch.empty(9, 2 * I, H, dtype=FP8, device=DEV), torch.ones(9, 2 * I // 128, H // 128, device=DEV),
            torch.empty(9, H, I, dtype=FP8, device=DEV), torch.ones(9, H // 128, I // 128, device=DEV))
    expect_raise("error: 9 shared experts", RuntimeError, lambda: call(**shared_kwargs(nine)), "at most 8")
    expect_raise("error: routing_replay_out in float32", RuntimeError,
                 lambda: call(routing_replay_out=torch.zeros(T, K, device=DEV)), "routing_replay_out must be int16")
    expect_raise("error: routing_replay_out with fewer rows than tokens", RuntimeError,
                 lambda: call(routing_replay_out=torch.zeros(T - 1, K, dtype=torch.int16, device=DEV)),
                 "routing_replay_out must have shape")
    expect_raise("error: routing_replay_weights_out of the wrong width", RuntimeError,
                 lambda: call(routing_replay_weights_out=torch.zeros(T, K + 1, device=DEV)),
                 "routing_replay_weights_out must have shape")
    expect_raise("error: num_fused_shared_experts=1", NotImplementedError,
                 lambda: call(num_fused_shared_experts=1), "num_fused_shared_experts")
    # T = 0 with every 0.3 argument: nothing to do, nothing refused
    x0, xs0 = activations(0, H)
    out = call(routing_logits=torch.empty(0, E, device=DEV), hidden_states=x0, hidden_states_scale=xs0,
               gemm1_alpha=alpha, gemm1_beta=beta, gemm1_clamp_limit=limit,
               routing_replay_out=torch.empty(0, K, dtype=torch.int16, device=DEV),
               routing_replay_weights_out=torch.empty(0, K, device=DEV), batch_invariant=True, **shared_kwargs(sh))
    check("T=0 with the 0.3 arguments", out.shape == (0, H), f"shape {tuple(out.shape)}")
    # workspace_size grows with the shared experts
    w0, w2 = fm.workspace_size(E, K, H, I, 64), fm.workspace_size(E, K, H, I, 64, num_shared_experts=2)
    check("workspace_size(num_shared_experts=2) > workspace_size()", w2 > w0, f"{w2} vs {w0} bytes")


def main():
    if not torch.cuda.is_available():
        print("test_torch: no CUDA device; nothing to run")
        print("0 passed, 0 failed")
        return 0
    seed = int(os.environ.get("FP8MOE_SEED", int(time.time() * 1000) % (2 ** 31)))
    torch.manual_seed(seed)
    ref.use_ieee_fp32_matmul()
    props = torch.cuda.get_device_properties(0)
    print(f"test_torch: {props.name} (sm_{props.major}{props.minor}), torch {torch.__version__}, "
          f"seed {seed} (FP8MOE_SEED)", flush=True)

    start = time.time()
    try:
        fm.load(verbose=bool(os.environ.get("FP8MOE_TORCH_VERBOSE")))
    except Exception as e:  # noqa: BLE001 - nothing else can run
        traceback.print_exc()
        check("build + load the extension", False, f"{type(e).__name__}: {str(e)[-300:]}")
        print("0 passed, 1 failed")
        return 1
    check("build + load the extension", True,
          f"{time.time() - start:.0f} s, shapes {fm.instances()}, archs {fm._archs()}")

    small = Weights(fm.SMALL)
    guarded("quantizer", lambda: (quantizer_case(16, small.H), quantizer_case(512, small.H)))
    for T in (16, 512):
        guarded("small DeepSeekV3", lambda: nonrouted_case(small, T, 2, 4, 2, 2.5, bias_dtype=torch.float32,
                                                           time_it=True))
        guarded("small DeepSeekV3 bf16 bias", lambda: nonrouted_case(small, T, 2, 4, 2, 2.5,
                                                                     bias_dtype=torch.bfloat16))
        for method in (0, 1, 4, 5):
            guarded(f"small method {method}", lambda: nonrouted_case(small, T, method,
                                                                     logits_dtype=torch.bfloat16
                                                                     if method == 1 else torch.float32))
        for form in ("packed", "ids+fp32 weights", "ids+bf16 weights"):
            guarded(f"small routed {form}", lambda: routed_case(small, T, form, time_it=form == "packed"))
    guarded("small EP shard", lambda: nonrouted_case(small, 512, 2, 4, 2, 2.5, bias_dtype=torch.float32, offset=8,
                                                     count=16, nan_output=True))
    guarded("T=0", lambda: empty_case(small))
    guarded("CUDA graph", lambda: graph_case(small))
    guarded("errors", lambda: error_cases(small))
    # the 0.3 arguments
    for routed in (False, True):
        guarded("SwiGLU variant", lambda: swiglu_case(small, 256, routed))
        guarded("SwiGLU variant EP", lambda: swiglu_case(small, 256, routed, offset=8, count=16))
        guarded("shared experts", lambda: shared_case(small, 256, 2, routed))
    guarded("SwiGLU alpha only", lambda: swiglu_case(small, 64, False, which="alpha"))
    guarded("SwiGLU beta + limit", lambda: swiglu_case(small, 64, True, which="beta+limit"))
    guarded("shared experts S=8", lambda: shared_case(small, 64, 8, False))
    guarded("shared experts EP", lambda: shared_ep_case(small, 256))
    for T in (16, 512):
        guarded("replay DeepSeekV3", lambda: replay_case(small, T, 2, 4, 2, 2.5))
        guarded("replay Renormalize", lambda: replay_case(small, T, 1, S=0))
    guarded("batch invariance", lambda: batch_invariance_case(small))
    guarded("CUDA graph 0.3", lambda: graph_case_0_3(small))
    guarded("errors 0.3", lambda: error_cases_0_3(small))
    del small
    torch.cuda.empty_cache()

    big = Weights(fm.DEEPSEEK_V3)
    guarded("quantizer DeepSeek", lambda: quantizer_case(512, big.H))
    for T in (16, 512):
        guarded("DeepSeek-V3", lambda: nonrouted_case(big, T, 2, 8, 4, 2.5, bias_dtype=torch.bfloat16,
                                                      time_it=True))
        guarded("DeepSeek-V3 Renormalize", lambda: nonrouted_case(big, T, 1, logits_dtype=torch.bfloat16))
        guarded("DeepSeek-V3 routed", lambda: routed_case(big, T, "packed", time_it=True))
    guarded("DeepSeek-V3 EP shard", lambda: nonrouted_case(big, 512, 2, 8, 4, 2.5, bias_dtype=torch.bfloat16,
                                                           offset=64, count=32, nan_output=True, time_it=True))
    guarded("DeepSeek-V3 replay + shared expert", lambda: replay_case(big, 128, 2, 8, 4, 2.5, S=1))
    guarded("DeepSeek-V3 batch invariance", lambda: batch_invariance_case(big))

    passed = sum(ok for ok, _, _ in results)
    failed = len(results) - passed
    print(f"\n==== test_torch summary: {props.name}, torch {torch.__version__}, seed {seed} ====")
    print(f"{'case':<88} {'fp8moe ms':>10} {'torch ms':>10} {'speedup':>8}")
    for name, a, b in timings:
        print(f"{name:<88} {a:>10.3f} {b:>10.3f} {b / a:>7.1f}x")
    for ok, name, detail in results:
        if not ok:
            print(f"FAIL  {name}  {detail}")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
