/* examples/ep_alltoall.cuh - expert parallelism with all-to-all dispatch and
 * combine: the per-rank device work and the order of the exchanges, written
 * once for any transport.
 *
 * N ranks, each holding E/N experts (rank r: experts [r*E/N, (r+1)*E/N)) and
 * its own tokens (data-parallel attention: rank r's T_r tokens, fp8 rows with
 * their [H/128, T_r] scales and a packed top-k row each). One layer step:
 *
 *   plan      per token, the set of ranks that own one of its experts; per
 *             destination rank, its tokens in token order (a block scan per
 *             destination: deterministic) and the count.
 *   pack      each (token, destination) pair's fp8 row, its H/128 scales and
 *             its whole packed top-k row, unchanged, into a send buffer in
 *             destination-major order. The top-k row needs no filtering:
 *             fp8moe skips slots whose experts are not local (they are not
 *             "invalid ids").
 *   counts    each rank sends its per-destination counts; the receiver needs
 *             them on the host (the byte counts of the receives, num_tokens
 *             of its call). This is the step's one host synchronization.
 *   dispatch  the rows, scales and top-k rows (three messages per pair).
 *   compute   the received scales transposed to fp8moe's [H/128, R] layout,
 *             then name_run_routed on the R received tokens with
 *             local_expert_offset = r*E/N: one bf16 row per received token,
 *             already weighted and summed over the token's local slots.
 *   return    each result row goes back to its token's home rank, into the
 *             slot its send buffer row had (same destination-major order).
 *   combine   on the home rank, each token's returned rows (one per owner
 *             rank, at most min(K, N)) summed in fp32 in the order the ranks
 *             first appear among the token's slots, rounded to bf16 once. A
 *             token none of whose ids names an expert gets zeros, as in the
 *             single-GPU layer.
 *
 * Bytes then follow the routing fan-out: per (token, owner rank) pair an fp8
 * row, its scales and its top-k row out (H + 4*H/128 + 4*K bytes) and a bf16
 * row back (2*H). Nothing is allocated per step: every buffer is sized once
 * for the rank's token capacity and its receive capacity.
 *
 * The transport is an interface (send/recv of bytes between ranks, grouped),
 * so the same step runs over NCCL (examples/ep_alltoall.cu) and over device
 * copies between simulated ranks on one GPU (tests/gpu_test_ep.cu). The step
 * drives all ranks from one host thread, one phase at a time over the ranks;
 * with one process per rank, each process runs its own rank's part of every
 * phase, in the same order.
 *
 * Needs <fp8moe/fp8moe.h> (or .cuh) and the CUDA runtime; C++17.
 */
#ifndef FP8MOE_EXAMPLES_EP_ALLTOALL_CUH
#define FP8MOE_EXAMPLES_EP_ALLTOALL_CUH

#include <fp8moe/fp8moe.h>

#include <cub/block/block_scan.cuh>
#include <cuda_runtime.h>

#include <algorithm>
#include <stddef.h>
#include <stdint.h>
#include <vector>

namespace ep {

/* Owner sets are 32-bit masks. */
constexpr int MAX_RANKS = 32;
constexpr int PLAN_THREADS = 512;

struct geometry {
  int num_experts; /* E, global */
  int top_k;       /* K */
  int hidden;      /* H */
  int num_ranks;   /* N, divides E */
  int experts_per_rank() const { return num_experts / num_ranks; }
  int scale_cols() const { return hidden / FP8MOE_BLOCK; }
  /* Bytes of one dispatched row (fp8 row, scales, top-k row) and of one
   * returned row (bf16). */
  size_t dispatch_row_bytes() const { return (size_t)hidden + 4u * scale_cols() + 4u * top_k; }
  size_t return_row_bytes() const { return 2u * hidden; }
  bool valid() const {
    return num_ranks >= 1 && num_ranks <= MAX_RANKS && num_experts % num_ranks == 0 && top_k >= 1 &&
           top_k <= FP8MOE_MAX_TOP_K && hidden % FP8MOE_BLOCK == 0 && hidden > 0;
  }
};

/* ---- device work ---------------------------------------------------------- */

/* The ranks that own one of token t's experts (ids outside [0, E) own none). */
__device__ inline uint32_t owner_mask(const int32_t *topk, int t, int K, int E, int e_loc) {
  uint32_t m = 0;
  for (int k = 0; k < K; k++) {
    const int id = fp8moe_topk_id(topk[(size_t)t * K + k]);
    if (id < E) m |= 1u << (id / e_loc);
  }
  return m;
}

/* Block d (one per destination rank): the tokens going to d in token order.
 * send_index[d*T + p] = token of position p; token_pos[t*N + d] = its
 * position, or -1; counts[d] = how many. */
__global__ void __launch_bounds__(PLAN_THREADS) plan_kernel(const int32_t *__restrict__ topk, int T, int K, int E,
                                                           int e_loc, int N, int *__restrict__ send_index,
                                                           int *__restrict__ token_pos, int *__restrict__ counts) {
  using scan = cub::BlockScan<int, PLAN_THREADS>;
  __shared__ typename scan::TempStorage tmp;
  const int d = blockIdx.x;
  int base = 0;
  for (int t0 = 0; t0 < T; t0 += PLAN_THREADS) {
    const int t = t0 + (int)threadIdx.x;
    const int go = t < T && ((owner_mask(topk, t, K, E, e_loc) >> d) & 1u);
    int pos, total;
    scan(tmp).ExclusiveSum(go, pos, total);
    if (t < T) {
      token_pos[(size_t)t * N + d] = go ? base + pos : -1;
      if (go) send_index[(size_t)d * T + base + pos] = t;
    }
    base += total;
    __syncthreads(); /* tmp is reused */
  }
  if (threadIdx.x == 0) counts[d] = base;
}

/* One warp per (destination, position): the token's fp8 row (16-byte
 * vectors), its scales (a column of the [H/128, T] input) and its top-k row,
 * to row off_d + p of the send buffers. grid: (any, N). */
__global__ void pack_kernel(const uint8_t *__restrict__ x, const float *__restrict__ xs,
                            const int32_t *__restrict__ topk, int T, int H, int K, const int *__restrict__ send_index,
                            const int *__restrict__ counts, uint8_t *__restrict__ send_x,
                            float *__restrict__ send_xs, int32_t *__restrict__ send_topk) {
  const int d = blockIdx.y, lane = threadIdx.x & 31;
  const int warps = blockDim.x >> 5;
  int off = 0;
  for (int j = 0; j < d; j++) off += counts[j];
  const int cnt = counts[d], sc = H / FP8MOE_BLOCK;
  for (int p = blockIdx.x * warps + (threadIdx.x >> 5); p < cnt; p += gridDim.x * warps) {
    const int t = send_index[(size_t)d * T + p];
    const size_t row = (size_t)off + p;
    const uint4 *src = reinterpret_cast<const uint4 *>(x + (size_t)t * H);
    uint4 *dst = reinterpret_cast<uint4 *>(send_x + row * H);
    for (int i = lane; i < H / 16; i += 32) dst[i] = src[i];
    for (int j = lane; j < sc; j += 32) send_xs[row * sc + j] = xs[(size_t)j * T + t];
    if (lane < K) send_topk[row * K + lane] = topk[(size_t)t * K + lane];
  }
}

/* [R, H/128] received scale rows -> fp8moe's [H/128, R]. */
__global__ void transpose_scales_kernel(const float *__restrict__ rows, int R, int sc, float *__restrict__ cols) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (size_t)R * sc; i += (size_t)gridDim.x * blockDim.x) {
    const size_t j = i / R, r = i % R;
    cols[i] = rows[r * sc + j];
  }
}

/* One block per token: out[t] = bf16(sum of the returned rows of its owner
 * ranks, in the order they first appear among its slots), 8 columns per
 * thread and step. */
__global__ void combine_kernel(const int32_t *__restrict__ topk, int T, int K, int E, int e_loc, int N, int H,
                               const int *__restrict__ token_pos, const int *__restrict__ counts,
                               const uint16_t *__restrict__ back, uint16_t *__restrict__ out) {
  __shared__ int row_of[MAX_RANKS];
  __shared__ int n_rows;
  const int t = blockIdx.x;
  if (threadIdx.x == 0) {
    int off[MAX_RANKS];
    int o = 0;
    for (int d = 0; d < N; d++) {
      off[d] = o;
      o += counts[d];
    }
    uint32_t seen = 0;
    int n = 0;
    for (int k = 0; k < K; k++) {
      const int id = fp8moe_topk_id(topk[(size_t)t * K + k]);
      if (id >= E) continue;
      const int d = id / e_loc;
      if ((seen >> d) & 1u) continue;
      seen |= 1u << d;
      row_of[n++] = off[d] + token_pos[(size_t)t * N + d];
    }
    n_rows = n;
  }
  __syncthreads();
  const int n = n_rows;
  for (int c = threadIdx.x * 8; c < H; c += blockDim.x * 8) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int i = 0; i < n; i++) {
      const uint4 v = *reinterpret_cast<const uint4 *>(back + (size_t)row_of[i] * H + c);
      const uint32_t w[4] = {v.x, v.y, v.z, v.w};
      for (int q = 0; q < 4; q++) {
        acc[2 * q] += __uint_as_float(w[q] << 16);
        acc[2 * q + 1] += __uint_as_float(w[q] & 0xffff0000u);
      }
    }
    uint32_t w[4];
    for (int q = 0; q < 4; q++)
      w[q] = (uint32_t)fp8moe_bf16_from_float(acc[2 * q]) | ((uint32_t)fp8moe_bf16_from_float(acc[2 * q + 1]) << 16);
    *reinterpret_cast<uint4 *>(out + (size_t)t * H + c) = make_uint4(w[0], w[1], w[2], w[3]);
  }
}

/* ---- the transport --------------------------------------------------------- */

/* Point-to-point byte transfers between ranks, in groups: every send and
 * recv between group_begin and group_end may run concurrently, and the k-th
 * send from a to b in a group pairs with the k-th recv at b from a (same
 * byte count). A transfer is ordered after the work already enqueued on the
 * sending / receiving rank's stream, and the rank's later work after it. */
struct transport {
  virtual ~transport() {}
  virtual cudaError_t group_begin() = 0;
  virtual cudaError_t send(int from, int to, const void *buf, size_t bytes) = 0;
  virtual cudaError_t recv(int at, int from, void *buf, size_t bytes) = 0;
  virtual cudaError_t group_end() = 0;
};

/* ---- one rank ---------------------------------------------------------------- */

typedef fp8moe_status (*run_routed_fn)(const fp8moe_args *, void *, size_t, fp8moe_stream);

/* What the caller gives a rank for one step. */
struct rank_io {
  int num_tokens;          /* T_r, at most the rank's token capacity */
  const uint8_t *x;        /* fp8 [T_r, H] */
  const float *x_scale;    /* [H/128, T_r] */
  const int32_t *topk;     /* packed [T_r, K], global expert ids */
  uint16_t *output;        /* bf16 [T_r, H] */
};

/* One rank's buffers, sized once. */
struct rank {
  geometry g{};
  int id = 0;
  int token_capacity = 0; /* most tokens of its own per step */
  int recv_capacity = 0;  /* most tokens received per step */
  cudaStream_t stream = nullptr;
  fp8moe_args layer{};     /* weights, local_expert_offset/num_experts, flags: the rest is set per step */
  run_routed_fn run_routed = nullptr;
  void *workspace = nullptr; /* name_workspace_size(recv_capacity) bytes, the caller's */
  size_t workspace_bytes = 0;

  int *counts = nullptr;      /* device [2N]: send counts per destination, then receive counts per source */
  int *h_counts = nullptr;    /* pinned host copy */
  int *send_index = nullptr;  /* [N, token_capacity] */
  int *token_pos = nullptr;   /* [token_capacity, N] */
  uint8_t *send_x = nullptr;  /* [send rows, H]: send rows = token_capacity * min(K, N) */
  float *send_xs = nullptr;   /* [send rows, H/128] */
  int32_t *send_topk = nullptr;
  uint16_t *back = nullptr;   /* [send rows, H]: the results, in send order */
  uint8_t *recv_x = nullptr;  /* [recv_capacity, H] */
  float *recv_xs_rows = nullptr, *recv_xs = nullptr;
  int32_t *recv_topk = nullptr;
  uint16_t *recv_out = nullptr; /* [recv_capacity, H] */

  /* the last step's traffic, from h_counts */
  int sent_rows() const { int s = 0; for (int d = 0; d < g.num_ranks; d++) s += h_counts[d]; return s; }
  int received_rows() const { int s = 0; for (int d = 0; d < g.num_ranks; d++) s += h_counts[g.num_ranks + d]; return s; }
  /* rows sent to other ranks (each comes back as one result row) */
  int sent_to_others() const { return sent_rows() - h_counts[id]; }
  /* bytes that left this rank for other ranks (dispatch) and came back */
  size_t dispatch_bytes_out() const { return (size_t)sent_to_others() * g.dispatch_row_bytes(); }
  size_t return_bytes_in() const { return (size_t)sent_to_others() * g.return_row_bytes(); }
};

/* f(peer, send offset, send rows, receive offset, receive rows) for each
 * peer of R in rank order, offsets in rows of R's send and receive buffers
 * (destination-major and source-major, from the last step's counts). */
template <class F>
inline cudaError_t for_each_peer(const rank &R, F f) {
  const int N = R.g.num_ranks;
  size_t so = 0, ro = 0;
  for (int p = 0; p < N; p++) {
    const size_t sn = R.h_counts[p], rn = R.h_counts[N + p];
    const cudaError_t e = f(p, so, sn, ro, rn);
    if (e != cudaSuccess) return e;
    so += sn;
    ro += rn;
  }
  return cudaSuccess;
}

inline size_t send_rows_capacity(const rank &r) {
  return (size_t)r.token_capacity * (size_t)std::min(r.g.top_k, r.g.num_ranks);
}

template <class T>
static cudaError_t alloc_n(T **p, size_t n) {
  return cudaMalloc((void **)p, std::max<size_t>(n, 1) * sizeof(T));
}

/* Allocates r's buffers on the current device (g, id, token_capacity and
 * recv_capacity set). */
inline cudaError_t allocate(rank &r) {
  const geometry &g = r.g;
  const size_t N = g.num_ranks, H = g.hidden, sc = g.scale_cols(), K = g.top_k;
  const size_t S = send_rows_capacity(r), R = r.recv_capacity, T = r.token_capacity;
  cudaError_t e = cudaSuccess;
#define EP_TRY(x) \
  if (e == cudaSuccess) e = (x)
  EP_TRY(alloc_n(&r.counts, 2 * N));
  EP_TRY(cudaMallocHost((void **)&r.h_counts, 2 * N * sizeof(int)));
  EP_TRY(alloc_n(&r.send_index, N * T));
  EP_TRY(alloc_n(&r.token_pos, T * N));
  EP_TRY(alloc_n(&r.send_x, S * H));
  EP_TRY(alloc_n(&r.send_xs, S * sc));
  EP_TRY(alloc_n(&r.send_topk, S * K));
  EP_TRY(alloc_n(&r.back, S * H));
  EP_TRY(alloc_n(&r.recv_x, R * H));
  EP_TRY(alloc_n(&r.recv_xs_rows, R * sc));
  EP_TRY(alloc_n(&r.recv_xs, R * sc));
  EP_TRY(alloc_n(&r.recv_topk, R * K));
  EP_TRY(alloc_n(&r.recv_out, R * H));
#undef EP_TRY
  if (e == cudaSuccess) for (size_t i = 0; i < 2 * N; i++) r.h_counts[i] = 0;
  return e;
}

inline void release(rank &r) {
  cudaFree(r.counts);
  cudaFreeHost(r.h_counts);
  void *bufs[] = {r.send_index, r.token_pos, r.send_x, r.send_xs, r.send_topk, r.back,
                  r.recv_x, r.recv_xs_rows, r.recv_xs, r.recv_topk, r.recv_out};
  for (void *p : bufs) cudaFree(p);
  r = rank{};
}

/* Phase boundaries of a step on each rank's stream, for timing: [0] start,
 * [1] dispatch done (received and transposed), [2] compute done, [3] combine
 * done. */
struct step_events {
  cudaEvent_t ev[4];
};

enum step_status { STEP_OK = 0, STEP_CUDA_ERROR, STEP_LAYER_ERROR, STEP_RECV_CAPACITY, STEP_TOO_MANY_TOKENS };

struct step_result {
  step_status status = STEP_OK;
  int rank = -1;                      /* the rank that failed */
  cudaError_t cuda = cudaSuccess;
  fp8moe_status layer = FP8MOE_OK;
};

/* One layer step over all ranks. set_device(r) makes rank r's device
 * current (a no-op when all ranks share one). events: one per rank, or
 * null. */
template <class SetDevice>
step_result step(std::vector<rank> &ranks, const std::vector<rank_io> &io, transport &tr, SetDevice set_device,
                 std::vector<step_events> *events = nullptr) {
  step_result res;
  const int N = (int)ranks.size();
  auto fail_cuda = [&](int r, cudaError_t e) {
    res.status = STEP_CUDA_ERROR;
    res.rank = r;
    res.cuda = e;
    return res;
  };
#define EP_CHECK(r, x)                        \
  do {                                        \
    cudaError_t e_ = (x);                     \
    if (e_ != cudaSuccess) return fail_cuda(r, e_); \
  } while (0)
  auto mark = [&](int r, int i) -> cudaError_t {
    return events ? cudaEventRecord((*events)[r].ev[i], ranks[r].stream) : cudaSuccess;
  };

  /* plan and pack: device only */
  for (int r = 0; r < N; r++) {
    rank &R = ranks[r];
    const rank_io &in = io[r];
    const geometry &g = R.g;
    if (in.num_tokens < 0 || in.num_tokens > R.token_capacity) {
      res.status = STEP_TOO_MANY_TOKENS;
      res.rank = r;
      return res;
    }
    set_device(r);
    EP_CHECK(r, mark(r, 0));
    plan_kernel<<<N, PLAN_THREADS, 0, R.stream>>>(in.topk, in.num_tokens, g.top_k, g.num_experts,
                                                  g.experts_per_rank(), N, R.send_index, R.token_pos, R.counts);
    EP_CHECK(r, cudaGetLastError());
    if (in.num_tokens > 0) {
      const int warps = 8, blocks = std::min((in.num_tokens + warps - 1) / warps, 1024);
      pack_kernel<<<dim3(blocks, N), 32 * warps, 0, R.stream>>>(in.x, in.x_scale, in.topk, in.num_tokens,
                                                                 g.hidden, g.top_k, R.send_index, R.counts,
                                                                 R.send_x, R.send_xs, R.send_topk);
      EP_CHECK(r, cudaGetLastError());
    }
  }

  /* counts: one int to every rank, then to the host */
  EP_CHECK(-1, tr.group_begin());
  for (int r = 0; r < N; r++)
    for (int p = 0; p < N; p++) {
      EP_CHECK(r, tr.send(r, p, ranks[r].counts + p, sizeof(int)));
      EP_CHECK(r, tr.recv(r, p, ranks[r].counts + N + p, sizeof(int)));
    }
  EP_CHECK(-1, tr.group_end());
  for (int r = 0; r < N; r++) {
    set_device(r);
    EP_CHECK(r, cudaMemcpyAsync(ranks[r].h_counts, ranks[r].counts, 2 * N * sizeof(int), cudaMemcpyDeviceToHost,
                                ranks[r].stream));
  }
  /* the step's one host synchronization: the receives' sizes */
  for (int r = 0; r < N; r++) {
    set_device(r);
    EP_CHECK(r, cudaStreamSynchronize(ranks[r].stream));
    if (ranks[r].received_rows() > ranks[r].recv_capacity) {
      res.status = STEP_RECV_CAPACITY;
      res.rank = r;
      return res;
    }
  }

  /* dispatch: rows, scales and top-k rows; zero-row pairs send nothing */
  EP_CHECK(-1, tr.group_begin());
  for (int r = 0; r < N; r++) {
    rank &R = ranks[r];
    /* the three parts of a dispatched row: send buffer, receive buffer, bytes per row */
    const struct {
      const void *send;
      void *recv;
      size_t row_bytes;
    } parts[3] = {{R.send_x, R.recv_x, (size_t)R.g.hidden},
                  {R.send_xs, R.recv_xs_rows, 4u * R.g.scale_cols()},
                  {R.send_topk, R.recv_topk, 4u * R.g.top_k}};
    EP_CHECK(r, for_each_peer(R, [&](int p, size_t so, size_t sn, size_t ro, size_t rn) -> cudaError_t {
      for (const auto &q : parts) {
        cudaError_t e = sn ? tr.send(r, p, (const uint8_t *)q.send + so * q.row_bytes, sn * q.row_bytes) : cudaSuccess;
        if (e == cudaSuccess && rn) e = tr.recv(r, p, (uint8_t *)q.recv + ro * q.row_bytes, rn * q.row_bytes);
        if (e != cudaSuccess) return e;
      }
      return cudaSuccess;
    }));
  }
  EP_CHECK(-1, tr.group_end());

  /* compute: the received tokens through this rank's experts */
  for (int r = 0; r < N; r++) {
    rank &R = ranks[r];
    const int rows = R.received_rows();
    set_device(r);
    if (rows > 0) {
      const size_t n = (size_t)rows * R.g.scale_cols();
      transpose_scales_kernel<<<(unsigned)std::min<size_t>((n + 255) / 256, 1024), 256, 0, R.stream>>>(
          R.recv_xs_rows, rows, R.g.scale_cols(), R.recv_xs);
      EP_CHECK(r, cudaGetLastError());
    }
    EP_CHECK(r, mark(r, 1));
    fp8moe_args a = R.layer;
    a.num_tokens = rows;
    a.hidden_states = R.recv_x;
    a.hidden_states_scale = R.recv_xs;
    a.topk_packed = R.recv_topk;
    a.topk_ids = nullptr;
    a.topk_weights = nullptr;
    a.output = R.recv_out;
    const fp8moe_status s = R.run_routed(&a, R.workspace, R.workspace_bytes, R.stream);
    if (s != FP8MOE_OK) {
      res.status = STEP_LAYER_ERROR;
      res.rank = r;
      res.layer = s;
      return res;
    }
    EP_CHECK(r, mark(r, 2));
  }

  /* return: each received token's row to its home rank, into its send slot */
  EP_CHECK(-1, tr.group_begin());
  for (int r = 0; r < N; r++) {
    rank &R = ranks[r];
    const size_t H = R.g.hidden;
    EP_CHECK(r, for_each_peer(R, [&](int p, size_t so, size_t sn, size_t ro, size_t rn) -> cudaError_t {
      cudaError_t e = cudaSuccess;
      if (rn) e = tr.send(r, p, R.recv_out + ro * H, rn * H * 2);
      if (sn && e == cudaSuccess) e = tr.recv(r, p, R.back + so * H, sn * H * 2);
      return e;
    }));
  }
  EP_CHECK(-1, tr.group_end());

  /* combine on the home rank */
  for (int r = 0; r < N; r++) {
    rank &R = ranks[r];
    const rank_io &in = io[r];
    const geometry &g = R.g;
    set_device(r);
    if (in.num_tokens > 0) {
      combine_kernel<<<in.num_tokens, 128, 0, R.stream>>>(in.topk, in.num_tokens, g.top_k, g.num_experts,
                                                          g.experts_per_rank(), N, g.hidden, R.token_pos, R.counts,
                                                          R.back, in.output);
      EP_CHECK(r, cudaGetLastError());
    }
    EP_CHECK(r, mark(r, 3));
  }
#undef EP_CHECK
  return res;
}

inline const char *step_status_string(step_status s) {
  switch (s) {
  case STEP_OK: return "ok";
  case STEP_CUDA_ERROR: return "a CUDA call failed";
  case STEP_LAYER_ERROR: return "the layer call failed";
  case STEP_RECV_CAPACITY: return "a rank received more tokens than its receive capacity";
  case STEP_TOO_MANY_TOKENS: return "a rank has more tokens than its token capacity";
  }
  return "unknown";
}

} // namespace ep

#endif /* FP8MOE_EXAMPLES_EP_ALLTOALL_CUH */
