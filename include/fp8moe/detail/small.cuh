/* fp8moe/detail/small.cuh - the whole layer in one launch for a few tokens.
 *
 * At decode sizes (T <= 8, up to 64 where small_takes says so) the layer
 * reads a few experts' weights once and does little else, so the launches
 * and kernel boundaries of the general pipeline (zeroing, decode, scan,
 * permute, two GEMMs, combine: 6-7 launches, each with its own fill and
 * drain) are much of what separates it from the weight-streaming floor.
 * This path runs the routed layer as one cooperative kernel (the non-routed
 * layer runs the routing kernel before it) in four phases separated by
 * grid-wide barriers:
 *
 *   0. plan (every CTA, in shared memory): decode the T*K slots
 *      (decode_slot, as the general path), list the local experts that have
 *      slots in index order, then the shared experts; a list holds up to 8
 *      rows of one expert (its slots in slot order, 8 per list; a shared
 *      expert: every token, 8 per list). Rows are numbered list after
 *      list. A slot's rank in its expert comes from per-expert counts of
 *      32-slot chunks, so the plan costs about the same at T*K = 1024 as
 *      at 8.
 *   1. GEMM1: warp tasks (list, 16 activation columns, K range): the 16 "up"
 *      and 16 "gate" weight rows times the list's token rows of x, on
 *      mma.sync m16n8k32 with the weights as the M operand, so up to 8
 *      tokens fill the n8 tile and no tensor-core row is spent on padding.
 *      Where the lists are few the K loop is split across warps, so that
 *      every SM streams weights whatever the number of active experts;
 *      each split writes its fp32 partial sums.
 *   2. finalize: per (row, 128 activation columns), one warp adds the
 *      partials in split order, applies the gated activation and
 *      requantizes the block (numeric.h's rule, as the GEMM epilogues).
 *   3. GEMM2: warp tasks (list, 32 output columns, K range) the same way,
 *      over the requantized rows; fp32 partials. Where its first
 *      STAGES - 1 blocks per warp are a quarter of its K blocks or more,
 *      each warp copies their weights into its ring as soon as its GEMM1
 *      tasks end (small_preissue_weights), so they stream during the
 *      finalize and the barriers.
 *   4. combine: per token and 8 columns, each slot's output is its partials
 *      added in split order and rounded to bf16 (what GEMM2 stores in the
 *      general path), then the weighted sum over the slots in slot order and
 *      the shared experts, in fp32, rounded once: the combine kernel's rule.
 *
 * Streaming. A warp walks its tasks (every nwarps-th, starting at a
 * different SM for consecutive tasks) as one stream of 128-byte K blocks:
 * each lane copies its share of the next blocks with cp.async into its own
 * slots of a ring of FP8MOE_SMALL_STAGES in shared memory (weights, the
 * token rows, the four scales), so the loads run STAGES - 1 blocks ahead of
 * the math, across task boundaries, and no lane reads another lane's data
 * (no barrier inside a phase). A lane copies 16 contiguous bytes of a
 * weight row per half block (bytes 16q.. and 64 + 16q.. for lane q of its
 * quad) and hands those words to the mma as if they were the fragment's k
 * positions; it copies its token row with the same offsets, so both
 * operands see the same permutation of k inside the block and the dot
 * product is unchanged. One copy instruction of a warp covers 64 contiguous
 * bytes of each of 8 rows.
 *
 * Every sum runs in an order fixed by the routing and T, so the output is
 * deterministic; it is not batch invariant (the K split follows the number
 * of active experts), so batch_invariant runs take the general path. The
 * fp8 weights, scales and every rounding step are the general path's; what
 * differs is the order of the fp32 additions inside a GEMM.
 *
 * Launch. Cooperative (FP8MOE_SMALL_COOPERATIVE, the default): one grid of
 * one CTA per SM, every CTA resident, so a kernel running on other streams
 * that holds SMs until this one finishes would deadlock it (docs/api.md).
 * With FP8MOE_SMALL_COOPERATIVE 0 the phases are four launches of the same
 * kernel instead (with PDL between them when the run has enable_pdl).
 * Scratch: the partial sums (workspace.h, small_part) and the general
 * path's act buffers. No allocation, no host synchronization; both forms
 * are captured in CUDA graphs.
 */
#ifndef FP8MOE_DETAIL_SMALL_CUH
#define FP8MOE_DETAIL_SMALL_CUH

#include <cooperative_groups.h>

#include <cmath>

#include "combine.cuh"
#include "common.cuh"
#include "permute.cuh"
#include "gemm/epilogue.cuh"
#include "gemm/params.cuh"
#include "ptx/mma.cuh"

namespace fp8moe {
namespace detail {

enum {
  small_max_warps = 12,
  small_tokens = FP8MOE_SMALL_MAX_TOKENS > 0 ? FP8MOE_SMALL_MAX_TOKENS : 1, /* array bounds when compiled out */
  small_list_rows = 8, /* a list's rows fill at most one n8 tile: an expert with more slots has several lists */
  small_max_slots = FP8MOE__SMALL_MAX_SLOTS, /* T * K */
  small_shared_lists = (small_tokens + small_list_rows - 1) / small_list_rows, /* per shared expert */
  small_max_rows = small_max_slots + FP8MOE_MAX_SHARED_EXPERTS * small_tokens,
  small_max_lists = small_max_slots + FP8MOE_MAX_SHARED_EXPERTS * small_shared_lists,
  /* a lane's ring slot: 8 x 16 bytes of weights (2 tiles x rows g, g+8 x 2
   * halves), 2 x 16 of its token row, 4 scales; stored [word][lane] so a
   * warp's 16-byte accesses are contiguous */
  small_slot_words = 11,
  small_slot_bytes = small_slot_words * 32 * 16,
};
static_assert(FP8MOE_SMALL_MAX_TOKENS >= 0 && FP8MOE_SMALL_MAX_TOKENS <= 128,
              "FP8MOE_SMALL_MAX_TOKENS: 0 (off) to 128");
static_assert(FP8MOE_SMALL_LARGE_EXPERT_MAX_TOKENS >= 8 && FP8MOE_SMALL_LARGE_EXPERT_MAX_TOKENS <= 128,
              "FP8MOE_SMALL_LARGE_EXPERT_MAX_TOKENS: 8 to 128");
static_assert(8 * FP8MOE_MAX_TOP_K <= small_max_slots, "every T <= 8 fits the plan");
static_assert(FP8MOE_MAX_TOP_K + FP8MOE_MAX_SHARED_EXPERTS <= 32, "the combine takes a lane per entry of a token");
static_assert(FP8MOE_SMALL_STAGES >= 2 && FP8MOE_SMALL_STAGES <= 6, "FP8MOE_SMALL_STAGES: 2..6");

struct small_params {
  decode_params top;              /* the routed input (num_slots, window, sources, invalid counter) */
  int num_tokens = 0;
  int num_shared = 0;
  const uint8_t *x = nullptr;     /* [T, H] */
  const float *x_scale = nullptr; /* [H/128, T] */
  const uint8_t *w1 = nullptr, *w2 = nullptr;
  const float *w1_scale = nullptr, *w2_scale = nullptr;
  const uint8_t *shared_w1 = nullptr, *shared_w2 = nullptr;
  const float *shared_w1_scale = nullptr, *shared_w2_scale = nullptr;
  const float *swiglu_alpha = nullptr, *swiglu_beta = nullptr, *swiglu_limit = nullptr;
  float *part = nullptr;          /* partial sums, part_rows rows of max(2I, H) floats */
  int part_rows = 0;
  uint8_t *act = nullptr;         /* [rows, I] */
  float *act_scale = nullptr;     /* [rows, I/128] */
  uint16_t *out = nullptr;        /* bf16 [T, H] */
};

/* The work of one run, built by every CTA in its shared memory. A list is
 * at most small_list_rows rows of one expert: an expert's slots in slot
 * order, 8 per list, or 8 tokens of a shared expert. Lists and rows follow
 * the local experts in index order, then the shared experts. Indices are
 * 16-bit (slots, rows and lists < 2^15), tokens 8-bit (T <= 255). */
struct small_plan {
  int16_t slot_local[small_max_slots];  /* local expert of slot i, or -1 */
  int16_t slot_row[small_max_slots];    /* row of slot i, or -1 (its rank inside its chunk of 32 while planning) */
  float slot_weight[small_max_slots];
  int16_t list_off[small_max_lists + 1];
  int16_t list_expert[small_max_lists]; /* local expert, or -1 - s for shared expert s */
  uint8_t row_token[small_max_rows];    /* the token of each row */
  int16_t row_list[small_max_rows];
  int warp_sum[small_max_warps];
  int num_lists, rows, routed_rows;
};
static_assert(small_max_slots < 32768 && small_max_rows < 32768 && small_max_lists < 32768 && small_tokens <= 256,
              "the plan's 16-bit indices and 8-bit tokens");

/* Exclusive prefix sum over every thread of the block (blockDim.x a
 * multiple of 32, at most small_max_warps warps); *total is the sum.
 * Called by every thread. */
static __device__ __forceinline__ int small_scan(int v, int *total, small_plan &pl) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5;
  int inc = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int n = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += n;
  }
  if (lane == 31) pl.warp_sum[warp] = inc;
  __syncthreads();
  int before = 0, all = 0;
  for (int w = 0; w < nw; w++) {
    const int x = pl.warp_sum[w];
    before += w < warp ? x : 0;
    all += x;
  }
  *total = all;
  return before + inc - v; /* the caller syncs before warp_sum is written again */
}

/* Shared memory the plan borrows from the ring (free until the GEMM
 * phases): per chunk of 32 slots and local expert a 16-bit count, then per
 * local expert its first list and row. */
enum {
  small_hist_bytes = small_max_slots / 32 * FP8MOE_MAX_EXPERTS * 2,
  small_plan_scratch_bytes = small_hist_bytes + FP8MOE_MAX_EXPERTS * 4,
};
static_assert(4 * 2 * small_slot_bytes >= small_plan_scratch_bytes, "the smallest ring holds the plan's scratch");

/* Every thread of the CTA. Thread i mod blockDim.x takes slot i, so each
 * warp holds chunks of 32 consecutive slots; a slot's rank among its
 * expert's slots is its expert's count in the chunks before (a prefix over
 * chunks per expert) plus its rank inside its chunk (__match_any_sync).
 * Every CTA computes the same plan. */
template <int E, int K>
static __device__ void small_build_plan(const small_params &p, small_plan &pl, uint8_t *scratch) {
  const int T = p.num_tokens, TK = T * K, S = p.num_shared, tid = threadIdx.x, nt = blockDim.x, lane = tid & 31;
  const int EL = p.top.local_num_experts, chunks = (TK + 31) / 32;
  uint16_t *hist = reinterpret_cast<uint16_t *>(scratch); /* [chunks][EL] */
  int *first = reinterpret_cast<int *>(scratch + small_hist_bytes); /* [EL]: first list | first row << 16 */
  for (int i = tid; i < chunks * EL; i += nt) hist[i] = 0;
  __syncthreads();
  for (int i = tid; i - lane < TK; i += nt) { /* warp-uniform: whole chunks */
    int local = -1;
    if (i < TK) {
      float w;
      bool invalid;
      local = decode_slot<E>(p.top, i, &w, &invalid);
      if (invalid && p.top.invalid_id_count && blockIdx.x == 0) atomicAdd(p.top.invalid_id_count, 1);
      pl.slot_local[i] = (int16_t)local;
      pl.slot_weight[i] = w;
    }
    const unsigned peers = __match_any_sync(0xffffffffu, local);
    const int before = __popc(peers & ((1u << lane) - 1));
    if (i < TK) pl.slot_row[i] = (int16_t)before;
    if (local >= 0 && before == 0) hist[(i >> 5) * EL + local] = (uint16_t)__popc(peers);
  }
  __syncthreads();
  /* thread tid: experts [e0, e1); each expert's column of hist becomes its
   * exclusive prefix over chunks, and its (lists, rows) are scanned */
  const int per = (EL + nt - 1) / nt, e0 = min(tid * per, EL), e1 = min(e0 + per, EL);
  int mine = 0;
  for (int e = e0; e < e1; e++) {
    int run = 0;
    for (int c = 0; c < chunks; c++) {
      const int v = hist[c * EL + e];
      hist[c * EL + e] = (uint16_t)run;
      run += v;
    }
    first[e] = run;
    mine += (run + small_list_rows - 1) / small_list_rows | run << 16;
  }
  int total;
  int at = small_scan(mine, &total, pl);
  const int lists = total & 0xffff, routed_rows = total >> 16;
  for (int e = e0; e < e1; e++) {
    const int n = first[e], j0 = at & 0xffff, r0 = at >> 16;
    for (int c = 0; c * small_list_rows < n; c++) {
      pl.list_off[j0 + c] = (int16_t)(r0 + c * small_list_rows);
      pl.list_expert[j0 + c] = (int16_t)e;
    }
    first[e] = at;
    at += (n + small_list_rows - 1) / small_list_rows | n << 16;
  }
  __syncthreads();
  for (int i = tid; i < TK; i += nt) {
    const int local = pl.slot_local[i];
    if (local < 0) {
      pl.slot_row[i] = -1;
      continue;
    }
    const int rank = hist[(i >> 5) * EL + local] + pl.slot_row[i], f = first[local];
    const int r = (f >> 16) + rank;
    pl.slot_row[i] = (int16_t)r;
    pl.row_token[r] = (uint8_t)(i / K);
    pl.row_list[r] = (int16_t)((f & 0xffff) + rank / small_list_rows);
  }
  /* shared expert s: rows routed_rows + s*T + t, token chunk c of 8 in list
   * lists + s*NC + c */
  const int NC = (T + small_list_rows - 1) / small_list_rows;
  for (int i = tid; i < S * T; i += nt) {
    pl.row_token[routed_rows + i] = (uint8_t)(i % T);
    pl.row_list[routed_rows + i] = (int16_t)(lists + (i / T) * NC + (i % T) / small_list_rows);
  }
  for (int j = tid; j <= S * NC; j += nt) {
    const int s = j / NC, c = j % NC;
    pl.list_off[lists + j] = (int16_t)(j == S * NC ? routed_rows + S * T : routed_rows + s * T + c * small_list_rows);
    if (j < S * NC) pl.list_expert[lists + j] = (int16_t)(-1 - s);
  }
  if (tid == 0) {
    pl.num_lists = lists + S * NC;
    pl.rows = routed_rows + S * T;
    pl.routed_rows = routed_rows;
  }
  __syncthreads();
}

/* Splits of a K loop of kb blocks over `units` (list, row tile) pairs. Up
 * to about FP8MOE_SMALL_TASKS warp tasks, at least 2 K blocks each, and
 * partials that fit the workspace, the S whose busiest warp (the tasks
 * dealt to nwarps warps in turn) has the fewest K blocks, the smallest such
 * S on a tie (fewer partial sums). Called by whole warps: lane j weighs
 * S = j + 1, j + 33, ...; every warp of every CTA gets the same value. */
static __device__ __forceinline__ int small_splits(int units, int kb, int rows, int part_rows, int nwarps) {
  units = max(units, 1);
  int smax = (FP8MOE_SMALL_TASKS + units - 1) / units;
  smax = min(smax, max(kb / 2, 1));
  smax = min(smax, part_rows / max(rows, 1));
  unsigned long long best = ~0ull; /* (K blocks of the busiest warp) << 32 | S */
  for (int s = (threadIdx.x & 31) + 1; s <= smax; s += 32) {
    const unsigned long long c = (unsigned long long)((units * s + nwarps - 1) / nwarps) * ((kb + s - 1) / s);
    best = min(best, c << 32 | (unsigned)s);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) best = min(best, __shfl_xor_sync(0xffffffffu, best, o));
  return smax < 1 ? 1 : (int)(best & 0xffffffffu);
}

/* The sums over splits 0..S-1 of a row's partials at columns [c0, c0 + 4)
 * and [c1, c1 + 4) (partial row `row` of split s at part + (s * rows +
 * row) * ld), added to a and b in split order, the loads of four splits in
 * flight at a time. The finalize and the combine read their partials so. */
static __device__ __forceinline__ void small_sum_splits(const float *part, int S, int rows, int row, int ld, int c0,
                                                        int c1, float (&a)[4], float (&b)[4]) {
  for (int s0 = 0; s0 < S; s0 += 4) {
    float4 x[4], y[4];
#pragma unroll
    for (int j = 0; j < 4; j++) { /* past S: split 0 again, not added */
      const float *src = part + ((long long)(s0 + j < S ? s0 + j : 0) * rows + row) * ld;
      x[j] = *reinterpret_cast<const float4 *>(src + c0);
      y[j] = *reinterpret_cast<const float4 *>(src + c1);
    }
#pragma unroll
    for (int j = 0; j < 4; j++) {
      if (s0 + j >= S) continue;
      a[0] += x[j].x; a[1] += x[j].y; a[2] += x[j].z; a[3] += x[j].w;
      b[0] += y[j].x; b[1] += y[j].y; b[2] += y[j].z; b[3] += y[j].w;
    }
  }
}

/* What a lane needs of one warp task of a GEMM phase: two 16-row tiles of a
 * weight matrix W ([N, KD] fp8 row-major, scales [N/128, KD/128]) times one
 * list's rows (at most 8) of an activation matrix, K blocks [kb, kb_end).
 * GEMM1's tiles are 16 up rows and the 16 gate rows I further; GEMM2's two
 * adjacent tiles. */
struct small_task {
  int kb, kb_end;
  const uint8_t *w[2];   /* this lane's weight row g of each tile, + 16q */
  const float *ws[2];    /* the tiles' scale rows [KD/128] */
  const uint8_t *a;      /* this lane's activation row (list entry g), + 16q; NULL past the list */
  const float *as[2];    /* scales of list entries 2q, 2q+1 at kb = 0 (NULL past the list) */
  int as_stride;         /* between K blocks */
  float *out[2];         /* partial sums of entries 2q, 2q+1 at the tiles' row g (NULL past the list) */
  int tile_gap;          /* rows from tile 0 to tile 1 (in out) */
};

/* Where warp task `task` of a GEMM phase sits: split s of S, row tile r of
 * R, list j with its expert e and rows [row0, row0 + count). */
struct small_task_pos {
  int s, r, j, e, row0, count;
};

/* Task `task` of S splits x R row tiles, and into k its K range: split s
 * of S over KB blocks. */
static __device__ __forceinline__ small_task_pos small_locate(const small_plan &pl, int task, int S, int R, int KB,
                                                              small_task &k) {
  small_task_pos t;
  t.s = task % S;
  t.r = (task / S) % R;
  t.j = task / (S * R);
  t.e = pl.list_expert[t.j];
  t.row0 = pl.list_off[t.j];
  t.count = pl.list_off[t.j + 1] - t.row0;
  k.kb = t.s * KB / S;
  k.kb_end = (t.s + 1) * KB / S;
  return t;
}

/* The [N, KD] weights and [N/128, KD/128] scales of a list's expert e: local
 * expert e, or shared expert -1 - e. */
template <int N, int KD>
static __device__ __forceinline__ group_weights small_weights(int e, const uint8_t *w, const float *ws,
                                                              const uint8_t *shared_w, const float *shared_ws) {
  group_weights g;
  g.extra = e < 0;
  g.index = g.extra ? -1 - e : e;
  g.b = (g.extra ? shared_w : w) + (long long)g.index * N * KD;
  g.scale = (g.extra ? shared_ws : ws) + (long long)g.index * (N / 128) * (KD / 128);
  return g;
}

/* This lane's two C columns, list entries 2q and 2q + 1 of `count`: their
 * activation scales at K block 0 (scale_of(entry)) and their partial rows
 * (out + entry * ld); NULL past the list. */
template <typename ScaleOf>
static __device__ __forceinline__ void small_columns(small_task &t, int count, float *out, int ld, ScaleOf scale_of) {
  const int q = threadIdx.x & 3;
#pragma unroll
  for (int c = 0; c < 2; c++) {
    const int i = 2 * q + c;
    t.as[c] = i < count ? scale_of(i) : nullptr;
    t.out[c] = i < count ? out + (long long)i * ld : nullptr;
  }
}

/* What small_issue copies of a K block: the weight rows and their scales
 * (known from the plan), the activation rows and theirs (known once the
 * phase before has written them), or both. */
enum class small_part { weights = 1, acts = 2, all = 3 };

/* Copy K block kb of task t into ring slot `slot` (this lane's words). */
template <int KD, small_part PART = small_part::all>
static __device__ __forceinline__ void small_issue(const small_task &t, int kb, uint32_t slot) {
  constexpr bool W = ((int)PART & 1) != 0, A = ((int)PART & 2) != 0;
  const int lane = threadIdx.x & 31;
  const uint32_t d = slot + lane * 16;
  if constexpr (W) {
#pragma unroll
    for (int m = 0; m < 2; m++)
#pragma unroll
      for (int r = 0; r < 2; r++)
#pragma unroll
        for (int h = 0; h < 2; h++)
          ptx::cp_async_16_stream(d + 512 * (4 * m + 2 * r + h), t.w[m] + (long long)r * 8 * KD + kb * 128 + h * 64,
                                  true);
    ptx::cp_async_4(d + 10 * 512 + 0, t.ws[0] + kb, true);
    ptx::cp_async_4(d + 10 * 512 + 4, t.ws[1] + kb, true);
  }
  if constexpr (A) {
#pragma unroll
    for (int h = 0; h < 2; h++)
      ptx::cp_async_16(d + 512 * (8 + h), t.a ? t.a + kb * 128 + h * 64 : t.w[0], t.a != nullptr);
    ptx::cp_async_4(d + 10 * 512 + 8, t.as[0] ? t.as[0] + (long long)kb * t.as_stride : t.ws[0], t.as[0] != nullptr);
    ptx::cp_async_4(d + 10 * 512 + 12, t.as[1] ? t.as[1] + (long long)kb * t.as_stride : t.ws[0], t.as[1] != nullptr);
  }
}

/* One K block of a task from ring slot `slot`: acc[m] += the block's
 * product, promoted with its scales as the general path does. */
static __device__ __forceinline__ void small_mma_block(const uint4 *slot, float (&acc)[2][4]) {
  const int lane = threadIdx.x & 31;
  uint4 v[small_slot_words];
#pragma unroll
  for (int i = 0; i < small_slot_words; i++) v[i] = slot[i * 32 + lane];
  const float sw[2] = {__uint_as_float(v[10].x), __uint_as_float(v[10].y)};
  const float sa[2] = {__uint_as_float(v[10].z), __uint_as_float(v[10].w)};
#pragma unroll
  for (int m = 0; m < 2; m++) {
    float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int st = 0; st < 4; st++) {
      const uint4 &lo = v[m * 4 + (st >> 1)], &hi = v[m * 4 + 2 + (st >> 1)], &b = v[8 + (st >> 1)];
      const uint32_t af[4] = {(st & 1) ? lo.z : lo.x, (st & 1) ? hi.z : hi.x, (st & 1) ? lo.w : lo.y,
                              (st & 1) ? hi.w : hi.y};
      ptx::mma_e4m3_16832(t, af, (st & 1) ? b.z : b.x, (st & 1) ? b.w : b.y);
    }
    acc[m][0] = fmaf(t[0], sa[0] * sw[m], acc[m][0]);
    acc[m][1] = fmaf(t[1], sa[1] * sw[m], acc[m][1]);
    acc[m][2] = fmaf(t[2], sa[0] * sw[m], acc[m][2]);
    acc[m][3] = fmaf(t[3], sa[1] * sw[m], acc[m][3]);
  }
}

/* A warp's walk over the K blocks of its tasks gw, gw + nwarps, ... <
 * ntasks, in the order the GEMM phase multiplies them. task_of(i) gives the
 * lane's view of task i. */
template <typename TaskOf>
struct small_cursor {
  int task, kb;
  small_task t;
  __device__ __forceinline__ small_cursor(int gw, int ntasks, const TaskOf &task_of) {
    task = gw;
    t = task_of(task < ntasks ? task : -1);
    kb = t.kb;
  }
  /* the next K block (into t, kb); false past the last task */
  __device__ __forceinline__ bool next(int ntasks, int nwarps, const TaskOf &task_of) {
    while (task < ntasks && kb >= t.kb_end) {
      task += nwarps;
      t = task_of(task < ntasks ? task : -1);
      kb = t.kb;
    }
    return task < ntasks;
  }
};

/* The weights (and weight scales) of the first STAGES - 1 K blocks of a
 * GEMM phase, copied into their ring slots ahead of the phase: they do not
 * depend on the phase before, so they stream while it runs. One cp.async
 * group per block; small_gemm_phase(..., weights_issued = true) then
 * copies only those blocks' activations. */
template <int KD, typename TaskOf>
static __device__ __forceinline__ void small_preissue_weights(int ntasks, int gw, int nwarps, uint8_t *ring,
                                                              const TaskOf &task_of) {
  const uint32_t ring_s = smem_addr(ring);
  small_cursor<TaskOf> c(gw, ntasks, task_of);
#pragma unroll
  for (int i = 0; i < FP8MOE_SMALL_STAGES - 1; i++) {
    if (c.next(ntasks, nwarps, task_of))
      small_issue<KD, small_part::weights>(c.t, c.kb++, ring_s + i * small_slot_bytes);
    ptx::cp_async_commit();
  }
}

/* A GEMM phase for this warp: tasks gw, gw + nwarps, ... < ntasks, as one
 * stream of K blocks through the warp's ring (shared memory, STAGES slots).
 * task_of(i) gives the lane's view of task i. weights_issued: the first
 * STAGES - 1 blocks' weights are in flight already (small_preissue_weights,
 * their groups older than any this phase commits). */
template <int KD, typename TaskOf>
static __device__ __forceinline__ void small_gemm_phase(int ntasks, int gw, int nwarps, uint8_t *ring,
                                                        const TaskOf &task_of, bool weights_issued = false) {
  constexpr int STAGES = FP8MOE_SMALL_STAGES;
  const uint32_t ring_s = smem_addr(ring);
  /* the load cursor runs STAGES - 1 K blocks ahead of the math */
  small_cursor<TaskOf> ld(gw, ntasks, task_of);
#pragma unroll
  for (int i = 0; i < STAGES - 1; i++) {
    if (ld.next(ntasks, nwarps, task_of)) {
      if (weights_issued)
        small_issue<KD, small_part::acts>(ld.t, ld.kb++, ring_s + i * small_slot_bytes);
      else
        small_issue<KD>(ld.t, ld.kb++, ring_s + i * small_slot_bytes);
    }
    ptx::cp_async_commit(); /* an empty group past the end keeps the count */
  }
  int stage = 0;
  for (int ct = gw; ct < ntasks; ct += nwarps) {
    const small_task t = task_of(ct);
    float acc[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
    for (int kb = t.kb; kb < t.kb_end; kb++) {
      /* this block's groups are complete (with weights_issued, the first
       * blocks' weight groups are older still) */
      ptx::cp_async_wait<STAGES - 2>();
      small_mma_block(reinterpret_cast<const uint4 *>(ring + stage * small_slot_bytes), acc);
      /* the slot read in the previous step is free: refill it */
      if (ld.next(ntasks, nwarps, task_of))
        small_issue<KD>(ld.t, ld.kb++, ring_s + (stage == 0 ? STAGES - 1 : stage - 1) * small_slot_bytes);
      ptx::cp_async_commit();
      stage = stage == STAGES - 1 ? 0 : stage + 1;
    }
    const int lane = threadIdx.x & 31, g = lane >> 2;
#pragma unroll
    for (int c = 0; c < 2; c++) {
      if (!t.out[c]) continue;
#pragma unroll
      for (int m = 0; m < 2; m++) {
        t.out[c][m * t.tile_gap + g] = acc[m][c];
        t.out[c][m * t.tile_gap + g + 8] = acc[m][2 + c];
      }
    }
  }
  ptx::cp_async_wait<0>();
}

/* The combine phase: P lanes per (token, 8 output columns), P the power of
 * two >= the token's entries (its K slots, then the shared experts), so a
 * warp holds 32 / P such items and consecutive warps of items run on
 * different SMs. Lane e loads entry e's partials, four splits at a time,
 * adds them in split order and rounds the sum to bf16 (GEMM2's value of the
 * row); the item's first lane then takes the entries in order through
 * shuffles and adds each with its weight, so every sum keeps the combine
 * kernel's order while the loads of all entries and splits are in flight
 * together. */
template <int K, int H>
static __device__ __forceinline__ void small_combine(const small_params &p, const small_plan &pl, int S2, int ld,
                                                     int gw, int nwarps) {
  const int T = p.num_tokens, rows = pl.rows, nr = K + p.num_shared, lane = threadIdx.x & 31;
  int P = 1;
  while (P < nr) P *= 2;
  const int per_warp = 32 / P, sub = lane / P, e = lane % P, n = T * (H / 8);
  for (int base = gw * per_warp; base < n; base += nwarps * per_warp) { /* warp-uniform */
    const int item = base + sub, t = item / (H / 8), c = (item % (H / 8)) * 8;
    int row = -1; /* entry e's row: slot e < K, then shared expert e - K; -1 without one */
    if (item < n && e < nr)
      row = e < K ? pl.slot_row[t * K + e] : pl.routed_rows + (e - K) * T + t;
    float lo[4] = {0.0f, 0.0f, 0.0f, 0.0f}, hi[4] = {0.0f, 0.0f, 0.0f, 0.0f}, y[8];
    if (row >= 0) small_sum_splits(p.part, S2, rows, row, ld, c, c + 4, lo, hi);
#pragma unroll /* GEMM2's bf16 value of the row (0 without one) */
    for (int i = 0; i < 8; i++) y[i] = bf16_bits_to_float(float_to_bf16_bits(i < 4 ? lo[i] : hi[i - 4]));
    float acc[8];
#pragma unroll
    for (int i = 0; i < 8; i++) acc[i] = 0.0f;
    for (int k = 0; k < nr; k++) { /* the entries in order, from their lanes */
      const int src = sub * P + k;
      const int rk = __shfl_sync(0xffffffffu, row, src);
      float v[8];
#pragma unroll
      for (int i = 0; i < 8; i++) v[i] = __shfl_sync(0xffffffffu, y[i], src);
      if (rk < 0) continue;
      if (k < K) combine_add_slot(acc, pl.slot_weight[t * K + k], v);
      else combine_add_shared(acc, v);
    }
    if (e == 0 && item < n) *reinterpret_cast<uint4 *>(p.out + (long long)t * H + c) = pack_bf16x8(acc);
  }
}

/* Phases first_phase..last_phase (1 GEMM1, 2 finalize, 3 GEMM2, 4 combine);
 * more than one only in a cooperative launch. */
template <int E, int K, int H, int I>
__global__ void __launch_bounds__(small_max_warps * 32, 1)
    small_moe_kernel(const small_params p, int first_phase, int last_phase) {
  __shared__ small_plan pl;
  extern __shared__ __align__(128) uint8_t small_ring[];
  griddep_wait(); /* the routing kernel's slots, or the previous phase's output */
  griddep_launch_dependents();
  small_build_plan<E, K>(p, pl, small_ring);

  const int T = p.num_tokens, lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, q = lane & 3;
  const int warps = blockDim.x >> 5;
  /* consecutive tasks go to different SMs first */
  const int nwarps = gridDim.x * warps, gw = warp * gridDim.x + blockIdx.x;
  uint8_t *ring = small_ring + warp * FP8MOE_SMALL_STAGES * small_slot_bytes;
  const int lists = pl.num_lists, rows = pl.rows;
  constexpr int ld = 2 * I > H ? 2 * I : H; /* partial row length */
  if (lists == 0) {
    /* no local slot and no shared expert (the same plan in every CTA): no
     * task, no partial sum, nothing to wait for; the combine writes zeros */
    if (last_phase == 4) small_combine<K, H>(p, pl, 1, ld, gw, nwarps);
    return;
  }
  const int S1 = small_splits(lists * (I / 16), H / 128, rows, p.part_rows, nwarps);
  const int S2 = small_splits(lists * (H / 32), I / 128, rows, p.part_rows, nwarps);

  /* GEMM1: task = (list, 16 activation columns, K range) */
  constexpr int R1 = I / 16, KB1 = H / 128;
  auto task1_of = [&](int task) {
    small_task t;
    t.kb = t.kb_end = 0;
    if (task < 0) return t;
    const small_task_pos u = small_locate(pl, task, S1, R1, KB1, t);
    const int r = u.r, row0 = u.row0, count = u.count;
    const group_weights w = small_weights<2 * I, H>(u.e, p.w1, p.w1_scale, p.shared_w1, p.shared_w1_scale);
    t.w[0] = w.b + (long long)(16 * r + g) * H + 16 * q; /* up */
    t.w[1] = t.w[0] + (long long)I * H;                  /* gate */
    t.ws[0] = w.scale + (16 * r / 128) * KB1;
    t.ws[1] = w.scale + ((I + 16 * r) / 128) * KB1;
    t.a = g < count ? p.x + (long long)pl.row_token[row0 + g] * H + 16 * q : nullptr;
    t.as_stride = T;
    t.tile_gap = I;
    small_columns(t, count, p.part + ((long long)u.s * rows + row0) * ld + 16 * r, ld,
                  [&](int i) { return p.x_scale + pl.row_token[row0 + i]; });
    return t;
  };
  /* GEMM2: task = (list, 32 output columns, K range) */
  constexpr int R2 = H / 32, KB2 = I / 128;
  auto task2_of = [&](int task) {
    small_task t;
    t.kb = t.kb_end = 0;
    if (task < 0) return t;
    const small_task_pos u = small_locate(pl, task, S2, R2, KB2, t);
    const int r = u.r, row0 = u.row0, count = u.count;
    const group_weights w = small_weights<H, I>(u.e, p.w2, p.w2_scale, p.shared_w2, p.shared_w2_scale);
    t.w[0] = w.b + (long long)(32 * r + g) * I + 16 * q;
    t.w[1] = t.w[0] + 16LL * I;
    t.ws[0] = t.ws[1] = w.scale + (32 * r / 128) * KB2;
    t.a = g < count ? p.act + (long long)(row0 + g) * I + 16 * q : nullptr;
    t.as_stride = 1;
    t.tile_gap = 16;
    small_columns(t, count, p.part + ((long long)u.s * rows + row0) * ld + 32 * r, ld,
                  [&](int i) { return p.act_scale + (long long)(row0 + i) * KB2; });
    return t;
  };
  /* GEMM2's first weights stream from the end of this warp's GEMM1 tasks,
   * through the finalize, when one launch runs both and they are at least
   * a quarter of GEMM2's K blocks */
  const bool preissue = FP8MOE_SMALL_PREISSUE && first_phase <= 1 && last_phase >= 3 &&
                        4LL * (FP8MOE_SMALL_STAGES - 1) * nwarps >= (long long)lists * R2 * KB2;

  /* the phases in straight-line code, not a loop over a switch: no value
   * stays live from one phase around to the next */
#pragma unroll
  for (int phase = 1; phase <= 4; phase++) {
    if (phase < first_phase || phase > last_phase) continue;
    if (phase > first_phase) cooperative_groups::this_grid().sync(); /* cooperative launch only */
    if (phase == 1) {
      small_gemm_phase<H>(lists * R1 * S1, gw, nwarps, ring, task1_of);
      if (preissue) small_preissue_weights<I>(lists * R2 * S2, gw, nwarps, ring, task2_of);
    } else if (phase == 2) {
      /* finalize: warp per (row, 128 activation columns) */
      constexpr int NB = I / 128;
      for (int item = gw; item < rows * NB; item += nwarps) {
        const int row = item / NB, blk = item % NB, c = blk * 128 + 4 * lane;
        float up[4] = {0.0f, 0.0f, 0.0f, 0.0f}, gate[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        small_sum_splits(p.part, S1, rows, row, ld, c, I + c, up, gate);
        const swiglu_coeffs co =
            swiglu_coeffs_at(p.swiglu_alpha, p.swiglu_beta, p.swiglu_limit, pl.list_expert[pl.row_list[row]]);
        const float scale = fp8moe_quant_scale(warp_max(swiglu_segment<4>(up, gate, co)));
        const uint32_t v = (uint32_t)e4m3x2_quantize(up[0], up[1], scale) |
                           ((uint32_t)e4m3x2_quantize(up[2], up[3], scale) << 16);
        *reinterpret_cast<uint32_t *>(p.act + (long long)row * I + c) = v;
        if (lane == 0) p.act_scale[(long long)row * NB + blk] = scale;
      }
    } else if (phase == 3) {
      small_gemm_phase<I>(lists * R2 * S2, gw, nwarps, ring, task2_of, preissue);
    } else {
      small_combine<K, H>(p, pl, S2, ld, gw, nwarps);
    }
  }
}

/* Whether a run of T tokens takes the small-T layer (batch_invariant
 * aside): T up to fp8moe_small_token_limit(K, H, I) where the experts have
 * fewer than FP8MOE_SMALL_LARGE_EXPERT_WEIGHTS weights (3 I H); with larger
 * experts every T up to 8, and above it runs where the general path would
 * have fewer than two GEMM1 tiles per SM: uniform routing's expected number
 * of active local experts (and the shared ones) times 2I / 256 (an expert-
 * parallel shard of a few local experts). Elsewhere the general path's
 * Hopper GEMMs stream large experts' weights as fast and the launches it
 * saves weigh less (DeepSeek-V3 T = 12..16 1-3% slower on this layer). */
template <int E, int K, int H, int I>
static inline bool small_takes(int T, int local_experts, int shared, int sm_count) {
  if (FP8MOE_SMALL_MAX_TOKENS == 0 || T < 1 || T > fp8moe_small_token_limit(K, H, I)) return false;
  if (T <= 8 || !fp8moe__small_large_experts(H, I)) return true;
  const double active = local_experts * (1.0 - std::pow(1.0 - (double)K / E, T)) + shared;
  return active * (2 * I / 256) < 2.0 * sm_count;
}

/* Warps per CTA: as many as the device's shared memory holds rings for, up
 * to small_max_warps; at least 4 (the plan's scratch). */
static inline int small_warps_for(const device_info &dev) {
  const int avail = dev.max_smem_optin - (int)sizeof(small_plan) - 1024;
  int w = avail / (FP8MOE_SMALL_STAGES * small_slot_bytes);
  return w > small_max_warps ? small_max_warps : w;
}

/* The layer for a p.num_tokens that small_takes; pdl_first: the
 * first launch may overlap the routing kernel before it (split launches
 * only), pdl: the later launches. */
template <int E, int K, int H, int I>
static fp8moe_status small_launch(const small_params &p, cudaStream_t s, const device_info &dev, bool pdl_first,
                                  bool pdl) {
  static_assert(H % 128 == 0 && I % 128 == 0, "128-multiples");
  auto kernel = small_moe_kernel<E, K, H, I>;
  const int warps = small_warps_for(dev);
  if (warps < 4) return FP8MOE_ERROR_UNSUPPORTED_DEVICE;
  const size_t smem = (size_t)warps * FP8MOE_SMALL_STAGES * small_slot_bytes;
  FP8MOE__CHECK_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  const dim3 grid((unsigned)dev.sm_count), block((unsigned)(warps * 32));
#if !FP8MOE_SMALL_COOPERATIVE
  for (int phase = 1; phase <= 4; phase++)
    FP8MOE__CHECK_CUDA(launch_kernel(kernel, grid, block, smem, s, phase == 1 ? pdl_first : pdl, p, phase, phase));
#else
  /* one CTA per SM (launch bounds, shared memory): all resident. The
   * cooperative launch is made without PDL. */
  (void)pdl_first; (void)pdl;
  FP8MOE__CHECK_CUDA(launch_kernel_ex(kernel, grid, block, smem, s, false, 1u, true, p, 1, 4));
#endif
  return FP8MOE_OK;
}

} // namespace detail
} // namespace fp8moe

#endif /* FP8MOE_DETAIL_SMALL_CUH */
