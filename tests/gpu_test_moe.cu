/* tests/gpu_test_moe.cu - the whole layer on the GPU against the CPU reference.
 *
 * Every SPEC section 7 configuration at T in {0, 1, 7, 13, 16, 128, 1000}
 * (DeepSeek-V3 also at 4096, Qwen3-30B also at 41 and 77), the EP shard, all tokens on one expert, experts
 * with no tokens, packed / unpacked / non-routed agreement, determinism,
 * CUDA-graph replay on new data, and out-of-range routed ids; the last four
 * both at a small T (the small-T layer, detail/small.cuh, where the build has
 * it) and at a larger one (the general pipeline). Fresh random data every
 * run (seed printed; FP8MOE_SEED=... reproduces). Outputs are poisoned before
 * each run and checked to be fully written. The reference runs on a random
 * sample of tokens (all of them when T <= 96), in parallel with OpenMP.
 */
#include <fp8moe/fp8moe.cuh>
#include <fp8moe/reference.h>

#include "gpu_util.h"
#include "moe_harness.cuh"

FP8MOE_DEFINE(dsv3, 256, 8, 7168, 2048);
FP8MOE_DEFINE(kimi, 384, 8, 7168, 2048);
FP8MOE_DEFINE(qwen235, 128, 8, 4096, 1536);
FP8MOE_DEFINE(qwen30, 128, 8, 2048, 768);
FP8MOE_DEFINE(mixtral, 8, 2, 4096, 14336);

static const instance DSV3 = {"DeepSeek-V3", {256, 8, 7168, 2048}, dsv3_workspace_size, dsv3_run, dsv3_run_routed,
                              FP8MOE_ROUTING_DEEPSEEK_V3, 8, 4, 2.5f, 1};
static const instance KIMI = {"Kimi-K2", {384, 8, 7168, 2048}, kimi_workspace_size, kimi_run, kimi_run_routed,
                              FP8MOE_ROUTING_DEEPSEEK_V3, 1, 1, 2.827f, 0};
static const instance QWEN235 = {"Qwen3-235B", {128, 8, 4096, 1536}, qwen235_workspace_size, qwen235_run,
                                 qwen235_run_routed, FP8MOE_ROUTING_RENORMALIZE, 0, 0, 0.f, 0};
static const instance QWEN30 = {"Qwen3-30B", {128, 8, 2048, 768}, qwen30_workspace_size, qwen30_run,
                                qwen30_run_routed, FP8MOE_ROUTING_RENORMALIZE, 0, 0, 0.f, 0};
static const instance MIXTRAL = {"Mixtral", {8, 2, 4096, 14336}, mixtral_workspace_size, mixtral_run,
                                 mixtral_run_routed, FP8MOE_ROUTING_RENORMALIZE, 0, 0, 0.f, 0};

TestSuite(moe, .init = fp8moe_test_require_gpu, .timeout = 900);

static const int TS[] = {0, 1, 7, 13, 16, 128, 1000};

Test(moe, deepseek_v3) {
  static const int ts[] = {0, 1, 7, 13, 16, 128, 1000, 4096};
  config_sweep(DSV3, ts, 8);
}
Test(moe, kimi_k2) { config_sweep(KIMI, TS, 7); }
Test(moe, qwen3_235b) { config_sweep(QWEN235, TS, 7); }
/* 41 and 77: odd T with 328 and 616 slots (the small-T layer's plan over
 * many chunks of 32 slots, where the build takes it that far) */
Test(moe, qwen3_30b) {
  static const int ts[] = {0, 1, 7, 13, 16, 41, 77, 128, 1000};
  config_sweep(QWEN30, ts, 9);
}
Test(moe, mixtral) { config_sweep(MIXTRAL, TS, 7); }

/* EP shard: 256 global experts, 32 local at offset 64; routing over all 256,
 * so most slots are not local and some tokens have no local slot at all. */
Test(moe, ep_shard) {
  const instance &in = DSV3;
  fp8moe_rng rng = {seed_and_log("ep_shard")};
  weights w;
  make_weights(&w, in.c, 32, &rng);
  static const int ts[] = {1, 8, 16, 128, 1000};
  for (int i = 0; i < 5; i++) {
    if (fp8moe_test_skip_tokens(ts[i], "ep_shard")) continue;
    problem p;
    make_problem(&p, in, ts[i], &rng);
    std::vector<int32_t> ids;
    std::vector<float> wts;
    random_topk(&rng, p.T, in.c.top_k, 0, in.c.num_experts, ids, wts);
    /* make token 0 have no local slot: exact zero row */
    for (int k = 0; k < in.c.top_k; k++) ids[k] = 128 + k;
    set_routing(&p, in, ids, wts);
    std::vector<uint16_t> out = run_layer(&p, in, &w, 64, PACKED);
    for (int h = 0; h < in.c.hidden; h++) cr_assert_eq(out[h], 0, "token with no local expert must be exact zeros");
    /* the packed form rounds weights to bf16: the reference gets the same */
    for (size_t j = 0; j < wts.size(); j++) wts[j] = fp8moe_bf16_to_float(fp8moe_bf16_from_float(wts[j]));
    check_against_reference(&p, in, &w, 64, out, ids, wts, &rng, "EP shard (packed)");
    reference_route(&p, in, ids, wts);
    out = run_layer(&p, in, &w, 64, NONROUTED);
    check_against_reference(&p, in, &w, 64, out, ids, wts, &rng, "EP shard non-routed");
    free_problem(&p);
  }
  free_weights(&w);
}

/* All tokens on the same K experts (one expert gets every token), and most
 * experts with no tokens at all. */
static void skewed_routing(int T) {
  if (fp8moe_test_skip_tokens(T, "skewed_routing")) return;
  const instance &in = QWEN30;
  fp8moe_rng rng = {seed_and_log("skewed_routing")};
  weights w;
  make_weights(&w, in.c, in.c.num_experts, &rng);
  problem p;
  make_problem(&p, in, T, &rng);
  std::vector<int32_t> ids;
  std::vector<float> wts;
  random_topk(&rng, p.T, in.c.top_k, 0, in.c.num_experts, ids, wts);
  for (int t = 0; t < p.T; t++)
    for (int k = 0; k < in.c.top_k; k++) ids[(size_t)t * in.c.top_k + k] = 17 + k; /* same experts for all */
  set_routing(&p, in, ids, wts);
  std::vector<uint16_t> out = run_layer(&p, in, &w, 0, UNPACKED_FP32);
  check_against_reference(&p, in, &w, 0, out, ids, wts, &rng, "all tokens on 8 experts");
  cr_assert(run_layer(&p, in, &w, 0, UNPACKED_FP32) == out, "T %d: two runs differ", T);
  /* only experts 40..43 used: 124 experts empty, uneven counts */
  random_topk(&rng, p.T, in.c.top_k > 4 ? 4 : in.c.top_k, 40, 4, ids, wts);
  {
    std::vector<int32_t> ids8((size_t)p.T * in.c.top_k);
    std::vector<float> w8(ids8.size());
    for (int t = 0; t < p.T; t++)
      for (int k = 0; k < in.c.top_k; k++) {
        ids8[(size_t)t * in.c.top_k + k] = k < 4 ? ids[(size_t)t * 4 + k] : 100 + k; /* 100..107 too */
        w8[(size_t)t * in.c.top_k + k] = 0.1f + 0.1f * k;
      }
    set_routing(&p, in, ids8, w8);
    out = run_layer(&p, in, &w, 0, UNPACKED_FP32);
    check_against_reference(&p, in, &w, 0, out, ids8, w8, &rng, "12 of 128 experts used");
  }
  free_problem(&p);
  free_weights(&w);
}

/* T = 8 and 16: the small-T layer (at 16, each expert's slots split into
 * lists of 8 rows; at 64, where the build takes it, 8 lists per expert) */
Test(moe, skewed_routing) {
  skewed_routing(8);
  skewed_routing(16);
  skewed_routing(64);
  skewed_routing(1000);
}

/* The GPU router's own output, fed back as routed input in every form, gives
 * bit-identical output; and two runs of the same input are bit-identical. */
static void forms_agree(int T) {
  if (fp8moe_test_skip_tokens(T, "forms_agree")) return;
  const instance &in = DSV3;
  fp8moe_rng rng = {seed_and_log("forms_agree")};
  weights w;
  make_weights(&w, in.c, in.c.num_experts, &rng);
  problem p;
  make_problem(&p, in, T, &rng);
  /* the GPU routing of these logits */
  fp8moe::detail::routing_params rp;
  rp.logits = p.logits;
  rp.logits_dtype = FP8MOE_DTYPE_FP32;
  rp.bias = p.bias;
  rp.bias_dtype = FP8MOE_DTYPE_FP32;
  rp.method = in.method;
  rp.n_group = in.n_group;
  rp.topk_group = in.topk_group;
  rp.routed_scaling_factor = in.scale;
  rp.num_tokens = p.T;
  rp.ids_out = p.ids;
  rp.weights_out = p.wts;
  cr_assert_eq((fp8moe::detail::routing_launch<256, 8>(rp, 0)), FP8MOE_OK);
  CUDA_OK(cudaDeviceSynchronize());
  size_t ns = (size_t)p.T * in.c.top_k;
  std::vector<int32_t> ids(ns);
  std::vector<float> wts(ns);
  dev_download(ids.data(), p.ids, ns);
  dev_download(wts.data(), p.wts, ns);
  std::vector<uint16_t> nonrouted = run_layer(&p, in, &w, 0, NONROUTED);
  std::vector<uint16_t> again = run_layer(&p, in, &w, 0, NONROUTED);
  cr_assert(nonrouted == again, "two non-routed runs differ");
  std::vector<uint16_t> pdl = run_layer(&p, in, &w, 0, NONROUTED, 1);
  cr_assert(nonrouted == pdl, "the non-routed run with enable_pdl differs from the one without");
  set_routing(&p, in, ids, wts);
  std::vector<uint16_t> unpacked = run_layer(&p, in, &w, 0, UNPACKED_FP32);
  cr_assert(unpacked == nonrouted, "unpacked fp32 routed output differs from non-routed with the same routing");
  std::vector<uint16_t> packed = run_layer(&p, in, &w, 0, PACKED);
  std::vector<uint16_t> unpacked_bf16 = run_layer(&p, in, &w, 0, UNPACKED_BF16);
  cr_assert(packed == unpacked_bf16, "packed and unpacked-bf16 outputs differ");
  std::vector<uint16_t> packed2 = run_layer(&p, in, &w, 0, PACKED);
  cr_assert(packed == packed2, "two packed runs differ");
  std::vector<uint16_t> packed_pdl = run_layer(&p, in, &w, 0, PACKED, 1);
  cr_assert(packed == packed_pdl, "the packed run with enable_pdl differs from the one without");
  check_against_reference(&p, in, &w, 0, nonrouted, ids, wts, &rng, "GPU routing fed back");
  free_problem(&p);
  free_weights(&w);
}

Test(moe, forms_agree_and_deterministic) {
  forms_agree(8);
  forms_agree(333);
}

/* Capture name_run_routed in a CUDA graph, with programmatic dependent launch
 * (its edges are captured as programmatic ones), then replay it on new data
 * copied into the same buffers. */
static void graph_replay(int T) {
  if (fp8moe_test_skip_tokens(T, "cuda_graph_replay")) return;
  const instance &in = QWEN235;
  fp8moe_rng rng = {seed_and_log("cuda_graph")};
  weights w;
  make_weights(&w, in.c, in.c.num_experts, &rng);
  problem p;
  make_problem(&p, in, T, &rng);
  std::vector<int32_t> ids;
  std::vector<float> wts;
  random_topk(&rng, p.T, in.c.top_k, 0, in.c.num_experts, ids, wts);
  set_routing(&p, in, ids, wts);
  cudaStream_t s;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  fp8moe_args a = make_args(&p, in, &w, 0, PACKED, 1);
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  fp8moe_status st = in.run_routed(&a, p.ws, p.ws_bytes, s);
  CUDA_OK(cudaStreamEndCapture(s, &g));
  cr_assert_eq(st, FP8MOE_OK, "%s", fp8moe_status_string(st));
  CUDA_OK(cudaGraphInstantiate(&ge, g, 0));
  for (int rep = 0; rep < 2; rep++) {
    /* new activations and new routing in the same buffers */
    size_t nx = (size_t)p.T * in.c.hidden;
    fill_fp8<<<512, 256>>>(p.x, nx, rng_next(&rng));
    CUDA_OK(cudaGetLastError());
    dev_download(p.h_x.data(), p.x, nx);
    random_topk(&rng, p.T, in.c.top_k, 0, in.c.num_experts, ids, wts);
    set_routing(&p, in, ids, wts);
    poison_output(&p, in);
    CUDA_OK(cudaGraphLaunch(ge, s));
    CUDA_OK(cudaStreamSynchronize(s));
    std::vector<uint16_t> out(nx);
    dev_download(out.data(), p.out, nx);
    for (size_t j = 0; j < wts.size(); j++) wts[j] = fp8moe_bf16_to_float(fp8moe_bf16_from_float(wts[j]));
    check_against_reference(&p, in, &w, 0, out, ids, wts, &rng, "CUDA graph replay");
  }
  cudaGraphExecDestroy(ge);
  cudaGraphDestroy(g);
  cudaStreamDestroy(s);
  free_problem(&p);
  free_weights(&w);
}

/* T = 5, 13 and 100: the small-T layer's cooperative kernel (100 where
 * the build takes it that far); T = 600,
 * T*K = 4800 rows over 128 experts: on Hopper the TMA + wgmma GEMMs run, so
 * their tensor maps (kernel parameters) are captured too. */
Test(moe, cuda_graph_replay) {
  graph_replay(5);
  graph_replay(13);
  graph_replay(100);
  graph_replay(600);
}

/* Out-of-range routed ids: no fault, no contribution, counted. */
static void invalid_routed_ids(int T) {
  if (fp8moe_test_skip_tokens(T, "invalid_routed_ids")) return;
  const instance &in = QWEN30;
  fp8moe_rng rng = {seed_and_log("invalid_ids")};
  weights w;
  make_weights(&w, in.c, in.c.num_experts, &rng);
  problem p;
  make_problem(&p, in, T, &rng);
  std::vector<int32_t> ids;
  std::vector<float> wts;
  random_topk(&rng, p.T, in.c.top_k, 0, in.c.num_experts, ids, wts);
  static const int bad[] = {-1, 128, 0xFFFF, -100000, 1 << 20, 129};
  int expected = 0;
  for (size_t j = 0; j < ids.size(); j += 7) {
    ids[j] = bad[expected % 6];
    expected++;
  }
  set_routing(&p, in, ids, wts);
  std::vector<uint16_t> out = run_layer(&p, in, &w, 0, UNPACKED_FP32);
  int count = -1;
  dev_download(&count, p.invalid, 1);
  cr_assert_eq(count, expected, "invalid id count %d, expected %d", count, expected);
  check_against_reference(&p, in, &w, 0, out, ids, wts, &rng, "invalid ids skipped");
  /* packed: only ids >= E are representable as invalid (0..65535) */
  std::vector<int32_t> pids = ids;
  int pexpected = 0;
  for (size_t j = 0; j < pids.size(); j++) {
    if (pids[j] < 0 || pids[j] >= in.c.num_experts) {
      pids[j] = 128 + (int)(j % 1000);
      pexpected++;
    }
  }
  set_routing(&p, in, pids, wts);
  out = run_layer(&p, in, &w, 0, PACKED);
  dev_download(&count, p.invalid, 1);
  cr_assert_eq(count, pexpected, "packed: invalid id count %d, expected %d", count, pexpected);
  for (size_t j = 0; j < wts.size(); j++) wts[j] = fp8moe_bf16_to_float(fp8moe_bf16_from_float(wts[j]));
  check_against_reference(&p, in, &w, 0, out, pids, wts, &rng, "invalid ids (packed)");
  free_problem(&p);
  free_weights(&w);
}

Test(moe, invalid_routed_ids) {
  invalid_routed_ids(6);
  invalid_routed_ids(100);
}
