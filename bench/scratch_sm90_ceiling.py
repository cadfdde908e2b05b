# bench/scratch_sm90_ceiling.py - scratch: cuBLAS FP8 GEMM rates through torch._scaled_mm on the
# DeepSeek GEMM shapes, as a ceiling to compare the sm90 grouped GEMM with (per-tensor scales,
# and 1x128 / 128x128 block scales where this torch supports them).
import torch

def timeit(f):
    for _ in range(3):
        f()
    torch.cuda.synchronize()
    ts = []
    for _ in range(15):
        e0 = torch.cuda.Event(enable_timing=True); e1 = torch.cuda.Event(enable_timing=True)
        e0.record(); f(); e1.record(); torch.cuda.synchronize(); ts.append(e0.elapsed_time(e1))
    ts.sort()
    return ts[len(ts) // 2] * 1e-3

def bench(M, N, K):
    a = torch.randn(M, K, device="cuda").to(torch.float8_e4m3fn)
    w = torch.randn(N, K, device="cuda").to(torch.float8_e4m3fn)
    one = torch.tensor(1.0, device="cuda")
    t = timeit(lambda: torch._scaled_mm(a, w.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16))
    print(f"cuBLAS fp8 per-tensor   M={M} N={N} K={K}: {t*1e6:9.1f} us {2*M*N*K/t/1e12:7.1f} TFLOP/s", flush=True)
    try:
        sa = torch.rand(K // 128, M, device="cuda").t()          # [M, K/128], M-major
        sb = torch.rand(N // 128, K // 128, device="cuda").t()   # [K/128, N/128]
        t = timeit(lambda: torch._scaled_mm(a, w.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16))
        print(f"cuBLAS fp8 block-scaled M={M} N={N} K={K}: {t*1e6:9.1f} us {2*M*N*K/t/1e12:7.1f} TFLOP/s", flush=True)
    except Exception as e:
        print("block-scaled _scaled_mm not available:", str(e).splitlines()[0][:200])

bench(16384, 4096, 7168)
bench(16384, 7168, 2048)
bench(4096, 4096, 7168)
