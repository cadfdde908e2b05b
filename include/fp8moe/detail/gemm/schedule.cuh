/* fp8moe/detail/gemm/schedule.cuh - the work list of a grouped GEMM, shared
 * by both paths' persistent kernels.
 *
 * The host does not know the group sizes (they live on the device, written
 * by the pipeline's scan), so every CTA builds the list itself at kernel
 * start, from group_offset, in shared memory:
 *   1. the offsets, clamped into [0, m_total] (a decreasing pair is an empty
 *      group, so bad offsets never address outside A or C);
 *   2. the exclusive prefix of m-tiles (bm rows each) per group, by one warp;
 *   3. items w = 0 .. total-1, ordered group-major, then column tile, then
 *      m-tile, so consecutive items (and the CTAs that run them together)
 *      share one tile of the group's weights, which is streamed from HBM once
 *      and re-read from L2. A CTA takes items blockIdx.x, +gridDim.x, ...,
 *      or, given a tile counter, item blockIdx.x and then the next unclaimed
 *      one each time it needs one (claim_item); an item is decoded by a
 *      binary search over the prefix.
 *      Empty groups own no item.
 */
#ifndef FP8MOE_DETAIL_GEMM_SCHEDULE_CUH
#define FP8MOE_DETAIL_GEMM_SCHEDULE_CUH

#include "params.cuh"

namespace fp8moe {
namespace detail {

/* Step 1, by all THREADS threads of the CTA: s_off[0..G] = clamped offsets.
 * The caller synchronizes before reading them. FROM_L2: a kernel that may
 * read them before its griddep_wait (params.cuh, early_weights) reads them
 * from L2, which holds the scan's writes, not from a line this SM's L1 may
 * keep from an earlier run. */
template <int THREADS, bool FROM_L2 = false>
static __device__ __forceinline__ void load_group_offsets(const grouped_gemm_params &p, int *s_off) {
  for (int g = threadIdx.x; g <= p.num_groups; g += THREADS) {
    const int o = FROM_L2 ? __ldcg(p.group_offset + g) : p.group_offset[g];
    s_off[g] = o < 0 ? 0 : (o > p.m_total ? p.m_total : o);
  }
}

/* Step 2, by one whole warp: s_pre[g] = m-tiles of the groups before g,
 * s_pre[G] = all of them. Each lane sums a run of ceil(G/32) groups, then one
 * warp scan. The caller synchronizes before reading them. */
static __device__ __forceinline__ void build_tile_prefix(const int *s_off, int G, int bm, int *s_pre, int lane) {
  const int per = (G + 31) / 32, begin = min(lane * per, G), end = min(begin + per, G);
  int sum = 0;
  for (int g = begin; g < end; g++) sum += (max(s_off[g + 1] - s_off[g], 0) + bm - 1) / bm;
  int incl = sum;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int v = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += v;
  }
  int run = incl - sum;
  for (int g = begin; g < end; g++) {
    s_pre[g] = run;
    run += (max(s_off[g + 1] - s_off[g], 0) + bm - 1) / bm;
  }
  if (lane == 31) s_pre[G] = incl;
}

/* Steps 1 and 2 by the whole CTA (THREADS threads; warp and lane of the
 * calling thread): s_off and s_pre, both readable by every thread on
 * return. */
template <int THREADS, bool FROM_L2 = false>
static __device__ __forceinline__ void build_work_list(const grouped_gemm_params &p, int G, int bm, int *s_off,
                                                       int *s_pre, int warp, int lane) {
  load_group_offsets<THREADS, FROM_L2>(p, s_off);
  __syncthreads();
  if (warp == 0) build_tile_prefix(s_off, G, bm, s_pre, lane);
  __syncthreads();
}

/* One work item: rows [row0, min(row0 + bm, row_end)) of group g, column
 * tile n_tile. */
struct work_item {
  int g;        /* group */
  int row0;     /* first row of the tile */
  int row_end;  /* one past the group's last row: the row mask */
  int n_tile;   /* column tile (swiglu_quant: activation column tile) */
};

/* Step 3: item w of the list with n_tiles column tiles per m-tile. The
 * group is the largest g with s_pre[g] * n_tiles <= w, which always has
 * rows. */
static __device__ __forceinline__ work_item decode_item(int w, const int *s_pre, const int *s_off, int G,
                                                        int n_tiles, int bm) {
  int lo = 0, hi = G - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (s_pre[mid] * n_tiles <= w) lo = mid;
    else hi = mid - 1;
  }
  work_item it;
  it.g = lo;
  const int local = w - s_pre[lo] * n_tiles;
  const int mtiles = s_pre[lo + 1] - s_pre[lo];
  it.n_tile = local / mtiles;
  it.row0 = s_off[lo] + (local - it.n_tile * mtiles) * bm;
  it.row_end = s_off[lo + 1];
  return it;
}

/* Claimed items (params.cuh, tile_counter): the next unclaimed item of the
 * list, for CTAs that took items 0 .. ctas - 1 first; past the list's end
 * once all are claimed. By one thread. */
static __device__ __forceinline__ int claim_item(int *tile_counter, int ctas) {
  return ctas + atomicAdd(tile_counter, 1);
}

/* A CTA's last claim is made (one thread, after it): it counts itself out,
 * and the last CTA of the grid leaves both counters at zero for the next
 * launch. */
static __device__ __forceinline__ void claims_done(int *tile_counter, int ctas) {
  __threadfence();
  if (atomicAdd(tile_counter + 1, 1) == ctas - 1) {
    tile_counter[0] = 0;
    tile_counter[1] = 0;
  }
}

/* m-tile t (0 .. s_pre[G]-1) of the list, with column tile n_tile; a t past
 * the last one gives an item of the last m-tile's group with no rows (a
 * cluster's idle partner). */
static __device__ __forceinline__ work_item decode_tile(int t, int n_tile, const int *s_pre, const int *s_off, int G,
                                                        int bm) {
  const int last = s_pre[G] - 1;
  const bool none = t > last;
  if (none) t = last;
  int lo = 0, hi = G - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (s_pre[mid] <= t) lo = mid;
    else hi = mid - 1;
  }
  work_item it;
  it.g = lo;
  it.n_tile = n_tile;
  it.row_end = s_off[lo + 1];
  it.row0 = none ? it.row_end : s_off[lo] + (t - s_pre[lo]) * bm;
  return it;
}

} // namespace detail
} // namespace fp8moe

#endif /* FP8MOE_DETAIL_GEMM_SCHEDULE_CUH */
