#!/usr/bin/env python3
"""bench/triton_peer.py - fp8moe against a vLLM-style fused MoE written in
Triton, in one process, on the same inputs.

    python3 bench/triton_peer.py --config dsv3 --tokens 1,16,128,1024
    bash bench/run_triton_peer.sh              # the same with the build environment set and a log kept

Options: --config dsv3,qwen30,mixtral,ep (default all four), --tokens
(default 1,16,128,1024), --loads uniform,skewed, --reps (timed runs, default
30), --sweep-reps, --seed, --max-sets, --gemm1-out fp32|bf16, --gemm2-out
bf16|fp32 (the Triton GEMMs' output dtypes), --csv FILE.

What is timed, per (shape, T, load), for each implementation: the routed MoE
layer from the top-k (int32 ids [T, K] + fp32 weights [T, K]) and the fp8
activations to the bf16 [T, H] output.
  fp8moe  fm.trtllm_fp8_block_scale_routed_moe, the PyTorch binding of
          examples/torch (JIT-built for the shapes run), the ids and weights
          as the pair, local_expert_offset / local_num_experts for the shard.
  triton  the classic "fused_moe" structure, written from scratch here:
          moe_align_block_size (one single-CTA kernel: the slots of each local
          expert gathered and padded to BLOCK_M, pad entries T*K), one grouped
          GEMM kernel launched twice (GEMM1 on w1, A rows gathered by sorted
          slot // K; GEMM2 on w2, the routed weight applied in its epilogue),
          SwiGLU + fp8 requant (1x128 scales) between them and the sum over the
          K slots after. The block-FP8 math is vLLM's: per 128-wide K block,
          acc += dot(a, b) * a_scale[:, None] * b_scale, in fp32. GEMM2 writes
          bf16 as vLLM does; GEMM1 writes fp32, so SwiGLU runs on the fp32
          accumulators as SPEC 2.3 has it: vLLM's bf16 there moves the answer
          by about 1.3e-2 rel L2 (fp8 requant rounding flips), over the
          tolerance the rows are checked with (--gemm1-out bf16 shows it;
          fp32 costs T*K*2I*2 more bytes written, and as many read). Its tile
          config is swept per (shape, T, load) and the fastest kept (the row's
          note names it): each T gets its own best config, as a tuned vLLM
          config table gives.
Both read the library's layouts (SPEC section 1), the activation scales
[H/128, T] included: the Triton GEMM reads them transposed in place.

Shapes: dsv3 (E 256, K 8, H 7168, I 2048), qwen30 (E 128, K 8, H 2048, I 768),
mixtral (E 8, K 2, H 4096, I 14336), ep (DeepSeek-V3, 32 local experts at
offset 64; weights for those 32 only). Loads: uniform (top-k of N(0, 1)
logits per token) and skewed (the generator of bench/bench_layer.cuh: expert
popularity exp(1.2 z), z ~ N(0, 1), K distinct experts per token drawn in
proportion to it); weights in [0.05, 1.05) for both. Data as bench_moe draws
them: e4m3 codes of magnitude 2^-4..15 (never zero), activation scales in
[0.25, 1.25), weight scales in [0.5, 1.5) / sqrt(reduction length).

Timing follows docs/performance.md: CUDA events around each run, warm-up
first, median of --reps runs, no host synchronization between runs (a run's
time includes the gaps the host leaves between its launches: five Triton
launches and their Python cost against fp8moe's one call). The two
implementations alternate within one loop (the order flips every iteration),
so drift hits both. When the weights one run touches would fit in L2 three
times over, several weight sets are allocated and consecutive runs, of
either implementation, take consecutive sets, so no run finds its weights in
L2. floor_us = weight bytes touched / copy bandwidth (a 2 GiB device copy,
bytes read + written, median of 10, measured at start); floor% = floor / time.

After timing, each row compares the Triton output with fp8moe's on the same
inputs (relative L2 error; above 1e-2 the row is FAIL and the exit status 1).

Needs a CUDA GPU with FP8 tensor cores (sm_89+), PyTorch, Triton, numpy and
nvcc + ninja for the binding's JIT build; on Hopper it builds sm_90a
(TORCH_CUDA_ARCH_LIST=9.0a, set here when unset, as run_on_gpu.sh does).
Without torch, triton or a GPU it prints "triton_peer: skipped (<reason>)"
and exits 0.
"""

import argparse
import collections
import csv
import math
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

try:
    import torch
    _NO_TORCH = None
except Exception as e:  # noqa: BLE001 - any import failure is a skip
    torch, _NO_TORCH = None, f"no PyTorch: {type(e).__name__}: {e}"
try:
    import triton
    import triton.language as tl
    _NO_TRITON = None
except Exception as e:  # noqa: BLE001
    triton, tl, _NO_TRITON = None, None, f"no Triton: {type(e).__name__}: {e}"

Shape = collections.namedtuple("Shape", "name title E K H I off E_loc")
SHAPES = collections.OrderedDict((s.name, s) for s in (
    Shape("dsv3", "DeepSeek-V3", 256, 8, 7168, 2048, 0, 256),
    Shape("qwen30", "Qwen3-MoE 30B", 128, 8, 2048, 768, 0, 128),
    Shape("mixtral", "Mixtral-style", 8, 2, 4096, 14336, 0, 8),
    Shape("ep", "DeepSeek-V3 EP shard, 32 local experts at 64", 256, 8, 7168, 2048, 64, 32),
))
TOL = 1e-2

# ---- the Triton peer (defined only where triton imported) ----------------------------------------------------

if triton is not None:

    @triton.jit(do_not_specialize=["n", "e_off", "n_blocks"])
    def _align_kernel(ids_ptr, n, e_off, E_loc, cnt_ptr, start_ptr, rank_ptr, sorted_ptr, bexp_ptr, total_ptr,
                      n_blocks, BM: tl.constexpr, E_P2: tl.constexpr, CHUNK: tl.constexpr, BCH: tl.constexpr):
        """moe_align_block_size in one CTA (n = T*K <= a few thousand slots):
        an atomic count per local expert gives each slot its rank, a cumsum of
        the counts padded to BM gives each expert's start, then every slot is
        written to start + rank. Pad entries hold n (invalid), bexp[b] is the
        expert of M block b (>= E_loc past the total). The rank order within an
        expert is whatever the atomics give: GEMM rows are independent, so the
        output does not depend on it. Data written here and read back here go
        through L2 (atomics, .cg loads) with a CTA barrier between phases."""
        ex = tl.arange(0, E_P2)
        c = tl.arange(0, CHUNK)
        tl.atomic_xchg(cnt_ptr + ex, tl.zeros((E_P2,), tl.int32))
        for p in range(0, n_blocks * BM, CHUNK):
            tl.store(sorted_ptr + p + c, tl.zeros((CHUNK,), tl.int32) + n, mask=p + c < n_blocks * BM)
        tl.debug_barrier()
        for i0 in range(0, n, CHUNK):
            i = i0 + c
            e = tl.load(ids_ptr + i, mask=i < n, other=-1) - e_off
            ok = (i < n) & (e >= 0) & (e < E_loc)
            tl.store(rank_ptr + i, tl.atomic_add(cnt_ptr + e, 1, mask=ok), mask=ok)
        tl.debug_barrier()
        cnt = tl.load(cnt_ptr + ex, cache_modifier=".cg")
        padded = (cnt + BM - 1) // BM * BM
        ends = tl.cumsum(padded, 0)
        tl.store(start_ptr + ex, ends - padded)
        tl.store(total_ptr, tl.sum(padded, 0))
        for b0 in range(0, n_blocks, BCH):
            b = b0 + tl.arange(0, BCH)
            owner = tl.sum((ends[None, :] <= (b * BM)[:, None]).to(tl.int32), 1)
            tl.store(bexp_ptr + b, owner, mask=b < n_blocks)
        tl.debug_barrier()
        for i0 in range(0, n, CHUNK):
            i = i0 + c
            e = tl.load(ids_ptr + i, mask=i < n, other=-1) - e_off
            ok = (i < n) & (e >= 0) & (e < E_loc)
            r = tl.load(rank_ptr + i, mask=ok, other=0, cache_modifier=".cg")
            st = tl.load(start_ptr + e, mask=ok, other=0, cache_modifier=".cg")
            tl.store(sorted_ptr + st + r, i, mask=ok)

    # The ints that change with T, or between GEMM1 and GEMM2, are not
    # specialized, so one compiled kernel per (tile config, output dtype)
    # serves every shape and T (the other ints are multiples of 128
    # everywhere): the sweep compiles each config once per GEMM output dtype.
    @triton.jit(do_not_specialize=["n_slots", "num_pid_m", "a_div", "s_asm", "s_ask", "s_bse", "s_bsn", "s_bsk",
                                   "mul_w"])
    def _moe_gemm_kernel(a_ptr, as_ptr, b_ptr, bs_ptr, c_ptr, w_ptr, sorted_ptr, bexp_ptr, total_ptr,
                         N, Kd, n_slots, num_pid_m, a_div,
                         s_am, s_asm, s_ask, s_be, s_bn, s_bse, s_bsn, s_bsk, s_cm, mul_w,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                         GROUP_M: tl.constexpr):
        """C[slot, n] = sum_k A[slot // a_div, k] * B[e, n, k] over the sorted
        slots of M block pid_m (all of one expert e), dequantized per 128-wide K
        block by the A row's and B block's scales; times the slot's routed
        weight when mul_w. Rows of pad entries are masked (neither read nor
        written); blocks past the padded total exit at once."""
        pid = tl.program_id(0)
        num_pid_n = N // BLOCK_N
        in_group = GROUP_M * num_pid_n
        first_m = (pid // in_group) * GROUP_M
        group_m = tl.minimum(num_pid_m - first_m, GROUP_M)
        pid_m = first_m + (pid % in_group) % group_m
        pid_n = (pid % in_group) // group_m
        if pid_m * BLOCK_M >= tl.load(total_ptr):
            return
        slot = tl.load(sorted_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
        row_ok = slot < n_slots
        a_row = (slot // a_div).to(tl.int64)
        e = tl.load(bexp_ptr + pid_m).to(tl.int64)
        offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
        offs_k = tl.arange(0, BLOCK_K)
        a_ptrs = a_ptr + a_row[:, None] * s_am + offs_k[None, :]
        b_ptrs = b_ptr + e * s_be + offs_n[None, :] * s_bn + offs_k[:, None]   # [BLOCK_K, BLOCK_N], K-major
        as_ptrs = as_ptr + a_row * s_asm
        bs_ptrs = bs_ptr + e * s_bse + (pid_n * BLOCK_N // 128) * s_bsn       # BLOCK_N <= 128: one scale row
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for kb in range(0, Kd // BLOCK_K):
            a = tl.load(a_ptrs, mask=row_ok[:, None], other=0.0)
            b = tl.load(b_ptrs)
            a_s = tl.load(as_ptrs + kb * s_ask, mask=row_ok, other=0.0)
            b_s = tl.load(bs_ptrs + kb * s_bsk)
            acc += tl.dot(a, b) * a_s[:, None] * b_s
            a_ptrs += BLOCK_K
            b_ptrs += BLOCK_K
        if mul_w != 0:
            acc = acc * tl.load(w_ptr + slot, mask=row_ok, other=0.0)[:, None]
        c_ptrs = c_ptr + slot.to(tl.int64)[:, None] * s_cm + offs_n[None, :]
        tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=row_ok[:, None])

    @triton.jit
    def _swiglu_quant_kernel(g_ptr, q_ptr, qs_ptr, I, n_groups, G: tl.constexpr):
        """SPEC 2.3-2.4 on one row of GEMM1's output, G blocks of 128 columns:
        a = silu(gate) * up (gate = columns [I, 2I), up = [0, I)), scale =
        max(amax / 448, FLT_MIN) per block, q = e4m3(a / scale) (round to
        nearest even, clamped to +-448); scales [rows, I/128] row-major."""
        r = tl.program_id(0).to(tl.int64)
        grp = tl.program_id(1) * G + tl.arange(0, G)
        col = grp[:, None] * 128 + tl.arange(0, 128)[None, :]
        ok = (grp < n_groups)[:, None]
        up = tl.load(g_ptr + r * 2 * I + col, mask=ok, other=0.0).to(tl.float32)
        gate = tl.load(g_ptr + r * 2 * I + I + col, mask=ok, other=0.0).to(tl.float32)
        a = gate / (1.0 + tl.exp(-gate)) * up
        scale = tl.maximum(tl.max(tl.abs(a), axis=1) / 448.0, 1.1754943508222875e-38)   # FLT_MIN
        v = tl.minimum(tl.maximum(a / scale[:, None], -448.0), 448.0)
        tl.store(q_ptr + r * I + col, v.to(q_ptr.dtype.element_ty), mask=ok)
        tl.store(qs_ptr + r * n_groups + grp, scale, mask=grp < n_groups)

    @triton.jit(do_not_specialize=["e_off"])
    def _combine_kernel(c_ptr, ids_ptr, out_ptr, H, e_off, E_loc, TOPK: tl.constexpr, BLOCK_H: tl.constexpr):
        """out[t] = bf16(sum over the local slots of t, in slot order, of GEMM2's
        weighted rows), in fp32. Rows of non-local slots were never written and
        are not read; a token without local slots gets zeros."""
        t = tl.program_id(0).to(tl.int64)
        h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
        acc = tl.zeros((BLOCK_H,), dtype=tl.float32)
        for k in tl.static_range(TOPK):
            e = tl.load(ids_ptr + t * TOPK + k) - e_off
            h_end = tl.where((e >= 0) & (e < E_loc), H, 0)   # 0: a non-local slot, nothing read
            acc += tl.load(c_ptr + (t * TOPK + k) * H + h, mask=h < h_end, other=0.0).to(tl.float32)
        tl.store(out_ptr + t * H + h, acc.to(tl.bfloat16), mask=h < H)


def _seg(n):
    """Scratch segments start 32 ints apart: aligned pointers keep Triton's
    specialization (and so its compiled kernel) the same for every T."""
    return -(-n // 32) * 32


def triton_moe(x, xs, ids, wts, W, s, cfg, dt1, dt2):
    """The Triton layer: align, GEMM1, SwiGLU + requant, GEMM2, combine (five
    launches, no host synchronization). cfg = (BLOCK_M, BLOCK_N, GROUP_M,
    num_warps, num_stages); W = (w1, w1_scale, w2, w2_scale); dt1, dt2 the
    GEMM output dtypes."""
    BM, BN, GM, nw, ns = cfg
    w1, w1s, w2, w2s = W
    T, H, I, K, El = x.shape[0], s.H, s.I, s.K, s.E_loc
    n, dev = T * K, x.device
    n_blocks = -(-(n + min(n, El) * (BM - 1)) // BM)   # the most M blocks any routing of n slots needs
    ep2 = max(32, triton.next_power_of_2(El))
    sizes = [_seg(n_blocks * BM), _seg(n_blocks), 32, ep2, ep2, _seg(n)]
    buf = torch.empty(sum(sizes), dtype=torch.int32, device=dev)
    sorted_ids, bexp, total, cnt, start, rank = torch.split(buf, sizes)
    _align_kernel[(1,)](ids, n, s.off, El, cnt, start, rank, sorted_ids, bexp, total, n_blocks,
                        BM=BM, E_P2=ep2, CHUNK=1024, BCH=32, num_warps=8)
    c1 = torch.empty((n, 2 * I), dtype=dt1, device=dev)
    _moe_gemm_kernel[(n_blocks * (2 * I // BN),)](
        x, xs, w1, w1s, c1, wts, sorted_ids, bexp, total, 2 * I, H, n, n_blocks, K,
        H, 1, T,                                                    # A [T, H]; scales [H/128, T]
        2 * I * H, H, (2 * I // 128) * (H // 128), H // 128, 1,    # w1, w1_scale
        2 * I, 0, BLOCK_M=BM, BLOCK_N=BN, BLOCK_K=128, GROUP_M=GM, num_warps=nw, num_stages=ns)
    q = torch.empty((n, I), dtype=torch.float8_e4m3fn, device=dev)
    qs = torch.empty((n, I // 128), dtype=torch.float32, device=dev)
    _swiglu_quant_kernel[(n, triton.cdiv(I // 128, 8))](c1, q, qs, I, I // 128, G=8, num_warps=4)
    c2 = torch.empty((n, H), dtype=dt2, device=dev)
    _moe_gemm_kernel[(n_blocks * (H // BN),)](
        q, qs, w2, w2s, c2, wts, sorted_ids, bexp, total, H, I, n, n_blocks, 1,
        I, I // 128, 1,                                             # A [T*K, I]; scales [T*K, I/128]
        H * I, I, (H // 128) * (I // 128), I // 128, 1,            # w2, w2_scale
        H, 1, BLOCK_M=BM, BLOCK_N=BN, BLOCK_K=128, GROUP_M=GM, num_warps=nw, num_stages=ns)
    out = torch.empty((T, H), dtype=torch.bfloat16, device=dev)
    _combine_kernel[(T, triton.cdiv(H, 1024))](c2, ids, out, H, s.off, El, TOPK=K, BLOCK_H=1024, num_warps=4)
    return out


def sweep(run, hot, sets, reps):
    """The peer's tile config: BLOCK_M up to the hottest expert's rows
    (rounded up to a power of two, 16..128) x BLOCK_N {64, 128} x warps
    {4, 8} x stages {3, 4} with GROUP_M 1, then GROUP_M {8, 16, 32} on the
    best where an expert spans several M blocks (GROUP_M only reorders M
    blocks otherwise): at most 35 configs, each timed with reps runs. A
    config Triton cannot build (shared memory, registers) is skipped."""
    bound = min(128, max(16, triton.next_power_of_2(max(hot, 1))))
    times, failed = {}, 0

    def trial(cfg):
        nonlocal failed
        try:
            times[cfg] = time_runs([lambda w: run(cfg, w)], sets, 2, reps)[0]
        except Exception as e:  # noqa: BLE001 - out of resources and the like: not a candidate
            failed += 1
            print(f"  config {cfg} skipped: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}",
                  file=sys.stderr)

    for bm in (16, 32, 64, 128):
        for bn in (64, 128):
            for nw in (4, 8):
                for ns in (3, 4):
                    if bm <= bound:
                        trial((bm, bn, 1, nw, ns))
    if not times:
        raise RuntimeError("no Triton config could be built")
    best = min(times, key=times.get)
    if hot > best[0]:
        for gm in (8, 16, 32):
            trial(best[:2] + (gm,) + best[3:])
        best = min(times, key=times.get)
    return best, len(times) + failed, failed


# ---- data, loads, timing ---------------------------------------------------------------------------------------

def e4m3_codes(shape, gen):
    """bench_util.cuh's codes: random sign, exponent field 3..10, random
    mantissa, so |v| is in [2^-4, 15] and never zero or NaN (timing on zeros
    flatters)."""
    r = torch.randint(0, 256, shape, dtype=torch.uint8, device="cuda", generator=gen)
    return ((r & 0x87) | ((((r >> 3) & 7) + 3) << 3)).view(torch.float8_e4m3fn)


def weight_set(s, gen):
    """(w1, w1_scale, w2, w2_scale) for the E_loc local experts, one expert
    at a time (the temporaries stay small)."""
    H, I, El = s.H, s.I, s.E_loc
    w1 = torch.empty((El, 2 * I, H), dtype=torch.float8_e4m3fn, device="cuda")
    w2 = torch.empty((El, H, I), dtype=torch.float8_e4m3fn, device="cuda")
    for e in range(El):
        w1[e] = e4m3_codes((2 * I, H), gen)
        w2[e] = e4m3_codes((H, I), gen)
    w1s = torch.rand((El, 2 * I // 128, H // 128), generator=gen, device="cuda").add_(0.5).div_(math.sqrt(H))
    w2s = torch.rand((El, H // 128, I // 128), generator=gen, device="cuda").add_(0.5).div_(math.sqrt(I))
    return w1, w1s, w2, w2s


def expert_bytes(s):
    """fp8 weights and fp32 block scales of one expert (docs/performance.md)."""
    return 3 * s.I * s.H + 4 * ((2 * s.I // 128) * (s.H // 128) + (s.H // 128) * (s.I // 128))


def route(load, rng, pop, T, K):
    """int32 ids [T, K] (global, distinct per token) and float32 weights in
    [0.05, 1.05). uniform: the top K of N(0, 1) logits. skewed: bench_layer.cuh's
    draw, K times per token, of an expert not yet taken with probability
    proportional to pop (vectorized over tokens)."""
    E = pop.size
    if load == "uniform":
        ids = np.argsort(-rng.standard_normal((T, E)), axis=1)[:, :K]
    else:
        left = np.broadcast_to(pop, (T, E)).copy()   # taken experts drop to 0
        rows = np.arange(T)
        ids = np.empty((T, K), np.int64)
        for k in range(K):
            cum = np.cumsum(left, axis=1)
            u = rng.random(T) * cum[:, -1]
            e = np.minimum((cum <= u[:, None]).sum(axis=1), E - 1)
            while True:   # rounding at the end of the scan: step back to an expert not taken
                bad = left[rows, e] == 0
                if not bad.any():
                    break
                e[bad] -= 1
            ids[:, k] = e
            left[rows, e] = 0
    wts = 0.05 + rng.random((T, K))
    return np.ascontiguousarray(ids, dtype=np.int32), wts.astype(np.float32)


def load_stats(ids, s):
    """(rows of the hottest local expert, active local experts)."""
    loc = ids.reshape(-1).astype(np.int64) - s.off
    loc = loc[(loc >= 0) & (loc < s.E_loc)]
    cnt = np.bincount(loc, minlength=s.E_loc)
    return int(cnt.max()), int((cnt > 0).sum())


def time_runs(fns, sets, warmup, reps):
    """Median microseconds of each fns[j](weight set) over reps runs, after
    warmup untimed ones. Every iteration runs each fn once, the order flipping
    every iteration; the runs take consecutive weight sets, so with sets >= 2
    no run reads the set the run before it read. One synchronization, at the
    end."""
    ev = [[(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
          for _ in fns]
    c = 0
    for it in range(warmup + reps):
        for j in (range(len(fns)) if it % 2 == 0 else reversed(range(len(fns)))):
            w, c = c % sets, c + 1
            if it < warmup:
                fns[j](w)
                continue
            a, b = ev[j][it - warmup]
            a.record()
            fns[j](w)
            b.record()
    torch.cuda.synchronize()
    return [statistics.median(a.elapsed_time(b) for a, b in e) * 1e3 for e in ev]


def copy_bandwidth():
    """Device-to-device copy of 2 GiB: bytes read + written per second,
    median of 10 after 2 warm-ups."""
    n = 2 << 30
    src = torch.ones(n, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    us = time_runs([lambda w: dst.copy_(src)], 1, 2, 10)[0]
    src = dst = None
    torch.cuda.empty_cache()
    return 2.0 * n / (us * 1e-6)


def rel_l2(out, ref):
    a, b = out.float(), ref.float()
    num, den = torch.linalg.vector_norm(a - b).item(), torch.linalg.vector_norm(b).item()
    if not (math.isfinite(num) and math.isfinite(den)):
        return float("nan")
    return num / den if den > 0 else (0.0 if num == 0 else float("inf"))


# ---- the run --------------------------------------------------------------------------------------------------

def skip(reason):
    print(f"triton_peer: skipped ({reason})")
    sys.exit(0)


def parse_args():
    ap = argparse.ArgumentParser(description="fp8moe against a vLLM-style Triton fused MoE (see the top comment)")
    ap.add_argument("--config", default="all", help="comma list of " + ", ".join(SHAPES) + ", or all")
    ap.add_argument("--tokens", default="1,16,128,1024")
    ap.add_argument("--loads", default="uniform,skewed")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--sweep-reps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-sets", type=int, default=16)
    ap.add_argument("--gemm1-out", choices=("fp32", "bf16"), default="fp32",
                    help="Triton GEMM1 output dtype (vLLM: bf16; see the top comment)")
    ap.add_argument("--gemm2-out", choices=("bf16", "fp32"), default="bf16", help="Triton GEMM2 output dtype")
    ap.add_argument("--csv", default=None)
    a = ap.parse_args()
    a.names = list(SHAPES) if a.config == "all" else [c.strip() for c in a.config.split(",") if c.strip()]
    a.tokens = [int(t) for t in a.tokens.split(",") if t.strip()]
    a.loads = [v.strip() for v in a.loads.split(",") if v.strip()]
    for c in a.names:
        if c not in SHAPES:
            ap.error(f"unknown config '{c}' (known: {', '.join(SHAPES)})")
    if not a.tokens or min(a.tokens) < 1 or any(v not in ("uniform", "skewed") for v in a.loads) or a.reps < 1:
        ap.error("--tokens wants positive counts, --loads uniform and/or skewed, --reps >= 1")
    return a


def main():
    global np
    args = parse_args()
    if torch is None:
        skip(_NO_TORCH)
    if triton is None:
        skip(_NO_TRITON)
    if not torch.cuda.is_available():
        skip("no CUDA GPU visible to PyTorch")
    try:
        import numpy as np
    except ImportError:
        skip("no numpy")
    cc = torch.cuda.get_device_capability(0)
    if cc < (8, 9) or not hasattr(torch, "float8_e4m3fn"):
        skip(f"{torch.cuda.get_device_name(0)} (cc {cc[0]}.{cc[1]}) or this torch has no FP8 e4m3 support")
    from torch.utils import cpp_extension
    if cpp_extension.CUDA_HOME is None:
        skip("no CUDA toolkit (nvcc) for the binding's JIT build")
    if cc == (9, 0) and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0a"   # wgmma + TMA: the Hopper path
    sys.path.insert(0, os.path.join(REPO, "examples", "torch"))
    import fp8moe_torch as fm

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    dt1, dt2 = dtypes[args.gemm1_out], dtypes[args.gemm2_out]
    prop = torch.cuda.get_device_properties(0)
    l2 = getattr(prop, "L2_cache_size", 0) or (50 << 20)   # older torch lacks the field: an H100's 50 MB
    shapes = [SHAPES[c] for c in args.names]
    build = []
    for s in shapes:
        if (s.E, s.K, s.H, s.I) not in build:
            build.append((s.E, s.K, s.H, s.I))
    t0 = time.time()
    fm.load(shapes=build)
    print(f"fp8moe binding (shapes {build}, TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST')}) "
          f"loaded in {time.time() - t0:.0f} s", file=sys.stderr)
    bw = copy_bandwidth()
    print(f"triton_peer: {prop.name}, {prop.multi_processor_count} SMs, L2 {l2 / 2**20:.0f} MiB; "
          f"torch {torch.__version__} (CUDA {torch.version.cuda}), triton {triton.__version__}")
    print(f"copy floor: {bw / 1e9:.0f} GB/s (2 GiB device copy, read + written); seed {args.seed}, reps {args.reps}, "
          f"sweep reps {args.sweep_reps}, Triton GEMM1 / GEMM2 out {args.gemm1_out} / {args.gemm2_out}")
    cols = "config T load impl time_us floor_us floor_pct weight_bytes sets hot active rel_l2 status note".split()
    print(f"{'config':8} {'T':>5} {'load':7} {'impl':6} {'time_us':>9} {'floor_us':>9} {'floor%':>6} "
          f"{'rel_l2':>8} {'status':6} note")
    rows = []

    def emit(r):
        rows.append(r)
        rl = "-" if r["rel_l2"] == "" else f"{r['rel_l2']:.2e}"
        print(f"{r['config']:8} {r['T']:>5} {r['load']:7} {r['impl']:6} {r['time_us']:>9.1f} {r['floor_us']:>9.1f} "
              f"{r['floor_pct']:>6.1f} {rl:>8} {r['status']:6} {r['note']}", flush=True)

    for s in shapes:
        key = [args.seed, s.E, s.K, s.H, s.I, s.off]   # a shape's data do not depend on the other shapes run
        rng = np.random.default_rng(key)
        gen = torch.Generator(device="cuda")
        gen.manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))
        pop = np.exp(1.2 * rng.standard_normal(s.E))   # per expert, fixed for the shape
        eb = expert_bytes(s)
        plans = []
        for T in args.tokens:
            for load in args.loads:
                ids, wts = route(load, rng, pop, T, s.K)
                hot, active = load_stats(ids, s)
                want = 1 if active == 0 else max(1, min(args.max_sets, math.ceil(3.0 * l2 / (active * eb))))
                plans.append((T, load, ids, wts, hot, active, want))
        free, _ = torch.cuda.mem_get_info()
        fit = max(1, int(0.8 * free / (s.E_loc * eb)) - 1)   # one set's worth left for activations and buffers
        nsets = min(fit, max(p[-1] for p in plans))
        print(f"[{s.name}] {s.title}: E={s.E} K={s.K} H={s.H} I={s.I}, local experts {s.E_loc} at {s.off}; "
              f"{nsets} weight set(s) of {s.E_loc * eb / 1e9:.2f} GB", file=sys.stderr)
        W = [weight_set(s, gen) for _ in range(nsets)]
        x = xs = None
        for T, load, ids_h, wts_h, hot, active, want in plans:
            if x is None or x.shape[0] != T:
                x = e4m3_codes((T, s.H), gen)
                xs = torch.rand((s.H // 128, T), generator=gen, device="cuda").add_(0.25)
            ids, wts = torch.from_numpy(ids_h).cuda(), torch.from_numpy(wts_h).cuda()
            sets = min(want, nsets)

            def run_fm(w):
                return fm.trtllm_fp8_block_scale_routed_moe(
                    (ids, wts), None, x, xs, *W[w], s.E, s.K, None, None, s.I, s.off, s.E_loc, None)

            def run_cfg(cfg, w):
                return triton_moe(x, xs, ids, wts, W[w], s, cfg, dt1, dt2)

            print(f"[{s.name} T={T} {load}] sweeping the Triton configs", file=sys.stderr)
            if active:
                cfg, ntried, nfail = sweep(run_cfg, hot, sets, args.sweep_reps)
            else:
                cfg, ntried, nfail = (16, 64, 1, 4, 3), 0, 0   # no local slot: every config does nothing
            t_fm, t_tri = time_runs([run_fm, lambda w: run_cfg(cfg, w)], sets, 5, args.reps)
            out_fm, out_tri = run_fm(0), run_cfg(cfg, 0)
            err = rel_l2(out_tri, out_fm)
            ok = err <= TOL
            wb = active * eb
            floor = wb / bw * 1e6
            sets_note = f"sets={sets}" + (f" (wanted {want})" if sets < want else "")
            base = dict(config=s.name, T=T, load=load, floor_us=floor, weight_bytes=wb, sets=sets, hot=hot,
                        active=active)
            emit(dict(base, impl="fp8moe", time_us=t_fm, floor_pct=100 * floor / t_fm, rel_l2="", status="",
                      note=f"{sets_note} hot={hot} active={active}"))
            emit(dict(base, impl="triton", time_us=t_tri, floor_pct=100 * floor / t_tri, rel_l2=err,
                      status="PASS" if ok else "FAIL",
                      note=f"hot={hot} active={active} BM={cfg[0]} BN={cfg[1]} GM={cfg[2]} warps={cfg[3]} "
                           f"stages={cfg[4]} "
                           + (f"(best of {ntried - nfail} configs{f', {nfail} not built' if nfail else ''}); "
                              if active else "(no local slot: not swept); ")
                           + f"{t_tri / t_fm:.2f}x fp8moe's time"))
            out_fm = out_tri = None
        W = x = xs = None   # free this shape's weights before the next shape's
        torch.cuda.empty_cache()

    fails = sum(r["status"] == "FAIL" for r in rows)
    print("\n==== triton_peer summary (x = the slower one's time / the faster one's) ====")
    for s in shapes:
        for load in args.loads:
            faster, slower = [], []
            for T in args.tokens:
                f, t = [next(r["time_us"] for r in rows if (r["config"], r["T"], r["load"], r["impl"]) ==
                             (s.name, T, load, impl)) for impl in ("fp8moe", "triton")]
                (faster if f <= t else slower).append(f"T={T} ({max(f, t) / min(f, t):.2f}x)")
            desc = (["faster than Triton at " + ", ".join(faster)] if faster else []) + \
                   ([("slower at " if faster else "slower than Triton at ") + ", ".join(slower)] if slower else [])
            print(f"{s.name} {load}: fp8moe " + "; ".join(desc))
    print(f"{len(rows) // 2} rows compared, {fails} FAIL (rel L2 > {TOL:g})")
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            fh.write(f"# device={prop.name}; sms={prop.multi_processor_count}; l2_bytes={l2}; "
                     f"copy_GBps={bw / 1e9:.1f}; torch={torch.__version__}; triton={triton.__version__}; "
                     f"seed={args.seed}; reps={args.reps}; gemm1_out={args.gemm1_out}; gemm2_out={args.gemm2_out}\n")
            wr = csv.DictWriter(fh, fieldnames=cols)
            wr.writeheader()
            for r in rows:
                wr.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        print(f"rows written to {args.csv}")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
