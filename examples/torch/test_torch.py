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
    arguments that do not apply, a library status turned RuntimeError.
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
