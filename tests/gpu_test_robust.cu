/* tests/gpu_test_robust.cu - bad arguments, hostile data, scale, determinism.
 *
 * - every argument check returns its status, launches nothing (checked by
 *   capturing the call into a CUDA graph and counting its nodes: zero) and
 *   leaves the poisoned output untouched;
 * - hostile routed ids / weights / logits / scales / fp8 inputs: no fault,
 *   results as SPEC defines (compared with the CPU reference, NaN where the
 *   reference has NaN, finite and close elsewhere);
 * - T = 65536 at H = 7168 (T*K*H > 2^31: 64-bit index math), E = 512 with K = 16;
 * - bitwise identical output across runs, graph replays, and two streams
 *   running concurrently.
 */
#include <fp8moe/fp8moe.cuh>
#include <fp8moe/reference.h>

#include "gpu_util.h"
#include "moe_harness.cuh"

FP8MOE_DEFINE(dsv3, 256, 8, 7168, 2048);
FP8MOE_DEFINE(qwen30, 128, 8, 2048, 768);
FP8MOE_DEFINE(wide, 512, 16, 1024, 256);

static const instance DSV3 = {"DeepSeek-V3", {256, 8, 7168, 2048}, dsv3_workspace_size, dsv3_run, dsv3_run_routed,
                              FP8MOE_ROUTING_DEEPSEEK_V3, 8, 4, 2.5f, 1};
static const instance QWEN30 = {"Qwen3-30B", {128, 8, 2048, 768}, qwen30_workspace_size, qwen30_run,
                                qwen30_run_routed, FP8MOE_ROUTING_RENORMALIZE, 0, 0, 0.f, 0};
static const instance WIDE = {"E512-K16", {512, 16, 1024, 256}, wide_workspace_size, wide_run, wide_run_routed,
                              FP8MOE_ROUTING_DEEPSEEK_V3, 16, 8, 1.5f, 1};

TestSuite(robust, .init = fp8moe_test_require_gpu, .timeout = 1200);

/* ---- argument validation: status, nothing launched, output untouched ---- */

static size_t captured_nodes(const instance &in, const fp8moe_args *a, void *ws, size_t bytes, int routed,
                             fp8moe_status *st) {
  cudaStream_t s;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaGraph_t g;
  CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  *st = routed ? in.run_routed(a, ws, bytes, s) : in.run(a, ws, bytes, s);
  CUDA_OK(cudaStreamEndCapture(s, &g));
  size_t n = 0;
  CUDA_OK(cudaGraphGetNodes(g, NULL, &n));
  cudaGraphDestroy(g);
  cudaStreamDestroy(s);
  return n;
}

Test(robust, bad_arguments_launch_nothing) {
  const instance &in = QWEN30;
  fp8moe_rng rng = {fp8moe_test_seed()};
  weights w;
  make_weights(&w, in.c, in.c.num_experts, &rng);
  problem p;
  make_problem(&p, in, 64, &rng);
  std::vector<int32_t> ids;
  std::vector<float> wts;
  random_topk(&rng, p.T, in.c.top_k, 0, in.c.num_experts, ids, wts);
  set_routing(&p, in, ids, wts);
  const size_t nout = (size_t)p.T * in.c.hidden;

  struct bad_case {
    const char *what;
    int routed;
    fp8moe_status expect;
    void (*mutate)(fp8moe_args *, void **ws, size_t *bytes);
  };
  static const bad_case cases[] = {
      {"null hidden_states", 1, FP8MOE_ERROR_NULL_ARGUMENT, [](fp8moe_args *a, void **, size_t *) { a->hidden_states = NULL; }},
      {"null w2_scale", 1, FP8MOE_ERROR_NULL_ARGUMENT, [](fp8moe_args *a, void **, size_t *) { a->w2_scale = NULL; }},
      {"null output", 1, FP8MOE_ERROR_NULL_ARGUMENT, [](fp8moe_args *a, void **, size_t *) { a->output = NULL; }},
      {"negative T", 1, FP8MOE_ERROR_INVALID_NUM_TOKENS, [](fp8moe_args *a, void **, size_t *) { a->num_tokens = -1; }},
      {"E_loc + offset > E", 1, FP8MOE_ERROR_INVALID_EXPERT_RANGE,
       [](fp8moe_args *a, void **, size_t *) { a->local_expert_offset = 1; }},
      {"E_loc = 0", 1, FP8MOE_ERROR_INVALID_EXPERT_RANGE, [](fp8moe_args *a, void **, size_t *) { a->local_num_experts = 0; }},
      {"both routed forms", 1, FP8MOE_ERROR_INVALID_ROUTED_INPUT,
       [](fp8moe_args *a, void **, size_t *) { a->topk_ids = a->topk_packed; }},
      {"misaligned hidden_states", 1, FP8MOE_ERROR_MISALIGNED_POINTER,
       [](fp8moe_args *a, void **, size_t *) { a->hidden_states = (const char *)a->hidden_states + 8; }},
      {"misaligned w1", 1, FP8MOE_ERROR_MISALIGNED_POINTER,
       [](fp8moe_args *a, void **, size_t *) { a->w1 = (const char *)a->w1 + 4; }},
      {"misaligned workspace", 1, FP8MOE_ERROR_MISALIGNED_POINTER,
       [](fp8moe_args *, void **ws, size_t *b) { *ws = (char *)*ws + 16; *b -= 16; }},
      {"null workspace", 1, FP8MOE_ERROR_NULL_WORKSPACE, [](fp8moe_args *, void **ws, size_t *) { *ws = NULL; }},
      {"workspace too small", 1, FP8MOE_ERROR_WORKSPACE_TOO_SMALL, [](fp8moe_args *, void **, size_t *b) { *b -= 1; }},
      {"unknown method", 0, FP8MOE_ERROR_INVALID_ROUTING_METHOD, [](fp8moe_args *a, void **, size_t *) { a->routing_method = 6; }},
      {"Llama4 with K=8", 0, FP8MOE_ERROR_INVALID_ROUTING_PARAMS,
       [](fp8moe_args *a, void **, size_t *) { a->routing_method = FP8MOE_ROUTING_LLAMA4; }},
      {"n_group not dividing E", 0, FP8MOE_ERROR_INVALID_ROUTING_PARAMS,
       [](fp8moe_args *a, void **, size_t *) { a->routing_method = 2; a->n_group = 3; a->topk_group = 1; }},
      {"topk_group > n_group", 0, FP8MOE_ERROR_INVALID_ROUTING_PARAMS,
       [](fp8moe_args *a, void **, size_t *) { a->routing_method = 2; a->n_group = 8; a->topk_group = 9; }},
      {"K > topk_group*E/n_group", 0, FP8MOE_ERROR_INVALID_ROUTING_PARAMS,
       [](fp8moe_args *a, void **, size_t *) { a->routing_method = 2; a->n_group = 64; a->topk_group = 2; }},
      {"bad logits dtype", 0, FP8MOE_ERROR_INVALID_DTYPE,
       [](fp8moe_args *a, void **, size_t *) { a->logits_dtype = (fp8moe_dtype)7; }},
      {"null logits", 0, FP8MOE_ERROR_NULL_ARGUMENT, [](fp8moe_args *a, void **, size_t *) { a->routing_logits = NULL; }},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const bad_case &bc = cases[i];
    poison_output(&p, in);
    fp8moe_args a = make_args(&p, in, &w, 0, bc.routed ? PACKED : NONROUTED);
    void *ws = p.ws;
    size_t bytes = p.ws_bytes;
    bc.mutate(&a, &ws, &bytes);
    fp8moe_status st;
    size_t nodes = captured_nodes(in, &a, ws, bytes, bc.routed, &st);
    cr_expect_eq(st, bc.expect, "%s: got %s", bc.what, fp8moe_status_string(st));
    cr_expect_eq(nodes, 0, "%s: %zu operations were launched", bc.what, nodes);
    CUDA_OK(cudaDeviceSynchronize());
    std::vector<uint16_t> out(nout);
    dev_download(out.data(), p.out, nout);
    size_t touched = 0;
    for (size_t j = 0; j < nout; j++) touched += out[j] != (uint16_t)FP8MOE_TEST_POISON_BF16;
    cr_expect_eq(touched, 0, "%s: %zu output elements changed", bc.what, touched);
  }
  /* T = 0 is valid and launches nothing */
  fp8moe_args a = make_args(&p, in, &w, 0, PACKED);
  a.num_tokens = 0;
  fp8moe_status st;
  size_t nodes = captured_nodes(in, &a, p.ws, p.ws_bytes, 1, &st);
  cr_expect_eq(st, FP8MOE_OK);
  cr_expect_eq(nodes, 0);
  free_problem(&p);
  free_weights(&w);
}

/* ---- hostile data ---- */

/* Compare with the reference allowing non-finite values: the same elements
 * must be NaN, the same must be +-inf, and the finite ones must be close. */
static void check_nonfinite_aware(const problem *p, const instance &in, const weights *w,
                                  const std::vector<uint16_t> &out, const std::vector<int32_t> &ids,
                                  const std::vector<float> &wts, const char *what) {
  const size_t H = (size_t)in.c.hidden;
  const fp8moe_ref_moe_input ri = reference_input(p, w, 0, ids, wts);
  std::vector<uint16_t> ref((size_t)p->T * H);
  fp8moe_ref_moe(&in.c, &ri, NULL, p->T, ref.data(), NULL);
  std::vector<float> g, r;
  size_t mismatched_class = 0;
  for (size_t i = 0; i < ref.size(); i++) {
    cr_assert_neq(out[i], (uint16_t)FP8MOE_TEST_POISON_BF16, "%s: element %zu not written", what, i);
    float a = fp8moe_bf16_to_float(out[i]), b = fp8moe_bf16_to_float(ref[i]);
    if (isnan(b) || isinf(b)) {
      mismatched_class += !(isnan(a) == isnan(b) && isinf(a) == isinf(b));
    } else {
      mismatched_class += !isfinite(a);
      if (isfinite(a)) {
        g.push_back(a);
        r.push_back(b);
      }
    }
  }
  /* fp32 accumulation order may move a value across the overflow edge: allow
   * a vanishing fraction, never a systematic difference */
  cr_assert(mismatched_class <= ref.size() / 10000, "%s: %zu elements finite/non-finite differently from the reference",
            what, mismatched_class);
  double err = rel_l2(g.data(), r.data(), g.size());
  cr_log_info("%s: rel L2 %.3e over %zu finite elements, %zu class mismatches", what, err, g.size(), mismatched_class);
  cr_assert(err <= 1e-2, "%s: relative L2 error %.3e", what, err);
}

Test(robust, hostile_routed_input) {
  const instance &in = QWEN30;
  fp8moe_rng rng = {fp8moe_test_seed()};
  weights w;
  make_weights(&w, in.c, in.c.num_experts, &rng);
  problem p;
  make_problem(&p, in, 97, &rng);
  std::vector<int32_t> ids;
  std::vector<float> wts;
  random_topk(&rng, p.T, in.c.top_k, 0, in.c.num_experts, ids, wts);
  const int K = in.c.top_k;
  /* duplicated ids within a token: both slots contribute */
  for (int t = 0; t < p.T; t += 5) ids[(size_t)t * K + 1] = ids[(size_t)t * K];
  /* negative, NaN, +-inf weights */
  for (int t = 1; t < p.T; t += 7) wts[(size_t)t * K + 2] = -wts[(size_t)t * K + 2];
  wts[(size_t)3 * K + 0] = NAN;
  wts[(size_t)4 * K + 3] = INFINITY;
  wts[(size_t)6 * K + 5] = -INFINITY;
  /* ids out of range: negative, >= E, 0xFFFF */
  ids[(size_t)8 * K + 1] = -7;
  ids[(size_t)9 * K + 0] = in.c.num_experts;
  ids[(size_t)10 * K + 7] = 0xFFFF;
  set_routing(&p, in, ids, wts);
  std::vector<uint16_t> out = run_layer(&p, in, &w, 0, UNPACKED_FP32);
  int count = -1;
  dev_download(&count, p.invalid, 1);
  cr_assert_eq(count, 3, "invalid id count %d", count);
  check_nonfinite_aware(&p, in, &w, out, ids, wts, "hostile routed ids and weights");
  free_problem(&p);
  free_weights(&w);
}

Test(robust, hostile_logits) {
  const instance &in = DSV3;
  fp8moe_rng rng = {fp8moe_test_seed()};
  weights w;
  make_weights(&w, in.c, in.c.num_experts, &rng);
  problem p;
  make_problem(&p, in, 6, &rng);
  const int E = in.c.num_experts;
  for (int e = 0; e < E; e++) {
    p.h_logits[0 * E + e] = NAN;                                  /* all NaN */
    p.h_logits[1 * E + e] = (e % 3) ? NAN : (float)e;            /* some NaN */
    p.h_logits[2 * E + e] = 0.75f;                               /* all equal */
    p.h_logits[3 * E + e] = -50.0f - (float)(e % 17);            /* all negative */
    p.h_logits[4 * E + e] = (e % 5 == 0) ? INFINITY : -INFINITY; /* infinities */
  }
  CUDA_OK(cudaMemcpy(p.logits, p.h_logits.data(), p.h_logits.size() * 4, cudaMemcpyHostToDevice));
  std::vector<int32_t> ids;
  std::vector<float> wts;
  reference_route(&p, in, ids, wts);
  for (size_t i = 0; i < ids.size(); i++) cr_assert(ids[i] >= 0 && ids[i] < E, "reference id out of range");
  std::vector<uint16_t> out = run_layer(&p, in, &w, 0, NONROUTED);
  check_nonfinite_aware(&p, in, &w, out, ids, wts, "NaN/inf/equal/negative logits (DeepSeekV3)");
  free_problem(&p);
  free_weights(&w);
}

__global__ void set_bytes(uint8_t *p, size_t n, uint8_t v) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) p[i] = v;
}

Test(robust, hostile_scales_and_inputs) {
  const instance &in = QWEN30;
  fp8moe_rng rng = {fp8moe_test_seed()};
  weights w;
  make_weights(&w, in.c, in.c.num_experts, &rng);
  /* weight scales of 1e-8, 0 and 1e30 in some blocks */
  for (size_t i = 0; i < w.h_w1s.size(); i += 13) w.h_w1s[i] = (i / 13) % 2 ? 1e-8f : 0.0f;
  for (size_t i = 5; i < w.h_w2s.size(); i += 29) w.h_w2s[i] = 1e30f;
  CUDA_OK(cudaMemcpy(w.w1s, w.h_w1s.data(), w.h_w1s.size() * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(w.w2s, w.h_w2s.data(), w.h_w2s.size() * 4, cudaMemcpyHostToDevice));
  problem p;
  make_problem(&p, in, 50, &rng);
  std::vector<int32_t> ids;
  std::vector<float> wts;
  random_topk(&rng, p.T, in.c.top_k, 0, in.c.num_experts, ids, wts);
  set_routing(&p, in, ids, wts);
  std::vector<uint16_t> out = run_layer(&p, in, &w, 0, UNPACKED_FP32);
  check_nonfinite_aware(&p, in, &w, out, ids, wts, "weight scales 1e-8 / 0 / 1e30");

  /* all-zero fp8 activations: exact zeros out */
  size_t nx = (size_t)p.T * in.c.hidden;
  set_bytes<<<256, 256>>>(p.x, nx, 0);
  CUDA_OK(cudaGetLastError());
  out = run_layer(&p, in, &w, 0, UNPACKED_FP32);
  for (size_t i = 0; i < nx; i++) cr_assert(out[i] == 0 || out[i] == 0x8000, "zero input gave %04x at %zu", out[i], i);

  /* saturated +-448 activations (0x7E / 0xFE) */
  set_bytes<<<256, 256>>>(p.x, nx / 2, 0x7E);
  set_bytes<<<256, 256>>>(p.x + nx / 2, nx - nx / 2, 0xFE);
  CUDA_OK(cudaGetLastError());
  dev_download(p.h_x.data(), p.x, nx);
  out = run_layer(&p, in, &w, 0, UNPACKED_FP32);
  check_nonfinite_aware(&p, in, &w, out, ids, wts, "saturated +-448 activations");
  free_problem(&p);
  free_weights(&w);
}

/* ---- scale ---- */

Test(robust, deepseek_t65536_past_2pow31) {
  if (fp8moe_test_skip_tokens(65536, "deepseek_t65536_past_2pow31"))
    cr_skip_test("T = 65536 is above FP8MOE_TEST_MAX_TOKENS");
  const instance &in = DSV3;
  fp8moe_rng rng = {fp8moe_test_seed()};
  weights w;
  make_weights(&w, in.c, in.c.num_experts, &rng);
  problem p;
  make_problem(&p, in, 65536, &rng);
  cr_assert((long long)p.T * in.c.top_k * in.c.hidden > (1ll << 31), "the case must pass 2^31 elements");
  std::vector<int32_t> ids;
  std::vector<float> wts;
  random_topk(&rng, p.T, in.c.top_k, 0, in.c.num_experts, ids, wts);
  set_routing(&p, in, ids, wts);
  std::vector<uint16_t> out = run_layer(&p, in, &w, 0, UNPACKED_FP32);
  check_against_reference(&p, in, &w, 0, out, ids, wts, &rng, "T=65536 (T*K*H > 2^31)");
  free_problem(&p);
  free_weights(&w);
}

Test(robust, e512_k16) {
  const instance &in = WIDE;
  fp8moe_rng rng = {fp8moe_test_seed()};
  weights w;
  make_weights(&w, in.c, in.c.num_experts, &rng);
  static const int ts[] = {1, 300, 3000};
  for (int i = 0; i < 3; i++) {
    if (fp8moe_test_skip_tokens(ts[i], "e512_k16")) continue;
    problem p;
    make_problem(&p, in, ts[i], &rng);
    std::vector<int32_t> ids;
    std::vector<float> wts;
    reference_route(&p, in, ids, wts);
    std::vector<uint16_t> out = run_layer(&p, in, &w, 0, NONROUTED);
    check_against_reference(&p, in, &w, 0, out, ids, wts, &rng, "E=512 K=16 non-routed");
    free_problem(&p);
  }
  free_weights(&w);
}

/* ---- determinism ---- */

Test(robust, deterministic_runs_replays_and_streams) {
  const instance &in = DSV3;
  fp8moe_rng rng = {fp8moe_test_seed()};
  weights w;
  make_weights(&w, in.c, in.c.num_experts, &rng);
  problem p, q;
  /* 1100 tokens: 8800 rows over 256 experts, the Hopper GEMM path on cc 9.0 */
  make_problem(&p, in, 1100, &rng);
  make_problem(&q, in, 1100, &rng);
  /* q gets p's inputs, its own workspace and output */
  CUDA_OK(cudaMemcpy(q.x, p.x, (size_t)p.T * in.c.hidden, cudaMemcpyDeviceToDevice));
  CUDA_OK(cudaMemcpy(q.xs, p.xs, (size_t)(in.c.hidden / 128) * p.T * 4, cudaMemcpyDeviceToDevice));
  CUDA_OK(cudaMemcpy(q.logits, p.logits, (size_t)p.T * in.c.num_experts * 4, cudaMemcpyDeviceToDevice));
  CUDA_OK(cudaMemcpy(q.bias, p.bias, (size_t)in.c.num_experts * 4, cudaMemcpyDeviceToDevice));
  std::vector<uint16_t> first = run_layer(&p, in, &w, 0, NONROUTED);
  for (int r = 0; r < 3; r++) cr_assert(run_layer(&p, in, &w, 0, NONROUTED) == first, "run %d differs", r);

  /* two streams at once, separate workspaces */
  cudaStream_t s1, s2;
  CUDA_OK(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
  CUDA_OK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
  poison_output(&p, in);
  poison_output(&q, in);
  fp8moe_args a = make_args(&p, in, &w, 0, NONROUTED), b = make_args(&q, in, &w, 0, NONROUTED);
  for (int r = 0; r < 3; r++) {
    cr_assert_eq(in.run(&a, p.ws, p.ws_bytes, s1), FP8MOE_OK);
    cr_assert_eq(in.run(&b, q.ws, q.ws_bytes, s2), FP8MOE_OK);
  }
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<uint16_t> o1(first.size()), o2(first.size());
  dev_download(o1.data(), p.out, o1.size());
  dev_download(o2.data(), q.out, o2.size());
  cr_assert(o1 == first && o2 == first, "concurrent streams differ");

  /* graph replays */
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CUDA_OK(cudaStreamBeginCapture(s1, cudaStreamCaptureModeGlobal));
  cr_assert_eq(in.run(&a, p.ws, p.ws_bytes, s1), FP8MOE_OK);
  CUDA_OK(cudaStreamEndCapture(s1, &g));
  CUDA_OK(cudaGraphInstantiate(&ge, g, 0));
  for (int r = 0; r < 3; r++) {
    poison_output(&p, in);
    CUDA_OK(cudaGraphLaunch(ge, s1));
    CUDA_OK(cudaStreamSynchronize(s1));
    dev_download(o1.data(), p.out, o1.size());
    cr_assert(o1 == first, "graph replay %d differs", r);
  }
  cudaGraphExecDestroy(ge);
  cudaGraphDestroy(g);
  cudaStreamDestroy(s1);
  cudaStreamDestroy(s2);
  free_problem(&p);
  free_problem(&q);
  free_weights(&w);
}
