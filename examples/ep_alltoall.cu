/* examples/ep_alltoall.cu - expert parallelism with all-to-all dispatch and
 * combine over NCCL: each GPU holds its own tokens and E/N experts, and each
 * token travels only to the GPUs that own its experts.
 *
 * Build (from the repository root; NCCL's headers and library on the default
 * paths, else add -I<nccl>/include -L<nccl>/lib):
 *   nvcc -std=c++17 -O3 -Iinclude -gencode arch=compute_90a,code=sm_90a \
 *        examples/ep_alltoall.cu -o ep_alltoall -lnccl
 * Run (scripts/gpu-ep.sh builds and runs it beside examples/ep_nccl.cu):
 *   NCCL_NVLS_ENABLE=0 ./ep_alltoall [tokens_per_gpu=1024] [num_gpus=all visible]
 *
 * What it does. A DeepSeek-V3 layer (E=256, K=8, H=7168, I=2048) with random
 * FP8 weights over N GPUs of one process (ncclCommInitAll, one host thread
 * driving all GPUs; with one process per GPU each runs its own rank's part
 * of every phase). GPU r holds experts [r*E/N, (r+1)*E/N) and tokens
 * [r*T, (r+1)*T) of the global batch of N*T tokens, each with a random
 * top-8 of distinct experts (packed). One step (examples/ep_alltoall.cuh
 * says what each phase does):
 *   dispatch  plan and pack on the device; the per-destination counts
 *             exchanged (ncclSend/ncclRecv of one int per pair), copied to
 *             the host and waited for: ncclSend/ncclRecv take their element
 *             counts from the host, and num_tokens of the layer call is the
 *             received count. That cudaStreamSynchronize per GPU is the
 *             step's only host synchronization. Then each (token, owner
 *             GPU) pair's fp8 row, scales and top-k row, grouped
 *             ncclSend/ncclRecv.
 *   compute   dsv3_run_routed on the received tokens, local_expert_offset
 *             = r*E/N.
 *   combine   each result row back to the token's home GPU (grouped
 *             ncclSend/ncclRecv), summed there in fp32 in slot order of
 *             first appearance and rounded to bf16 once.
 * Nothing is allocated per step: the receive buffers and the workspace are
 * sized for the worst case, every GPU's tokens arriving at one GPU (N*T
 * rows). An engine that bounds its load imbalance sizes them smaller; the
 * step reports a rank that would overflow instead of writing past them.
 *
 * Checks. The same N*T tokens through the whole layer on GPU 0 (all E
 * experts) are the reference: the gathered EP output must match it within
 * SPEC's tolerance (relative L2 <= 1e-2, every value finite), and every
 * timed step must give the same bits as the first (bitwise determinism).
 * Prints per phase the median time (the slowest GPU per step, median of 20
 * steps), the bytes each GPU sends to other GPUs and the rate reached, and
 * the load (rows received per GPU).
 *
 * With one GPU (`./ep_alltoall 1024 1`) the same code runs one rank: every
 * exchange is a NCCL send to itself.
 */
#include <fp8moe/fp8moe.cuh>
#include <nccl.h>

#include "ep_alltoall.cuh"
#include "ep_util.cuh"

#include <string.h>
#include <time.h>

FP8MOE_DEFINE(dsv3, 256, 8, 7168, 2048);
using namespace epx;

/* NCCL as the transport: one communicator and stream per rank. */
struct nccl_transport : ep::transport {
  std::vector<ncclComm_t> comms;
  std::vector<cudaStream_t> streams;
  static cudaError_t check(ncclResult_t r) {
    if (r == ncclSuccess) return cudaSuccess;
    fprintf(stderr, "NCCL: %s\n", ncclGetErrorString(r));
    return cudaErrorUnknown;
  }
  cudaError_t group_begin() override { return check(ncclGroupStart()); }
  cudaError_t group_end() override { return check(ncclGroupEnd()); }
  cudaError_t send(int from, int to, const void *buf, size_t bytes) override {
    return check(ncclSend(buf, bytes, ncclUint8, to, comms[from], streams[from]));
  }
  cudaError_t recv(int at, int from, void *buf, size_t bytes) override {
    return check(ncclRecv(buf, bytes, ncclUint8, from, comms[at], streams[at]));
  }
};

int main(int argc, char **argv) {
  const int T = argc > 1 ? atoi(argv[1]) : 1024;
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    printf("ep_alltoall: no CUDA device here; nothing to run.\n");
    return 0;
  }
  const int N = argc > 2 ? atoi(argv[2]) : ndev;
  /* This example never needs NVLink SHARP (multicast); leave it off unless
   * the caller's environment says otherwise. */
  setenv("NCCL_NVLS_ENABLE", "0", 0);
  if (T < 1 || N < 1 || N > ep::MAX_RANKS || E % N != 0) {
    fprintf(stderr, "usage: ep_alltoall [tokens_per_gpu >= 1] [num_gpus dividing %d]\n", E);
    return 2;
  }
  if (N > ndev) {
    fprintf(stderr, "ep_alltoall: %d GPUs asked for, %d visible\n", N, ndev);
    return 2;
  }
  const int E_loc = E / N;
  const size_t T_all = (size_t)N * T;
  uint64_t seed = getenv("FP8MOE_SEED") ? strtoull(getenv("FP8MOE_SEED"), NULL, 0) : (uint64_t)time(NULL);
  int nccl_version = 0;
  NCCL_CHECK(ncclGetVersion(&nccl_version));
  printf("ep_alltoall: DeepSeek-V3 layer E=%d K=%d H=%d I=%d, %d GPU(s) x (%d tokens, %d experts), NCCL %d, "
         "seed %llu (FP8MOE_SEED)\n",
         E, K, H, I, N, T, E_loc, nccl_version, (unsigned long long)seed);

  const std::vector<int32_t> packed = random_topk((int)T_all, seed);
  const size_t n_out = T_all * H;
  std::vector<uint16_t> ref(n_out), got(n_out), first(n_out);

  /* ---- the reference: all tokens, all experts, GPU 0 ---- */
  float single_ms;
  {
    CUDA_CHECK(cudaSetDevice(0));
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    uint8_t *x = dev_alloc<uint8_t>(n_out);
    float *xs = dev_alloc<float>((H / 128) * T_all);
    int32_t *topk = dev_alloc<int32_t>(packed.size());
    uint16_t *out = dev_alloc<uint16_t>(n_out);
    make_tokens(x, xs, 0, T_all, T_all, seed, s);
    CUDA_CHECK(cudaMemcpyAsync(topk, packed.data(), packed.size() * 4, cudaMemcpyHostToDevice, s));
    const size_t ws_bytes = dsv3_workspace_size((int)T_all);
    void *ws = NULL;
    CUDA_CHECK(cudaMalloc(&ws, ws_bytes));
    fp8moe_args a;
    memset(&a, 0, sizeof a);
    a.num_tokens = (int)T_all;
    a.hidden_states = x;
    a.hidden_states_scale = xs;
    a.topk_packed = topk;
    a.output = out;
    a.enable_pdl = 1;
    single_ms = whole_layer_reference(a, dsv3_run_routed, ws, ws_bytes, seed, s, 10, ref.data());
    void *bufs[] = {x, xs, topk, out, ws};
    for (void *p : bufs) CUDA_CHECK(cudaFree(p));
    CUDA_CHECK(cudaStreamDestroy(s));
  }
  printf("single GPU (all %d experts, all %zu tokens on GPU 0): %.3f ms per layer (median of 10)\n", E, T_all,
         single_ms);

  /* ---- the ranks ---- */
  std::vector<ep::rank> ranks(N);
  std::vector<ep::rank_io> io(N);
  std::vector<ep::step_events> events(N);
  std::vector<weights> shard(N);
  nccl_transport tr;
  tr.comms.resize(N);
  tr.streams.resize(N);
  const ep::geometry g{E, K, H, N};
  for (int r = 0; r < N; r++) {
    CUDA_CHECK(cudaSetDevice(r));
    ep::rank &R = ranks[r];
    R.g = g;
    R.id = r;
    R.token_capacity = T;
    R.recv_capacity = (int)T_all;
    CUDA_CHECK(cudaStreamCreateWithFlags(&R.stream, cudaStreamNonBlocking));
    tr.streams[r] = R.stream;
    CUDA_CHECK(ep::allocate(R));
    for (auto &e : events[r].ev) CUDA_CHECK(cudaEventCreate(&e));
    shard[r] = make_weights(r * E_loc, E_loc, seed, R.stream);
    memset(&R.layer, 0, sizeof R.layer);
    R.layer.local_expert_offset = r * E_loc;
    R.layer.local_num_experts = E_loc;
    R.layer.w1 = shard[r].w1;
    R.layer.w1_scale = shard[r].w1s;
    R.layer.w2 = shard[r].w2;
    R.layer.w2_scale = shard[r].w2s;
    R.layer.enable_pdl = 1;
    R.run_routed = dsv3_run_routed;
    R.workspace_bytes = dsv3_workspace_size(R.recv_capacity);
    CUDA_CHECK(cudaMalloc(&R.workspace, R.workspace_bytes));

    ep::rank_io &in = io[r];
    in.num_tokens = T;
    uint8_t *x = dev_alloc<uint8_t>((size_t)T * H);
    float *xs = dev_alloc<float>((size_t)(H / 128) * T);
    int32_t *topk = dev_alloc<int32_t>((size_t)T * K);
    make_tokens(x, xs, (size_t)r * T, T, T_all, seed, R.stream);
    CUDA_CHECK(cudaMemcpyAsync(topk, packed.data() + (size_t)r * T * K, (size_t)T * K * 4, cudaMemcpyHostToDevice,
                               R.stream));
    in.x = x;
    in.x_scale = xs;
    in.topk = topk;
    in.output = dev_alloc<uint16_t>((size_t)T * H);
    CUDA_CHECK(cudaMemsetAsync(in.output, 0xff, (size_t)T * H * 2, R.stream)); /* NaN: an unwritten row shows */
  }
  std::vector<int> devs(N);
  for (int r = 0; r < N; r++) devs[r] = r;
  NCCL_CHECK(ncclCommInitAll(tr.comms.data(), N, devs.data()));
  auto set_device = [](int r) { cudaSetDevice(r); };

  /* ---- steps: 5 warm-up, 20 timed ---- */
  std::vector<float> t_dispatch, t_compute, t_combine, t_total, t_wall;
  size_t max_out = 0, max_back = 0, sum_out = 0;
  int min_recv = 1 << 30, max_recv = 0;
  double mean_recv = 0;
  bool deterministic = true;
  for (int it = 0; it < 25; it++) {
    const double w0 = seconds_now();
    ep::step_result res = ep::step(ranks, io, tr, set_device, &events);
    if (res.status != ep::STEP_OK) {
      fprintf(stderr, "ep_alltoall: step failed on rank %d: %s (%s / %s)\n", res.rank,
              ep::step_status_string(res.status), cudaGetErrorString(res.cuda), fp8moe_status_string(res.layer));
      return 1;
    }
    float d = 0, c = 0, b = 0, tot = 0;
    for (int r = 0; r < N; r++) {
      CUDA_CHECK(cudaSetDevice(r));
      CUDA_CHECK(cudaStreamSynchronize(ranks[r].stream));
      float m[3], all;
      for (int i = 0; i < 3; i++) CUDA_CHECK(cudaEventElapsedTime(&m[i], events[r].ev[i], events[r].ev[i + 1]));
      CUDA_CHECK(cudaEventElapsedTime(&all, events[r].ev[0], events[r].ev[3]));
      d = std::max(d, m[0]);
      c = std::max(c, m[1]);
      b = std::max(b, m[2]);
      tot = std::max(tot, all);
    }
    const double w1 = seconds_now();
    /* the output, gathered: the first timed step's and each later one's */
    if (it == 5 || it == 24) {
      std::vector<uint16_t> &dst = it == 5 ? first : got;
      for (int r = 0; r < N; r++) {
        CUDA_CHECK(cudaSetDevice(r));
        CUDA_CHECK(cudaMemcpy(dst.data() + (size_t)r * T * H, io[r].output, (size_t)T * H * 2,
                              cudaMemcpyDeviceToHost));
      }
      if (it == 24) deterministic = memcmp(got.data(), first.data(), n_out * 2) == 0;
    }
    if (it >= 5) {
      t_dispatch.push_back(d);
      t_compute.push_back(c);
      t_combine.push_back(b);
      t_total.push_back(tot);
      t_wall.push_back((float)((w1 - w0) * 1e3));
    }
  }
  for (int r = 0; r < N; r++) {
    const ep::rank &R = ranks[r];
    max_out = std::max(max_out, R.dispatch_bytes_out());
    max_back = std::max(max_back, R.return_bytes_in());
    sum_out += R.dispatch_bytes_out();
    min_recv = std::min(min_recv, R.received_rows());
    max_recv = std::max(max_recv, R.received_rows());
    mean_recv += (double)R.received_rows() / N;
  }

  /* ---- check and report ---- */
  int nonfinite;
  const double err = rel_l2(first.data(), ref.data(), n_out, &nonfinite);
  const bool close = err <= 1e-2 && nonfinite == 0;
  const float md = median(t_dispatch), mc = median(t_compute), mb = median(t_combine);
  printf("EP all-to-all %d GPUs: rel L2 vs single GPU = %.3e, %d non-finite  %s\n", N, err, nonfinite,
         close ? "OK" : "FAIL");
  printf("EP all-to-all %d GPUs: first and last of 20 steps bitwise identical: %s\n", N, deterministic ? "yes  OK" : "no  FAIL");
  printf("EP all-to-all %d GPUs, %d tokens per GPU: step %.3f ms (slowest GPU; wall %.3f ms) = dispatch %.3f + "
         "compute %.3f + combine %.3f ms\n",
         N, T, median(t_total), median(t_wall), md, mc, mb);
  printf("EP all-to-all traffic: rows received per GPU %d..%d (mean %.0f); to other GPUs per step %.1f MB in all, "
         "busiest GPU %.1f MB out (%.0f GB/s over the dispatch phase), %.1f MB back (%.0f GB/s over the combine "
         "phase)\n",
         min_recv, max_recv, mean_recv,
         sum_out / 1e6, max_out / 1e6, md > 0 ? max_out / (md * 1e6) : 0.0, max_back / 1e6,
         mb > 0 ? max_back / (mb * 1e6) : 0.0);

  for (int r = 0; r < N; r++) {
    CUDA_CHECK(cudaSetDevice(r));
    NCCL_CHECK(ncclCommDestroy(tr.comms[r]));
    free_weights(shard[r]);
    void *bufs[] = {(void *)io[r].x, (void *)io[r].x_scale, (void *)io[r].topk, io[r].output, ranks[r].workspace};
    for (void *p : bufs) CUDA_CHECK(cudaFree(p));
    for (auto &e : events[r].ev) CUDA_CHECK(cudaEventDestroy(e));
    CUDA_CHECK(cudaStreamDestroy(ranks[r].stream));
    ep::release(ranks[r]);
  }
  const bool ok = close && deterministic;
  printf("ep_alltoall: %s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}
