/* fp8moe/detail/permute.cuh - from (token, slot) routing to rows grouped by local expert.
 *
 * Three short kernels, each one pass:
 *   1. decode_topk: the routed input (packed, or ids + fp32/bf16 weights) ->
 *      slot_expert (local expert or -1) and slot_weight per (t, k); counts
 *      rows per local expert (shared-memory atomics per block, then one
 *      global atomic per block and expert), each local slot keeping its
 *      place in its expert's count (its rank, in slot_row), and invalid global ids
 *      (the optional device counter). The non-routed path runs it in place
 *      over the routing kernel's output. Ids outside [0, E) are never used
 *      as an index: they become -1 before anything is read through them.
 *   2. scan_expert_counts: one block, cub::BlockScan over the E_loc counts ->
 *      expert_offset[0..E_loc]. With S shared experts it appends their
 *      groups, T rows each after the routed rows: expert_offset[E_loc + s] =
 *      routed rows + s*T, s = 1..S.
 *   3. permute_rows: a warp per slot; a local slot's row is its expert's
 *      offset + its rank, recorded in slot_row in place of the rank, and the
 *      warp copies its token's fp8 row (16-byte vectors, four per lane in
 *      flight) and 1x128 scales into x_perm / x_perm_scale; each (shared
 *      expert s, token t) copies token t into row expert_offset[E_loc] +
 *      s*T + t. No atomics and no block barrier on the copy's path.
 *      Where GEMM1 gathers its rows (FP8MOE_GATHER_A), index_rows instead
 *      records each row's token (a thread per slot) and copies nothing.
 * The order of rows inside an expert depends on atomic ordering; the output
 * does not, because every row's GEMM result is independent of where the row
 * sits and the combine sums each token's slots in slot order.
 */
#ifndef FP8MOE_DETAIL_PERMUTE_CUH
#define FP8MOE_DETAIL_PERMUTE_CUH

#include <cub/block/block_scan.cuh>

#include "common.cuh"

namespace fp8moe {
namespace detail {

struct decode_params {
  int num_slots = 0;                       /* T*K */
  int local_expert_offset = 0, local_num_experts = 0;
  const int32_t *packed = nullptr;         /* [T*K] or NULL */
  const int32_t *ids = nullptr;            /* [T*K] (unpacked) */
  const void *weights = nullptr;           /* [T*K] (unpacked) */
  fp8moe_dtype weights_dtype = FP8MOE_DTYPE_FP32;
  int *slot_expert = nullptr;              /* out: local expert or -1 (may alias ids) */
  float *slot_weight = nullptr;            /* out (may alias weights when fp32) */
  int *expert_count = nullptr;             /* [E_loc], zeroed before */
  int *slot_rank = nullptr;                /* out (the kernel): [T*K] a local slot's place in its expert, or -1 */
  int *invalid_id_count = nullptr;         /* optional */
};

/* Slot i of the routed input: its global id and weight (packed, or ids +
 * fp32/bf16 weights), and its local expert, or -1 when the id is outside
 * the local window; *invalid is set when the id is outside [0, E), which is
 * then never used as an index. Both the decode kernel and the small-T
 * layer (small.cuh) read the top-k through this. */
template <int E>
static __device__ __forceinline__ int decode_slot(const decode_params &p, int i, float *w, bool *invalid) {
  int id;
  if (p.packed) {
    int32_t v = p.packed[i];
    id = fp8moe_topk_id(v);
    *w = fp8moe_topk_weight(v);
  } else {
    id = p.ids[i];
    *w = p.weights_dtype == FP8MOE_DTYPE_BF16 ? bf16_bits_to_float(((const uint16_t *)p.weights)[i])
                                              : ((const float *)p.weights)[i];
  }
  *invalid = id < 0 || id >= E;
  const int l = id - p.local_expert_offset;
  return !*invalid && l >= 0 && l < p.local_num_experts ? l : -1;
}

/* A block of the decode counts its slots per local expert in shared memory
 * first (each slot's rank inside the block), then takes one range of ranks
 * per expert it has slots of with a single atomic on the global count:
 * T*K / decode_threads atomics per expert instead of one per slot, which
 * at large T all fall on the same E_loc counters. */
enum { decode_threads = 1024 };

template <int E>
__global__ void __launch_bounds__(decode_threads) decode_topk_kernel(decode_params p) {
  __shared__ int s_count[E]; /* this block's slots per local expert, then the first rank of its range */
  griddep_wait(); /* non-routed: the routing kernel's slots; always: the zeroed counts */
  griddep_launch_dependents();
  const int E_loc = p.local_num_experts;
  for (int e = threadIdx.x; e < E_loc; e += blockDim.x) s_count[e] = 0;
  __syncthreads();
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  int local = -1, in_block = 0;
  float w = 0.0f;
  if (i < p.num_slots) {
    bool invalid;
    local = decode_slot<E>(p, i, &w, &invalid);
    if (invalid && p.invalid_id_count) atomicAdd(p.invalid_id_count, 1);
    if (local >= 0) in_block = atomicAdd(&s_count[local], 1);
  }
  __syncthreads();
  for (int e = threadIdx.x; e < E_loc; e += blockDim.x) {
    const int n = s_count[e];
    if (n > 0) s_count[e] = atomicAdd(&p.expert_count[e], n);
  }
  __syncthreads();
  if (i < p.num_slots) { /* written after every read of the slot (in place over the routing's output) */
    p.slot_rank[i] = local >= 0 ? s_count[local] + in_block : -1;
    p.slot_expert[i] = local;
    p.slot_weight[i] = w;
  }
}

/* One block; E_loc <= FP8MOE_MAX_EXPERTS = 512 = 256 threads x 2 items. */
enum { scan_threads = 256, scan_items = 2 };
static_assert(scan_threads * scan_items >= FP8MOE_MAX_EXPERTS, "scan covers every expert");

static __global__ void __launch_bounds__(scan_threads)
    scan_expert_counts_kernel(const int *expert_count, int *expert_offset, int num_experts, int num_shared,
                              int num_tokens, int *tile_counter) {
  typedef cub::BlockScan<int, scan_threads> scan_t;
  __shared__ typename scan_t::TempStorage tmp;
  griddep_wait();
  griddep_launch_dependents();
  int v[scan_items];
#pragma unroll
  for (int j = 0; j < scan_items; j++) {
    int e = threadIdx.x * scan_items + j;
    v[j] = e < num_experts ? expert_count[e] : 0;
  }
  int total;
  scan_t(tmp).ExclusiveSum(v, v, total);
#pragma unroll
  for (int j = 0; j < scan_items; j++) {
    int e = threadIdx.x * scan_items + j;
    if (e < num_experts) expert_offset[e] = v[j];
  }
  if (threadIdx.x == 0)
    for (int g = 0; g <= num_shared; g++) expert_offset[num_experts + g] = total + g * num_tokens;
  /* the grouped GEMMs' work counters (gemm/params.cuh), zero for this run
   * whatever a previous run or the allocation left there */
  if (tile_counter && threadIdx.x < 4) tile_counter[threadIdx.x] = 0;
}

struct permute_params {
  int num_tokens;
  int num_local_experts = 0;     /* E_loc: expert_offset[E_loc] is the first shared row */
  int num_shared = 0;            /* S: shared experts, T rows each */
  const uint8_t *x;              /* [T, H] */
  const float *x_scale;          /* [H/128, T] */
  const int *slot_expert;        /* [T*K] */
  const int *expert_offset;      /* [E_loc + 1 + S] */
  int *slot_row;                 /* [T*K] in: decode's rank of each slot; out: its row, or -1 */
  uint8_t *x_perm;               /* [T*(K+S), H] out */
  float *x_perm_scale;           /* [H/128, scale_ld] out */
  long long scale_ld;
  /* NULL, or [T*(K+S)] out: each row's token, written instead of the copies
   * (x_perm, x_perm_scale untouched), for a GEMM1 that gathers its rows */
  int *row_token = nullptr;
};

enum { permute_threads = 256, permute_warps = permute_threads / 32 };

/* Work item w of the permutation: (token, slot) w < T*K, then (shared
 * expert s, token t) at T*K + s*T + t. Its token and its row: a routed
 * slot's row is its expert's offset + its rank (-1 for a slot of no local
 * expert; the caller replaces the rank with it); -2 past the last item. */
template <int K>
static __device__ __forceinline__ int permuted_row(const permute_params &p, long long w, long long *t) {
  const long long routed_slots = (long long)p.num_tokens * K;
  if (w < routed_slots) {
    const int e = p.slot_expert[w];
    *t = w / K;
    return e >= 0 ? p.expert_offset[e] + p.slot_row[w] : -1;
  }
  const long long i = w - routed_slots; /* s * T + t */
  if (i >= (long long)p.num_shared * p.num_tokens) return -2;
  *t = i % p.num_tokens;
  return p.expert_offset[p.num_local_experts] + (int)i;
}

/* A warp per (token, slot), then per (shared expert, token). */
template <int K, int H>
__global__ void __launch_bounds__(permute_threads) permute_rows_kernel(permute_params p) {
  griddep_wait();
  griddep_launch_dependents();
  const int lane = threadIdx.x & 31;
  const long long w = (long long)blockIdx.x * permute_warps + (threadIdx.x >> 5);
  long long t = 0;
  const int r = permuted_row<K>(p, w, &t);
  if (w < (long long)p.num_tokens * K) {
    __syncwarp(); /* every lane has read the rank before lane 0 replaces it */
    if (lane == 0) p.slot_row[w] = r;
  }
  if (r < 0) return;
  constexpr int V = H / 16, U = 4; /* 16-byte vectors per row; per lane in flight */
  const uint4 *src = reinterpret_cast<const uint4 *>(p.x + t * H);
  uint4 *dst = reinterpret_cast<uint4 *>(p.x_perm + (long long)r * H);
  for (int v0 = 0; v0 < V; v0 += 32 * U) {
    uint4 q[U];
#pragma unroll
    for (int u = 0; u < U; u++)
      if (v0 + 32 * u + lane < V) q[u] = __ldg(src + v0 + 32 * u + lane);
#pragma unroll
    for (int u = 0; u < U; u++)
      if (v0 + 32 * u + lane < V) dst[v0 + 32 * u + lane] = q[u];
  }
  for (int b = lane; b < H / FP8MOE_BLOCK; b += 32)
    p.x_perm_scale[b * p.scale_ld + r] = __ldg(p.x_scale + (long long)b * p.num_tokens + t);
}

/* The gather form of the permutation (p.row_token): a thread per item,
 * which records its slot's row and its row's token; nothing is copied. */
template <int K>
__global__ void __launch_bounds__(permute_threads) index_rows_kernel(permute_params p) {
  griddep_wait();
  griddep_launch_dependents();
  const long long w = (long long)blockIdx.x * permute_threads + threadIdx.x;
  long long t = 0;
  const int r = permuted_row<K>(p, w, &t);
  if (w < (long long)p.num_tokens * K) p.slot_row[w] = r;
  if (r >= 0) p.row_token[r] = (int)t;
}

template <int E>
static inline fp8moe_status decode_topk_launch(const decode_params &p, cudaStream_t s, bool pdl = false) {
  if (p.num_slots == 0) return FP8MOE_OK;
  FP8MOE__CHECK_CUDA(launch_kernel(decode_topk_kernel<E>, dim3(ceil_div(p.num_slots, (int)decode_threads)),
                                   dim3(decode_threads), 0, s, pdl, p));
  return FP8MOE_OK;
}

/* num_shared groups of num_tokens rows each follow the routed ones;
 * tile_counter: NULL, or the 4 GEMM work counters to zero. */
static inline fp8moe_status scan_expert_counts_launch(const int *expert_count, int *expert_offset, int num_experts,
                                                      cudaStream_t s, bool pdl = false, int num_shared = 0,
                                                      int num_tokens = 0, int *tile_counter = nullptr) {
  FP8MOE__CHECK_CUDA(launch_kernel(scan_expert_counts_kernel, dim3(1), dim3(scan_threads), 0, s, pdl, expert_count,
                                   expert_offset, num_experts, num_shared, num_tokens, tile_counter));
  return FP8MOE_OK;
}

template <int K, int H>
static inline fp8moe_status permute_rows_launch(const permute_params &p, cudaStream_t s, bool pdl = false) {
  static_assert(H % 16 == 0, "rows are copied 16 bytes at a time");
  long long slots = (long long)p.num_tokens * (K + p.num_shared);
  if (slots == 0) return FP8MOE_OK;
  if (p.row_token) {
    FP8MOE__CHECK_CUDA(launch_kernel(index_rows_kernel<K>, dim3((unsigned)ceil_div(slots, (long long)permute_threads)),
                                     dim3(permute_threads), 0, s, pdl, p));
    return FP8MOE_OK;
  }
  FP8MOE__CHECK_CUDA(launch_kernel(permute_rows_kernel<K, H>, dim3((unsigned)ceil_div(slots, (long long)permute_warps)),
                                   dim3(permute_threads), 0, s, pdl, p));
  return FP8MOE_OK;
}

} // namespace detail
} // namespace fp8moe

#endif /* FP8MOE_DETAIL_PERMUTE_CUH */
