/* bench/bench_moe.cu - roofline benchmark of the whole fp8moe layer.
 *
 * Times routing-to-bf16-output for the SPEC section 7 shapes and token counts,
 * three ways per (shape, T): fp8moe non-routed, fp8moe routed, and the same
 * layer built on cuBLASLt's block-scaled FP8 GEMM (bench_layer.cuh says how).
 * Each row is set against a floor measured in the same run:
 *
 *   copy bandwidth   cudaMemcpyAsync device-to-device of 2 GiB, bytes read +
 *                    written per second, median of 10;
 *   FP8 tensor rate  cuBLASLt e4m3 GEMM 8192^3 (TN, fp32 compute, bf16 out),
 *                    best of the heuristic's candidates, median of 20; with
 *                    and without fast accumulation, the faster one used;
 *   weight bytes     fp8 w1 + w2 and their fp32 scales of every local expert
 *                    that got at least one slot;
 *   FLOPs            2 * local slots * (2I*H + H*I);
 *   floor            max(weight bytes / bandwidth, FLOPs / tensor rate).
 *
 * Usage: bench_moe [--config dsv3,kimi,qwen235,qwen30,mixtral,ep] [--tokens 1,16,...]
 *                  [--reps N] [--warmup N] [--quick] [--no-peer] [--pdl 0|1] [--load uniform|both]
 *                  [--features] [--graph] [--csv FILE]
 *                  [--seed S] [--max-sets N]
 * Progress goes to stderr, the table to stdout. Seed: --seed, else env
 * FP8MOE_SEED, else the clock; it is printed.
 *
 * Build: meson (bench/meson.build), or
 *   nvcc -std=c++17 -O3 -Iinclude -gencode arch=compute_90a,code=sm_90a \
 *        bench/bench_moe.cu bench/bench_cfg_*.cu -lcublasLt -o bench_moe
 */
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <algorithm>
#include <string>
#include <vector>

#include <fp8moe/fp8moe.h>

#include "bench_moe.h"
#include "bench_util.cuh"


void bench_fill_row(bench_row &r, double weight_bytes, double flops, const bench_env &env) {
  const double t_bw = weight_bytes / env.copy_Bps, t_fl = flops / env.fp8_flops;
  const double fl = std::max(t_bw, t_fl);
  r.floor_us = fl * 1e6;
  const bool have = isfinite(r.time_us) && r.time_us > 0;
  r.floor_pct = have && fl > 0 ? 100.0 * r.floor_us / r.time_us : NAN;
  r.weight_GBps = have ? weight_bytes / (r.time_us * 1e-6) / 1e9 : NAN;
  r.tflops = have ? flops / (r.time_us * 1e-6) / 1e12 : NAN;
  r.bound = fl <= 0 ? "-" : t_bw >= t_fl ? "bw" : "compute";
}

/* ---- the configurations (SPEC section 7) ---- */

static const bench_config CONFIGS[] = {
    {"dsv3", "DeepSeek-V3/R1", 256, 8, 7168, 2048, 0, 256, FP8MOE_ROUTING_DEEPSEEK_V3, 8, 4, 2.5f, 1, bench_shape_dsv3},
    {"kimi", "Kimi-K2", 384, 8, 7168, 2048, 0, 384, FP8MOE_ROUTING_DEEPSEEK_V3, 1, 1, 2.827f, 1, bench_shape_kimi},
    {"qwen235", "Qwen3-MoE 235B", 128, 8, 4096, 1536, 0, 128, FP8MOE_ROUTING_RENORMALIZE, 0, 0, 0.0f, 0,
     bench_shape_qwen235},
    {"qwen30", "Qwen3-MoE 30B", 128, 8, 2048, 768, 0, 128, FP8MOE_ROUTING_RENORMALIZE, 0, 0, 0.0f, 0,
     bench_shape_qwen30},
    {"mixtral", "Mixtral-style", 8, 2, 4096, 14336, 0, 8, FP8MOE_ROUTING_RENORMALIZE, 0, 0, 0.0f, 0,
     bench_shape_mixtral},
    {"ep", "EP shard (DeepSeek-V3, 32 of 256 experts at 64)", 256, 8, 7168, 2048, 64, 32,
     FP8MOE_ROUTING_DEEPSEEK_V3, 8, 4, 2.5f, 1, bench_shape_dsv3},
};
static const int NCONFIGS = (int)(sizeof CONFIGS / sizeof CONFIGS[0]);


/* ---- command line ---- */

static void usage(void) {
  fprintf(stderr,
          "usage: bench_moe [--config NAMES] [--tokens LIST] [--reps N] [--warmup N] [--quick]\n"
          "                 [--no-peer] [--pdl 0|1] [--load L] [--features] [--graph] [--csv FILE]\n"
          "                 [--seed S] [--max-sets N]\n"
          "  --config   comma list of: dsv3 kimi qwen235 qwen30 mixtral ep (default: all, in that order)\n"
          "  --tokens   comma list of T (default: 1,16,128,1024,4096,16384)\n"
          "  --reps     timed runs per row, median (default 30; 15 when one run exceeds 50 ms)\n"
          "  --quick    --config dsv3 --tokens 1,128,4096\n"
          "  --no-peer  skip the cuBLASLt peer\n"
          "  --pdl      fp8moe_args.enable_pdl for the fp8moe rows (default 1)\n"
          "  --load     uniform (default) or both: also a routed-skewed row, the routed layer with a\n"
          "             trained-router-like skewed expert load (the busiest expert ~12x the mean)\n"
          "  --features also time one shared expert in the call (routed+shared), the same expert as a\n"
          "             separate call (one-expert), and batch_invariant=1 (routed-invariant)\n"
          "  --graph    time the fp8moe rows as CUDA-graph replays (one graph per weight set, as\n"
          "             serving engines run decode): the host's launch cost is not in the time\n"
          "  --csv      also write the rows as CSV (with the device and floors as # comments)\n");
}

static const char *fmt(char *buf, size_t n, double v, const char *f) {
  if (!isfinite(v)) snprintf(buf, n, "-");
  else snprintf(buf, n, f, v);
  return buf;
}

int main(int argc, char **argv) {
  bench_options opt;
  std::vector<std::string> names;
  const char *csv = NULL;
  bool seeded = false;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto next = [&]() -> const char * {
      if (i + 1 >= argc) {
        usage();
        exit(2);
      }
      return argv[++i];
    };
    if (a == "--config") names = bench::split(next());
    else if (a == "--tokens") {
      opt.tokens.clear();
      for (auto &t : bench::split(next())) opt.tokens.push_back(atoi(t.c_str()));
    } else if (a == "--reps") opt.reps = std::max(1, atoi(next()));
    else if (a == "--warmup") opt.warmup = std::max(0, atoi(next()));
    else if (a == "--quick") {
      names = {"dsv3"};
      opt.tokens = {1, 128, 4096};
    } else if (a == "--no-peer") opt.peer = 0;
    else if (a == "--pdl") opt.pdl = atoi(next()) != 0;
    else if (a == "--features") opt.features = 1;
    else if (a == "--graph") opt.graph = 1;
    else if (a == "--load") {
      std::string l = next();
      if (l != "uniform" && l != "skewed" && l != "both") {
        usage();
        return 2;
      }
      opt.skewed = l != "uniform";
    }
    else if (a == "--csv") csv = next();
    else if (a == "--seed") opt.seed = strtoull(next(), NULL, 0), seeded = true;
    else if (a == "--max-sets") opt.max_sets = std::max(1, atoi(next()));
    else if (a == "--help" || a == "-h") {
      usage();
      return 0;
    } else {
      fprintf(stderr, "bench_moe: unknown option %s\n", a.c_str());
      usage();
      return 2;
    }
  }
  opt.slow_reps = std::min(opt.slow_reps, opt.reps);
  if (opt.tokens.empty()) opt.tokens = {1, 16, 128, 1024, 4096, 16384};
  for (int t : opt.tokens)
    if (t <= 0) {
      fprintf(stderr, "bench_moe: token counts must be positive\n");
      return 2;
    }
  std::vector<const bench_config *> cfgs;
  if (names.empty())
    for (int i = 0; i < NCONFIGS; i++) cfgs.push_back(&CONFIGS[i]);
  for (auto &n : names) {
    const bench_config *c = NULL;
    for (int i = 0; i < NCONFIGS; i++)
      if (n == CONFIGS[i].name) c = &CONFIGS[i];
    if (!c) {
      fprintf(stderr, "bench_moe: unknown config %s\n", n.c_str());
      usage();
      return 2;
    }
    cfgs.push_back(c);
  }
  if (!seeded) {
    const char *e = getenv("FP8MOE_SEED");
    if (e) opt.seed = strtoull(e, NULL, 0);
    else {
      struct timespec ts;
      timespec_get(&ts, TIME_UTC);
      opt.seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20);
    }
  }

  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    fprintf(stderr, "bench_moe: no CUDA device here; nothing to run.\n");
    return 1;
  }
  cudaDeviceProp prop;
  BENCH_CUDA(cudaGetDeviceProperties(&prop, 0));
  int sm_khz = 0, mem_khz = 0;
  cudaDeviceGetAttribute(&sm_khz, cudaDevAttrClockRate, 0);
  cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, 0);
  int lt_ver = (int)cublasLtGetVersion();
  fprintf(stderr, "bench_moe: seed %llu (FP8MOE_SEED=%llu reproduces the data)\n", (unsigned long long)opt.seed,
          (unsigned long long)opt.seed);
  fprintf(stderr, "bench_moe: %s, %d SMs, L2 %.0f MB; measuring the floors\n", prop.name, prop.multiProcessorCount,
          prop.l2CacheSize / 1048576.0);

  bench_env env;
  env.l2_bytes = (size_t)prop.l2CacheSize;
  size_t tot = 0;
  BENCH_CUDA(cudaMemGetInfo(&env.free_bytes, &tot));
  double copy_ms = 0, fp8_fast = NAN, fp8_slow = NAN;
  int n_fast = 0, n_slow = 0;
  if (bench::measure_copy(&env.copy_Bps, &copy_ms)) return 1;
  fprintf(stderr, "bench_moe: copy %.0f GB/s (2 GiB in %.3f ms, read + write counted)\n", env.copy_Bps / 1e9, copy_ms);
  if (bench::measure_fp8(1, &fp8_fast, &n_fast)) fprintf(stderr, "bench_moe: FP8 GEMM with fast accumulation failed\n");
  if (bench::measure_fp8(0, &fp8_slow, &n_slow)) fprintf(stderr, "bench_moe: FP8 GEMM without fast accumulation failed\n");
  env.fp8_flops = std::max(isfinite(fp8_fast) ? fp8_fast : 0.0, isfinite(fp8_slow) ? fp8_slow : 0.0);
  if (!(env.fp8_flops > 0)) {
    fprintf(stderr, "bench_moe: no FP8 GEMM ran; cannot set the compute floor\n");
    return 1;
  }
  fprintf(stderr, "bench_moe: FP8 e4m3 GEMM 8192^3: %.0f TFLOP/s fast-accum (%d algos), %.0f TFLOP/s fp32-promoted (%d algos)\n",
          fp8_fast / 1e12, n_fast, fp8_slow / 1e12, n_slow);

  std::vector<bench_row> rows;
  int failures = 0;
  for (const bench_config *c : cfgs) {
    size_t before = rows.size();
    int rc = c->fn(*c, opt, env, rows);
    cudaError_t ce = cudaDeviceSynchronize();
    if (rc || ce != cudaSuccess) {
      fprintf(stderr, "bench_moe: %s failed (%s)\n", c->name, ce != cudaSuccess ? cudaGetErrorString(ce) : "see above");
      failures++;
      if (ce != cudaSuccess) break; /* a sticky error: the context is gone */
    }
    (void)before;
  }

  /* ---- the table ---- */
  char head[1024];
  snprintf(head, sizeof head,
           "device=%s; sms=%d; l2_MB=%.0f; sm_clock_MHz=%d; mem_clock_MHz=%d; mem_bus_bits=%d; cublasLt=%d; "
           "copy_GBps=%.1f; fp8_TFLOPs=%.1f; fp8_fast_accum_TFLOPs=%.1f; fp8_promoted_TFLOPs=%.1f; reps=%d; "
           "warmup=%d; seed=%llu; enable_pdl=%d; graph=%d",
           prop.name, prop.multiProcessorCount, prop.l2CacheSize / 1048576.0, sm_khz / 1000, mem_khz / 1000,
           prop.memoryBusWidth, lt_ver, env.copy_Bps / 1e9, env.fp8_flops / 1e12, fp8_fast / 1e12, fp8_slow / 1e12,
           opt.reps, opt.warmup, (unsigned long long)opt.seed, opt.pdl, opt.graph);
  printf("# %s\n", head);
  printf("# floors: copy bandwidth = cudaMemcpyAsync D2D of 2 GiB (read + write), median of 10; FP8 rate = best\n"
         "#   cuBLASLt e4m3 8192^3 TN GEMM (fp32 compute, bf16 out), median of 20, faster of fast-accum/promoted.\n"
         "# floor = max(touched expert weight bytes / bandwidth, 2*slots*3*H*I / FP8 rate). The cublaslt-peer\n"
         "#   rows get their per-expert row counts from a host copy of the routing made before timing.\n");
  printf("%-8s %6s %-14s %11s %11s %7s %11s %8s %-7s  %s\n", "config", "T", "mode", "time_us", "floor_us",
         "floor%", "weight_GBps", "TFLOPs", "bound", "note");
  for (const bench_row &r : rows) {
    char a[32], b[32], c[32], d[32], e[32];
    printf("%-8s %6d %-14s %11s %11s %7s %11s %8s %-7s  %s\n", r.config.c_str(), r.T, r.mode.c_str(),
           fmt(a, sizeof a, r.time_us, "%.1f"), fmt(b, sizeof b, r.floor_us, "%.1f"),
           fmt(c, sizeof c, r.floor_pct, "%.1f"), fmt(d, sizeof d, r.weight_GBps, "%.0f"),
           fmt(e, sizeof e, r.tflops, "%.1f"), r.bound.c_str(), r.note.c_str());
  }
  if (csv) {
    FILE *f = fopen(csv, "w");
    if (!f) {
      fprintf(stderr, "bench_moe: cannot write %s\n", csv);
      return 1;
    }
    fprintf(f, "# %s\n", head);
    fprintf(f, "config,T,mode,time_us,floor_us,floor_pct,weight_GBps,TFLOPs,bound,note\n");
    for (const bench_row &r : rows) {
      std::string note = r.note;
      std::replace(note.begin(), note.end(), '"', '\'');
      fprintf(f, "%s,%d,%s,%.3f,%.3f,%.3f,%.3f,%.4f,%s,\"%s\"\n", r.config.c_str(), r.T, r.mode.c_str(), r.time_us,
              r.floor_us, r.floor_pct, r.weight_GBps, r.tflops, r.bound.c_str(), note.c_str());
    }
    fclose(f);
    fprintf(stderr, "bench_moe: wrote %s\n", csv);
  }
  return failures ? 1 : 0;
}
