/* bench/bench_moe.h - what the benchmark's translation units share.
 *
 * bench_moe.cu owns the command line, the two floors (copy bandwidth and the
 * FP8 tensor rate, measured in the same run), the table and the CSV. Each
 * bench_cfg_*.cu instantiates fp8moe for one shape (FP8MOE_DEFINE) and the
 * per-shape harness of bench_layer.cuh, which times the layer three ways
 * (non-routed, routed, cuBLASLt peer) and returns one row per way. The
 * translation units are split by shape only so that the five instantiations
 * of the library compile in parallel.
 */
#ifndef FP8MOE_BENCH_MOE_H
#define FP8MOE_BENCH_MOE_H

#include <stdint.h>
#include <string>
#include <vector>

struct bench_config;
struct bench_options;
struct bench_env;
struct bench_row;

/* One shape's harness: appends its rows; returns 0, or nonzero on a hard
 * error (a CUDA failure that leaves the device unusable for this shape). */
typedef int (*bench_shape_fn)(const bench_config &cfg, const bench_options &opt, const bench_env &env,
                              std::vector<bench_row> &rows);

struct bench_config {
  const char *name;        /* command-line name: dsv3, kimi, qwen235, qwen30, mixtral, ep */
  const char *title;       /* SPEC section 7 name */
  int E, K, H, I;
  int local_offset, local_num;
  int method;              /* fp8moe_routing_method */
  int n_group, topk_group;
  float scale;             /* routed_scaling_factor */
  int use_bias;
  bench_shape_fn fn;
};

struct bench_options {
  std::vector<int> tokens;
  int reps = 30;           /* timed runs per row (median) */
  int warmup = 5;
  int slow_reps = 15;      /* used instead of reps when one run exceeds slow_ms */
  double slow_ms = 50.0;
  int max_sets = 16;       /* cap on rotated weight sets */
  int peer = 1;            /* run the cuBLASLt peer */
  int pdl = 1;             /* fp8moe_args.enable_pdl for the fp8moe rows */
  int skewed = 0;          /* also a routed row with a skewed expert load */
  int features = 0;        /* rows for the 0.3 features: shared expert, one-expert call, batch invariance */
  int graph = 0;           /* fp8moe rows: replay each run from a CUDA graph */
  uint64_t seed = 0;
};

/* What the device and the floors measured at start-up give every row. */
struct bench_env {
  size_t l2_bytes;
  size_t free_bytes;       /* device memory free at start */
  double copy_Bps;         /* device-to-device copy, bytes read + written per second */
  double fp8_flops;        /* FP8 tensor rate used for the floor (FLOP/s) */
};

struct bench_row {
  std::string config;
  int T;
  std::string mode;        /* nonrouted / routed / routed-skewed / cublaslt-peer / routed+shared / one-expert / routed-invariant */
  double time_us;          /* median; NaN when not run */
  double floor_us;
  double floor_pct;
  double weight_GBps;
  double tflops;
  std::string bound;       /* bw / compute */
  std::string note;
};

/* The per-shape entry points (bench_cfg_*.cu, via BENCH_SHAPE). */
int bench_shape_dsv3(const bench_config &, const bench_options &, const bench_env &, std::vector<bench_row> &);
int bench_shape_kimi(const bench_config &, const bench_options &, const bench_env &, std::vector<bench_row> &);
int bench_shape_qwen235(const bench_config &, const bench_options &, const bench_env &, std::vector<bench_row> &);
int bench_shape_qwen30(const bench_config &, const bench_options &, const bench_env &, std::vector<bench_row> &);
int bench_shape_mixtral(const bench_config &, const bench_options &, const bench_env &, std::vector<bench_row> &);

/* The rows of one (config, T) share the floor; this fills the derived columns. */
void bench_fill_row(bench_row &r, double weight_bytes, double flops, const bench_env &env);

#endif /* FP8MOE_BENCH_MOE_H */
