/* tests/gpu_test_ep.cu - expert parallelism with all-to-all dispatch and
 * combine (examples/ep_alltoall.cuh), on one GPU: N = 1, 2, 4, 8 simulated
 * ranks, each with its own tokens and E/N experts, the exchanges done by
 * device copies between the ranks' buffers.
 *
 * The check is exact. With batch_invariant set, a token's output row of a
 * layer call is the same bits whatever the other tokens of the call are, so
 * what rank d computes for a token it received equals row t of the same
 * rank's call over all tokens of every rank (local_expert_offset = d*E/N).
 * The expected EP output is then, per token, the fp32 sum of those rows of
 * its owner ranks, in the order the ranks first appear among its slots,
 * rounded to bf16 (made on the host); every element of the EP output must
 * equal it, and the output is poisoned first. A second step must give the
 * same bits. And the EP output must match the whole layer (all experts, one
 * call) within SPEC's tolerance, and equal it bit for bit with one rank.
 *
 * Cases: ranks with 0, 1, odd and > 512 tokens (the plan's scan runs in
 * chunks of 512); near-uniform routing, every slot on rank 0's experts, one
 * expert in every token's top-k, ids outside [0, E) (skipped; a token with
 * only those gets zeros). Fresh random data every run: the seed is printed,
 * FP8MOE_SEED=<n> replays one.
 */
#include <fp8moe/fp8moe.cuh>
#include <fp8moe/reference.h>

#include "gpu_util.h"
#include "moe_harness.cuh"
#include "ep_alltoall.cuh"

#include <numeric>
#include <vector>

FP8MOE_DEFINE(ep_small, 64, 6, 256, 256);

TestSuite(ep_alltoall, .init = fp8moe_test_require_gpu);

namespace {

const int E = 64, K = 6, H = 256, I = 256, SC = H / 128;

/* Device copies on one stream: the k-th send from a to b in a group goes to
 * the k-th recv at b from a, when the group ends. */
struct copy_transport : ep::transport {
  cudaStream_t stream = nullptr;
  struct msg {
    int from, to;
    void *buf;
    size_t bytes;
    bool matched;
  };
  std::vector<msg> sends, recvs;
  int copies = 0;
  cudaError_t group_begin() override {
    sends.clear();
    recvs.clear();
    return cudaSuccess;
  }
  cudaError_t send(int from, int to, const void *buf, size_t bytes) override {
    sends.push_back({from, to, const_cast<void *>(buf), bytes, false});
    return cudaSuccess;
  }
  cudaError_t recv(int at, int from, void *buf, size_t bytes) override {
    recvs.push_back({from, at, buf, bytes, false});
    return cudaSuccess;
  }
  cudaError_t group_end() override {
    for (msg &r : recvs) {
      msg *s = nullptr;
      for (msg &c : sends)
        if (!c.matched && c.from == r.from && c.to == r.to) {
          s = &c;
          break;
        }
      if (!s || s->bytes != r.bytes) return cudaErrorInvalidValue; /* a recv with no send of its size */
      s->matched = true;
      cudaError_t e = cudaMemcpyAsync(r.buf, s->buf, r.bytes, cudaMemcpyDeviceToDevice, stream);
      if (e != cudaSuccess) return e;
      copies++;
    }
    for (msg &c : sends)
      if (!c.matched) return cudaErrorInvalidValue; /* a send nobody receives */
    return cudaSuccess;
  }
};

enum routing { UNIFORM, ALL_ON_RANK0, ONE_HOT_EXPERT, INVALID_IDS };
const char *routing_name[] = {"near-uniform", "every slot on rank 0", "one expert in every token", "invalid ids"};

/* Packed top-k rows for T tokens. */
std::vector<int32_t> make_topk(fp8moe_rng *rng, int T, int N, routing kind) {
  std::vector<int32_t> ids;
  std::vector<float> w;
  const int e_loc = E / N;
  random_topk(rng, T, K, 0, kind == ALL_ON_RANK0 ? e_loc : E, ids, w);
  for (int t = 0; t < T; t++) {
    int32_t *row = ids.data() + (size_t)t * K;
    if (kind == ONE_HOT_EXPERT) {
      const int hot = 5;
      bool has = false;
      for (int k = 0; k < K; k++) has |= row[k] == hot;
      if (!has) row[rng_next(rng) % K] = hot;
    }
    if (kind == INVALID_IDS) {
      if (t % 7 == 3)
        for (int k = 0; k < K; k++) row[k] = E + (int)(rng_next(rng) % 100); /* no valid id at all */
      else if (rng_next(rng) % 2)
        row[rng_next(rng) % K] = E + 1;
    }
  }
  std::vector<int32_t> packed((size_t)T * K);
  for (size_t i = 0; i < packed.size(); i++) packed[i] = fp8moe_topk_pack(ids[i], w[i]);
  return packed;
}

/* One layer call over all tokens: experts [offset, offset + count) of w. */
std::vector<uint16_t> run_all(const weights &w, int offset, int count, const uint8_t *x, const float *xs,
                              const int32_t *topk, int T, uint16_t *out, void *ws, size_t ws_bytes) {
  fp8moe_args a;
  memset(&a, 0, sizeof a);
  a.num_tokens = T;
  a.local_expert_offset = offset;
  a.local_num_experts = count;
  a.hidden_states = x;
  a.hidden_states_scale = xs;
  a.w1 = w.w1 + w1_elems(w.c, offset);
  a.w1_scale = w.w1s + w1s_elems(w.c, offset);
  a.w2 = w.w2 + w2_elems(w.c, offset);
  a.w2_scale = w.w2s + w2s_elems(w.c, offset);
  a.topk_packed = topk;
  a.output = out;
  a.batch_invariant = 1;
  fp8moe_status s = ep_small_run_routed(&a, ws, ws_bytes, 0);
  cr_assert_eq(s, FP8MOE_OK, "run_routed(offset %d, %d experts): %s", offset, count, fp8moe_status_string(s));
  std::vector<uint16_t> h((size_t)T * H);
  CUDA_OK(cudaDeviceSynchronize());
  if (T > 0) dev_download(h.data(), out, h.size());
  return h;
}

void run_case(int N, const std::vector<int> &tokens, routing kind) {
  char what[160];
  snprintf(what, sizeof what, "ep N=%d %s", N, routing_name[kind]);
  fp8moe_rng rng{fp8moe_test_announce_seed(what)};
  const int T = std::accumulate(tokens.begin(), tokens.end(), 0), e_loc = E / N;
  fp8moe_config c{};
  c.num_experts = E;
  c.top_k = K;
  c.hidden = H;
  c.intermediate = I;
  weights w;
  make_weights(&w, c, E, &rng);

  /* all tokens of all ranks: rank r's are [first[r], first[r] + tokens[r]) */
  uint8_t *x = dev_alloc<uint8_t>((size_t)T * H + 16);
  float *xs = dev_alloc<float>((size_t)SC * T + 4);
  fill_fp8<<<256, 256>>>(x, (size_t)T * H, rng_next(&rng));
  fill_scale<<<64, 256>>>(xs, (size_t)SC * T, rng_next(&rng), 0.25f, 2.0f);
  CUDA_OK(cudaGetLastError());
  const std::vector<int32_t> packed = make_topk(&rng, T, N, kind);
  int32_t *topk = dev_alloc<int32_t>(packed.size() + 1);
  if (T > 0) CUDA_OK(cudaMemcpy(topk, packed.data(), packed.size() * 4, cudaMemcpyHostToDevice));
  const size_t ws_bytes = ep_small_workspace_size(T);
  void *ws = NULL;
  CUDA_OK(cudaMalloc(&ws, ws_bytes + 1));
  uint16_t *out_all = dev_alloc<uint16_t>((size_t)T * H + 8);

  /* the whole layer, and each rank's experts over all tokens */
  const std::vector<uint16_t> whole = run_all(w, 0, E, x, xs, topk, T, out_all, ws, ws_bytes);
  std::vector<std::vector<uint16_t>> part(N);
  for (int d = 0; d < N; d++) part[d] = run_all(w, d * e_loc, e_loc, x, xs, topk, T, out_all, ws, ws_bytes);
  /* per token, its owner ranks in the order they first appear among its
   * slots: the rows the combine sums, in its order */
  std::vector<std::vector<int>> owners(T);
  int pairs = 0; /* (token, owner rank) pairs: the rows dispatched */
  for (int t = 0; t < T; t++) {
    uint32_t seen = 0;
    for (int k = 0; k < K; k++) {
      const int id = fp8moe_topk_id(packed[(size_t)t * K + k]);
      if (id >= E || ((seen >> (id / e_loc)) & 1u)) continue;
      seen |= 1u << (id / e_loc);
      owners[t].push_back(id / e_loc);
    }
    pairs += (int)owners[t].size();
  }
  std::vector<uint16_t> expect((size_t)T * H);
  for (int t = 0; t < T; t++)
    for (int h = 0; h < H; h++) {
      float acc = 0.0f;
      for (int d : owners[t]) acc += fp8moe_bf16_to_float(part[d][(size_t)t * H + h]);
      expect[(size_t)t * H + h] = fp8moe_bf16_from_float(acc);
    }

  /* the ranks */
  copy_transport tr;
  std::vector<ep::rank> ranks(N);
  std::vector<ep::rank_io> io(N);
  std::vector<float *> own_xs(N);
  std::vector<void *> own_ws(N);
  int first = 0;
  for (int r = 0; r < N; r++) {
    ep::rank &R = ranks[r];
    R.g = ep::geometry{E, K, H, N};
    R.id = r;
    R.token_capacity = tokens[r];
    R.recv_capacity = T;
    R.stream = 0;
    CUDA_OK(ep::allocate(R));
    memset(&R.layer, 0, sizeof R.layer);
    R.layer.local_expert_offset = r * e_loc;
    R.layer.local_num_experts = e_loc;
    R.layer.w1 = w.w1 + w1_elems(c, r * e_loc);
    R.layer.w1_scale = w.w1s + w1s_elems(c, r * e_loc);
    R.layer.w2 = w.w2 + w2_elems(c, r * e_loc);
    R.layer.w2_scale = w.w2s + w2s_elems(c, r * e_loc);
    R.layer.batch_invariant = 1;
    R.run_routed = ep_small_run_routed;
    R.workspace_bytes = ep_small_workspace_size(T);
    CUDA_OK(cudaMalloc(&own_ws[r], R.workspace_bytes + 1));
    R.workspace = own_ws[r];

    /* rank r's tokens: its rows and top-k rows are slices, its scales a copy of its columns */
    ep::rank_io &in = io[r];
    in.num_tokens = tokens[r];
    in.x = x + (size_t)first * H;
    in.topk = topk + (size_t)first * K;
    own_xs[r] = dev_alloc<float>((size_t)SC * tokens[r] + 4);
    if (tokens[r] > 0)
      CUDA_OK(cudaMemcpy2D(own_xs[r], tokens[r] * 4, xs + first, (size_t)T * 4, tokens[r] * 4, SC,
                           cudaMemcpyDeviceToDevice));
    in.x_scale = own_xs[r];
    in.output = dev_alloc<uint16_t>((size_t)tokens[r] * H + 8);
    first += tokens[r];
  }
  tr.stream = 0;

  for (int pass = 0; pass < 2; pass++) {
    for (int r = 0; r < N; r++) CUDA_OK(cudaMemset(io[r].output, 0xff, (size_t)tokens[r] * H * 2)); /* NaN */
    ep::step_result res = ep::step(ranks, io, tr, [](int) {});
    cr_assert_eq(res.status, ep::STEP_OK, "%s: step (pass %d) failed on rank %d: %s (%s / %s)", what, pass,
                 res.rank, ep::step_status_string(res.status), cudaGetErrorString(res.cuda),
                 fp8moe_status_string(res.layer));
    CUDA_OK(cudaDeviceSynchronize());
    std::vector<uint16_t> got((size_t)T * H);
    first = 0;
    for (int r = 0; r < N; r++) {
      if (tokens[r] > 0) dev_download(got.data() + (size_t)first * H, io[r].output, (size_t)tokens[r] * H);
      first += tokens[r];
    }
    /* the traffic is what the routing says */
    int sent = 0, received = 0;
    for (int r = 0; r < N; r++) {
      sent += ranks[r].sent_rows();
      received += ranks[r].received_rows();
    }
    cr_assert_eq(sent, pairs, "%s: %d rows sent for %d (token, owner rank) pairs", what, sent, pairs);
    cr_assert_eq(received, pairs, "%s: %d rows received for %d pairs", what, received, pairs);
    size_t bad = 0, first_bad = 0;
    for (size_t i = 0; i < got.size(); i++)
      if (got[i] != expect[i] && bad++ == 0) first_bad = i;
    cr_assert_eq(bad, 0u,
                 "%s pass %d: %zu of %zu elements differ from the owners' rows summed in slot order; first at token "
                 "%zu column %zu: 0x%04x, expected 0x%04x",
                 what, pass, bad, got.size(), first_bad / H, first_bad % H, got[first_bad], expect[first_bad]);
    if (N == 1)
      cr_assert(memcmp(got.data(), whole.data(), got.size() * 2) == 0, "%s: one rank differs from the layer", what);
    double num = 0, den = 0;
    for (size_t i = 0; i < got.size(); i++) {
      const double g = fp8moe_bf16_to_float(got[i]), r = fp8moe_bf16_to_float(whole[i]);
      num += (g - r) * (g - r);
      den += r * r;
    }
    const double rel = T > 0 ? sqrt(num / (den > 0 ? den : 1)) : 0.0;
    cr_assert(rel <= 1e-2, "%s: relative L2 %.3e against the whole layer", what, rel);
    if (pass == 0) fprintf(stderr, "[%s] %d tokens, %d rows exchanged, rel L2 vs the whole layer %.2e\n", what, T,
                           pairs, rel);
  }

  for (int r = 0; r < N; r++) {
    cudaFree(own_xs[r]);
    cudaFree(own_ws[r]);
    cudaFree(io[r].output);
    ep::release(ranks[r]);
  }
  cudaFree(x);
  cudaFree(xs);
  cudaFree(topk);
  cudaFree(ws);
  cudaFree(out_all);
  free_weights(&w);
}

} // namespace

Test(ep_alltoall, one_rank) { run_case(1, {150}, UNIFORM); }
Test(ep_alltoall, two_ranks) {
  run_case(2, {37, 0}, UNIFORM);
  run_case(2, {1100, 37}, UNIFORM);
}
Test(ep_alltoall, four_ranks) {
  run_case(4, {1, 300, 0, 64}, UNIFORM);
  run_case(4, {129, 3, 77, 600}, INVALID_IDS);
}
Test(ep_alltoall, eight_ranks) {
  run_case(8, {5, 0, 129, 1, 77, 0, 3, 200}, UNIFORM);
  run_case(8, {64, 64, 64, 64, 64, 64, 64, 64}, ALL_ON_RANK0);
  run_case(8, {31, 200, 0, 1, 45, 513, 2, 90}, ONE_HOT_EXPERT);
}
Test(ep_alltoall, no_tokens) { run_case(4, {0, 0, 0, 0}, UNIFORM); }
