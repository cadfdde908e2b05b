/* examples/demo_cpu.c - fp8moe's CPU reference on a DeepSeek-V3-shaped layer, no GPU needed.
 *
 *     gcc -std=c11 -O2 -Iinclude examples/demo_cpu.c -o demo_cpu -lm
 *     ./demo_cpu [num_tokens]          (add -fopenmp to spread tokens over cores)
 *
 * The shape is DeepSeek-V3's: E = 256 experts, top-8, hidden 7168,
 * intermediate 2048, DeepSeekV3 routing (8 groups, keep 4, scaling 2.5,
 * selection bias). All 256 experts' weights would take 11 GB, so this
 * process holds an expert-parallel shard, experts 64..71, as one GPU of an EP
 * deployment would (352 MB); slots routed elsewhere contribute nothing, and
 * the output is this shard's partial sum. The selection bias of the shard's
 * experts is raised a little so that the shard gets work.
 *
 * It runs the same layer three ways through fp8moe_reference_run, the entry
 * that takes the very fp8moe_args a GPU call takes (host pointers here):
 *   1. non-routed: router logits in, routing inside;
 *   2. routed, unpacked: the ids and fp32 weights of fp8moe_ref_route on the
 *      same logits - must match 1 bit for bit;
 *   3. routed, packed: the same top-k packed as (id << 16 | bf16 weight) -
 *      the weights are rounded to bf16, so it matches 1 to bf16 precision.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <fp8moe/reference.h>

enum { E = 256, K = 8, H = 7168, I = 2048, E_LOCAL = 8, OFFSET = 64, N_GROUP = 8, TOPK_GROUP = 4 };

static uint64_t rng_state = 0x5eed5eedull;
static uint64_t rng_next(void) {
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static float rng_normal(void) {
  float u1 = (float)((rng_next() >> 40) * (1.0 / 16777216.0)) + 1e-7f;
  float u2 = (float)((rng_next() >> 40) * (1.0 / 16777216.0));
  return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

/* n random fp8 e4m3 values ~ N(0, 32^2): one random byte picks one of 256 pre-drawn codes. */
static uint8_t *random_fp8(size_t n) {
  uint8_t codes[256], *p = (uint8_t *)aligned_alloc(64, (n + 63) / 64 * 64);
  size_t i;
  int j;
  if (!p) return NULL;
  for (j = 0; j < 256; j++) codes[j] = fp8moe_e4m3_from_float(32.0f * rng_normal());
  for (i = 0; i + 8 <= n; i += 8) {
    uint64_t r = rng_next();
    for (j = 0; j < 8; j++) p[i + j] = codes[(r >> (8 * j)) & 0xff];
  }
  for (; i < n; i++) p[i] = codes[rng_next() & 0xff];
  return p;
}

static float *filled(size_t n, float value) {
  float *p = (float *)malloc(n * sizeof(float));
  size_t i;
  if (p)
    for (i = 0; i < n; i++) p[i] = value * (0.75f + 0.5f * (float)((rng_next() >> 40) * (1.0 / 16777216.0)));
  return p;
}

static double seconds(void) {
  struct timespec ts;
  timespec_get(&ts, TIME_UTC);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double norm_bf16(const uint16_t *v, size_t n) {
  double s = 0;
  size_t i;
  for (i = 0; i < n; i++) s += (double)fp8moe_bf16_to_float(v[i]) * fp8moe_bf16_to_float(v[i]);
  return sqrt(s);
}

int main(int argc, char **argv) {
  const int T = argc > 1 && atoi(argv[1]) > 0 ? atoi(argv[1]) : 4;
  const fp8moe_config cfg = {E, K, H, I};
  size_t i, n_out = (size_t)T * H;
  uint16_t *x_bf16 = (uint16_t *)malloc(n_out * 2);
  uint8_t *x = (uint8_t *)aligned_alloc(64, (n_out + 63) / 64 * 64);
  float *x_scale = (float *)malloc(sizeof(float) * (H / 128) * T);
  uint8_t *w1 = random_fp8((size_t)E_LOCAL * 2 * I * H), *w2 = random_fp8((size_t)E_LOCAL * H * I);
  /* block scales: dequantized weights ~ N(0, 1/fan_in) */
  float *w1_scale = filled((size_t)E_LOCAL * (2 * I / 128) * (H / 128), 1.0f / (32.0f * sqrtf((float)H)));
  float *w2_scale = filled((size_t)E_LOCAL * (H / 128) * (I / 128), 1.0f / (32.0f * sqrtf((float)I)));
  float *logits = (float *)malloc(sizeof(float) * T * E), bias[E], *weights = (float *)malloc(sizeof(float) * T * K);
  int32_t *ids = (int32_t *)malloc(sizeof(int32_t) * T * K), *packed = (int32_t *)malloc(sizeof(int32_t) * T * K);
  uint16_t *out[3];
  double t_run[3], diff_packed = 0, ref_packed = 0;
  int v, local_slots = 0, same_bits;
  fp8moe_args a;
  fp8moe_status st;

  for (v = 0; v < 3; v++) out[v] = (uint16_t *)aligned_alloc(64, (n_out * 2 + 63) / 64 * 64);
  if (!x_bf16 || !x || !x_scale || !w1 || !w2 || !w1_scale || !w2_scale || !logits || !weights || !ids || !packed ||
      !out[0] || !out[1] || !out[2]) {
    fprintf(stderr, "out of memory\n");
    return 1;
  }

  /* activations: bf16 ~ N(0,1), quantized the way users with bf16 activations do it */
  for (i = 0; i < n_out; i++) x_bf16[i] = fp8moe_bf16_from_float(rng_normal());
  fp8moe_ref_quantize_activations(T, H, x_bf16, x, x_scale);
  for (i = 0; i < (size_t)T * E; i++) logits[i] = rng_normal();
  for (v = 0; v < E; v++) bias[v] = 0.1f * rng_normal() + (v >= OFFSET && v < OFFSET + E_LOCAL ? 0.5f : 0.0f);

  memset(&a, 0, sizeof a);
  a.num_tokens = T;
  a.local_expert_offset = OFFSET;
  a.local_num_experts = E_LOCAL;
  a.hidden_states = x;
  a.hidden_states_scale = x_scale;
  a.w1 = w1;
  a.w1_scale = w1_scale;
  a.w2 = w2;
  a.w2_scale = w2_scale;

  /* 1. non-routed */
  a.routing_method = FP8MOE_ROUTING_DEEPSEEK_V3;
  a.routing_logits = logits;
  a.logits_dtype = FP8MOE_DTYPE_FP32;
  a.routing_bias = bias;
  a.bias_dtype = FP8MOE_DTYPE_FP32;
  a.n_group = N_GROUP;
  a.topk_group = TOPK_GROUP;
  a.routed_scaling_factor = 2.5f;
  a.output = out[0];
  t_run[0] = seconds();
  st = fp8moe_reference_run(&cfg, &a, 0);
  t_run[0] = seconds() - t_run[0];
  if (st != FP8MOE_OK) {
    fprintf(stderr, "non-routed: %s\n", fp8moe_status_string(st));
    return 1;
  }

  /* the routing on its own, then 2. routed with unpacked fp32 weights */
  fp8moe_ref_route(FP8MOE_ROUTING_DEEPSEEK_V3, T, E, K, logits, bias, N_GROUP, TOPK_GROUP, 2.5f, ids, weights);
  for (i = 0; i < (size_t)T * K; i++) {
    packed[i] = fp8moe_topk_pack(ids[i], weights[i]);
    local_slots += ids[i] >= OFFSET && ids[i] < OFFSET + E_LOCAL;
  }
  a.routing_logits = NULL;
  a.routing_bias = NULL;
  a.topk_ids = ids;
  a.topk_weights = weights;
  a.topk_weights_dtype = FP8MOE_DTYPE_FP32;
  a.output = out[1];
  t_run[1] = seconds();
  st = fp8moe_reference_run(&cfg, &a, 1);
  t_run[1] = seconds() - t_run[1];
  if (st != FP8MOE_OK) {
    fprintf(stderr, "routed (unpacked): %s\n", fp8moe_status_string(st));
    return 1;
  }

  /* 3. routed, packed */
  a.topk_ids = NULL;
  a.topk_weights = NULL;
  a.topk_packed = packed;
  a.output = out[2];
  t_run[2] = seconds();
  st = fp8moe_reference_run(&cfg, &a, 1);
  t_run[2] = seconds() - t_run[2];
  if (st != FP8MOE_OK) {
    fprintf(stderr, "routed (packed): %s\n", fp8moe_status_string(st));
    return 1;
  }

  same_bits = memcmp(out[0], out[1], n_out * 2) == 0;
  for (i = 0; i < n_out; i++) {
    double d = (double)fp8moe_bf16_to_float(out[2][i]) - fp8moe_bf16_to_float(out[0][i]);
    diff_packed += d * d;
    ref_packed += (double)fp8moe_bf16_to_float(out[0][i]) * fp8moe_bf16_to_float(out[0][i]);
  }
  diff_packed = ref_packed > 0 ? sqrt(diff_packed / ref_packed) : sqrt(diff_packed);

  printf("fp8moe %s CPU reference, DeepSeek-V3 shape: E %d, top-%d, H %d, I %d, T %d\n", FP8MOE_VERSION_STRING, E, K,
         H, I, T);
  printf("expert shard: experts %d..%d held here, %d of %d routed slots local\n", OFFSET, OFFSET + E_LOCAL - 1,
         local_slots, T * K);
  printf("token 0 experts:");
  for (v = 0; v < K; v++) printf(" %d (%.3f)", ids[v], weights[v]);
  printf("\n");
  printf("non-routed         %7.3f s   |out| = %.6g\n", t_run[0], norm_bf16(out[0], n_out));
  printf("routed, fp32 ids   %7.3f s   |out| = %.6g   %s\n", t_run[1], norm_bf16(out[1], n_out),
         same_bits ? "identical to non-routed" : "DIFFERS from non-routed");
  printf("routed, packed     %7.3f s   |out| = %.6g   rel L2 vs non-routed %.2e (bf16 weights)\n", t_run[2],
         norm_bf16(out[2], n_out), diff_packed);
  /* the packed weights carry a bf16 rounding error (<= 2^-9 relative), and both outputs their own bf16
   * rounding (<= 2^-9 each): at most ~6e-3, typically ~3e-3; 1e-2 is the SPEC's accuracy contract */
  if (!same_bits || !(diff_packed <= 1e-2) || local_slots == 0) {
    printf("FAILED\n");
    return 1;
  }
  printf("OK\n");
  return 0;
}
