/* fp8moe/detail/gemm/sm90_e4m3_blockscale.cuh - the Hopper (sm_90a) grouped
 * FP8 block-scale GEMM: TMA + wgmma + warp specialization + a persistent
 * scheduler. It implements the contract of params.cuh (read that first).
 *
 * Design.
 *  - One CTA per SM (grid = SM count, capped by an upper bound of the work),
 *    384 threads: warpgroups 0 and 1 are consumers (wgmma + epilogue, 232
 *    registers each after setmaxnreg.inc), warpgroup 2 is the producer (40
 *    registers after setmaxnreg.dec): in warp 8 one elected thread takes
 *    the work items and issues TMA, warp 9 copies the block scales with
 *    cp.async, warps 10-11 exit (or gather A rows, below). ptxas caps
 *    the kernel at 168 registers (65536 / 384) and allocates each branch
 *    up to its setmaxnreg value;
 *    40/232 is the split with no spills (tunables.h:
 *    FP8MOE_SM90_PRODUCER_REGS / _CONSUMER_REGS). With three consumer
 *    warpgroups (CONS in sm90_config) the CTA has 512 threads, warpgroup 3
 *    produces (warps 12 and 13) and the consumers get 152 registers.
 *  - A CTA tile is BM = 128 rows x BN columns (sm90_config below); consumer
 *    warpgroup w owns rows [64w, 64w + 64) and all BN columns, computed as
 *    NSUB slices of W = BN / NSUB columns (one wgmma batch each). The
 *    defaults (tunables.h): store epilogues BN = 256 as 2 slices of 128
 *    (4 stages) when N is a multiple of 256, else BN = 128 (6 stages);
 *    swiglu_quant BN = 256: slice 0 = "up" rows [j0, j0+128) of B, slice 1 =
 *    "gate" rows [I + j0, I + j0 + 128), so every thread holds up and gate
 *    of the same (row, column) in registers and SwiGLU is thread-local.
 *    Other configurations (192-column tiles, 2-CTA clusters with a
 *    multicast weight tile: FP8MOE_SM90_CLUSTER, four pipelined 64-column
 *    slices: FP8MOE_SM90_PIPELINE, three consumer warpgroups on 192 x 128
 *    store tiles: 512 threads, 152 registers per consumer thread) exist for
 *    bench/bench_gemm and the layer to compare; every configuration gives
 *    the same bits.
 *  - Operands are K-major, 128-byte swizzled: a TMA box is 128 bytes of K
 *    (one whole quantization block) by 128 rows, written 1024-byte aligned,
 *    which is exactly the wgmma SW128 K-major canonical layout. A stage holds
 *    one K block: A (16 KiB) + BN rows of B (W-row boxes; swiglu: the up and
 *    the gate box) + that block's scales (128 A scales, the tile's B
 *    scales), in a ring of full/empty
 *    mbarriers (full: the TMA thread's arrive + bytes and one cp.async
 *    arrival per scale lane; empty: one arrival per consumer thread once its
 *    wgmmas have read the stage, so each thread's own reads of the stage's
 *    scales are ordered before its release, which the producer's wait
 *    acquires. One elected arrive after a __syncwarp is also correct by the
 *    memory model, but racecheck cannot follow that chain and reports
 *    write-after-read hazards; 256 arrivals per stage cost nothing
 *    measurable). A is loaded in boxes of 32 rows, only as
 *    many as the tile has rows: a decode tile of 4 rows moves 4 KiB of A per
 *    K block, not 16.
 *  - Block scales: per K block and slice, the 4 wgmma k32 steps write a
 *    W/2-register temporary (scale-d = 0 on the first), which is then
 *    promoted into the fp32 accumulator: acc += tmp * a_scale[row] * b_scale.
 *    The tensor core's internal accumulation therefore never spans more
 *    than 128 products. Register budget per consumer thread: BN/2
 *    accumulators + W/2 temporaries (192 for the 256-column tiles). Scales
 *    travel with the
 *    stage (4-byte cp.async, so a_scale_ld needs no alignment; rows past the
 *    group's end get scale 0), so no load latency is on the consumers' path.
 *  - Persistent scheduler (schedule.cuh): work items are (group, n-tile,
 *    m-tile), consecutive items sharing the expert's weight tile in L2.
 *    CTA b starts with item b; with a tile counter (params.cuh; the MoE
 *    layer passes one) each CTA then claims the next unclaimed item as its
 *    producer finishes the last, so the items that share a weight tile
 *    start together however long each CTA's earlier items took; without
 *    one it strides over the list (b + grid, b + 2 grid, ...). Every item
 *    is computed alike wherever it runs, so the bits do not depend on the
 *    order. The producer hands each item to the consumers and the scale
 *    warp with the item's stages (s_item) and ends the list with a stage
 *    that carries -1. B comes through one tensor map per weight array
 *    (the routed experts' and, when there are extra groups, the shared
 *    experts'). A tile of at most 64 valid rows is run by both
 *    warpgroups on half of the columns each in calls whose groups average
 *    at most 64 rows (decode sizes; HALF in sm90_config), else by
 *    warpgroup 0 alone while warpgroup 1 only keeps the barrier protocol.
 *  - Gathered A (params.cuh, a_rows; the MoE layer's GEMM1 with
 *    FP8MOE_GATHER_A): warps 10-11 copy each stage's A rows from their
 *    source rows with cp.async into the layout TMA writes, hand each stage
 *    over through the async proxy (FP8MOE_SM90_GATHER_LAG), and the TMA
 *    thread loads only the weights; the scale warp reads each row's
 *    scales at its source row.
 *  - Early weights (params.cuh, early_weights; no clusters): a CTA reads
 *    the offsets and issues its first item's weight boxes for up to STAGES
 *    K blocks (each stage's full barrier told their bytes with expect_tx)
 *    before griddep_wait, so they load while the kernel before ends; the
 *    stages' A boxes and scales follow the wait.
 *  - Epilogues (epilogue.cuh) store straight from the accumulators (bf16
 *    row segments 8 bytes per lane, whole sectors per quad; fp32 or fp8
 *    pairs), rows masked at the group end; swiglu_quant holds up
 *    and gate of the same (row, column) in one thread, reduces the row amax
 *    over the quad that holds a row (shuffles only) and writes the fp8
 *    activations and one scale per (row, 128 columns).
 *
 * Where the time goes at prefill (the consumers: wgmma, wait, promote per
 * slice; the weight tiles re-read from HBM when the CTAs that share them
 * drift apart) and at decode is measured in docs/performance.md.
 *
 * The kernel body exists only for sm_90a (__CUDA_ARCH_FEAT_SM90_ALL); built
 * for any other target it is empty, and gemm_sm90_launch refuses devices
 * other than cc 9.0 (FP8MOE_ERROR_UNSUPPORTED_DEVICE).
 *
 * Host side: the TMA descriptors (A, B and the extra groups' B) are built per call with
 * cuTensorMapEncodeTiled, reached through cudaGetDriverEntryPointByVersion
 * (no libcuda link), and passed as __grid_constant__ parameters, so a CUDA
 * graph captures them with the launch. No allocation, no synchronization.
 */
#ifndef FP8MOE_DETAIL_GEMM_SM90_E4M3_BLOCKSCALE_CUH
#define FP8MOE_DETAIL_GEMM_SM90_E4M3_BLOCKSCALE_CUH

#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include <atomic>

#include "../common.cuh"
#include "../ptx/mma.cuh"
#include "../ptx/sm90.cuh"
#include "epilogue.cuh"
#include "params.cuh"
#include "pipeline.cuh"
#include "schedule.cuh"

namespace fp8moe {
namespace detail {

enum {
  sm90_bk = 128,               /* K per stage: one quantization block, one 128-byte swizzle row */
  sm90_a_box_rows = 32,        /* A comes in boxes of 32 rows, only as many as the tile has rows */
  sm90_max_groups = gemm_max_groups
};

static_assert(FP8MOE_SM90_PRODUCER_REGS % 8 == 0 && FP8MOE_SM90_CONSUMER_REGS % 8 == 0 &&
                  FP8MOE_SM90_PRODUCER_REGS + 2 * FP8MOE_SM90_CONSUMER_REGS <= 504,
              "FP8MOE_SM90_*_REGS: multiples of 8, producer + 2 x consumer <= 504");
static_assert(FP8MOE_SM90_STORE_CHUNKS == 1 || FP8MOE_SM90_STORE_CHUNKS == 2, "FP8MOE_SM90_STORE_CHUNKS: 1 or 2");
static_assert(FP8MOE_SM90_CLUSTER == 1 || FP8MOE_SM90_CLUSTER == 2, "FP8MOE_SM90_CLUSTER: 1 or 2");

/* A tile configuration of the Hopper kernel.
 *   BN      columns per CTA tile (swiglu_quant: 256 = 128 "up" + 128 "gate");
 *   NSUB    wgmma batches per K block: each consumer warpgroup issues the 4
 *           k32 steps of one W = BN / NSUB column slice into a temporary,
 *           waits for them, then promotes the temporary into that slice's
 *           fp32 accumulator;
 *   STAGES  K blocks in flight in the shared-memory ring;
 *   CLUSTER 1, or 2: CTAs run in clusters of two that take the two m-tiles
 *           of a pair (schedule.cuh); when both are of one group, each CTA
 *           loads half of the weight tile and multicasts it to both, so the
 *           pair reads it from L2 (and HBM) once. A stage is then released
 *           by both CTAs' consumers. With a tile counter rank 0 claims the
 *           pairs. (A third fewer L2 reads, but 3-13% slower in the layer:
 *           docs/performance.md.)
 *   HALF    a tile of at most 64 rows (a group's last, or a decode-sized
 *           group's only one) is split by columns instead of rows: both
 *           warpgroups run its 64 rows, each on half of the columns
 *           (sm90_half_tile), instead of one warpgroup running all of it
 *           while the other idles. Each element is computed exactly as in a
 *           full tile. 0: never; 1: in calls whose groups average at most
 *           64 rows (decode sizes, where it is faster; on larger calls the
 *           short last tiles of groups are as fast or faster by rows);
 *           2: always.
 *   SWAP    0, or 32 / 64: a tile of at most SWAP rows is computed with the
 *           operands swapped (sm90_swapped_tile: the weights on wgmma M,
 *           the rows on N = SWAP), before the HALF rule is asked; each
 *           element is computed exactly as in a full tile.
 *   PIPE    0, or 1: two temporaries, slice c + 1's wgmmas in flight while
 *           slice c is promoted (sm90_mainloop_pipelined; an even NSUB).
 *   CONS    consumer warpgroups, 2, or 3 for 192-row store tiles of 128
 *           columns: three batches queue for the tensor pipe, one per
 *           warpgroup, so one warpgroup's promotion leaves two in flight.
 * Registers per consumer thread: BN / 2 accumulators + W / 2 temporaries
 * (W with PIPE). */
template <int BN_, int NSUB_, int STAGES_, int CLUSTER_ = 1, int HALF_ = 0, int SWAP_ = 0, int PIPE_ = 0,
          int CONS_ = 2>
struct sm90_config {
  static constexpr int bn = BN_, nsub = NSUB_, stages = STAGES_, w = BN_ / NSUB_, cluster = CLUSTER_;
  static constexpr int half = HALF_, swap = SWAP_, pipe = PIPE_;
  /* consumer warpgroups, each on 64 rows of the tile: rows per tile, threads per CTA, A bytes per stage */
  static constexpr int consumers = CONS_, bm = 64 * CONS_, threads = 128 * (CONS_ + 1), a_bytes = bm * 128;
  static_assert(CONS_ == 2 || (CONS_ == 3 && BN_ == 128 && NSUB_ == 1 && CLUSTER_ == 1 && HALF_ == 0 && SWAP_ == 0 &&
                               PIPE_ == 0),
                "three consumer warpgroups: 192 x 128 tiles, one slice, no clusters, half or swapped tiles");
  static_assert(PIPE_ == 0 || (PIPE_ == 1 && NSUB_ % 2 == 0 && BN_ / 2 + w <= 192),
                "pipelined slices: an even number of them, two temporaries beside the accumulators");
  static_assert(SWAP_ == 0 || ((SWAP_ == 32 || SWAP_ == 64) && CLUSTER_ == 1 && (BN_ == 128 || BN_ == 256)),
                "swapped tails: tiles of at most 32 or 64 rows, no clusters, tiles of 128 or 256 columns");
  static_assert(HALF_ >= 0 && HALF_ <= 2, "HALF: 0 never, 1 where groups average <= 64 rows, 2 always");
  static_assert(!HALF_ || (CLUSTER_ == 1 && BN_ % 128 == 0), "half tiles: no clusters, tiles of 128 or 256 columns");
  static_assert(CLUSTER_ == 1 || CLUSTER_ == 2, "clusters of 1 or 2 CTAs");
  /* the register split (tunables.h); a cluster's producer decodes both
   * tiles of a pair and needs 56 registers, which leaves 224 per consumer */
  static constexpr int producer_regs =
      CLUSTER_ > 1 && FP8MOE_SM90_PRODUCER_REGS < 56 ? 56 : FP8MOE_SM90_PRODUCER_REGS;
  static constexpr int consumer_regs = FP8MOE_SM90_CONSUMER_REGS < (504 - producer_regs) / CONS_ / 8 * 8
                                           ? FP8MOE_SM90_CONSUMER_REGS
                                           : (504 - producer_regs) / CONS_ / 8 * 8;
  static_assert(BN_ % NSUB_ == 0 && (w == 64 || w == 96 || w == 128 || w == 192), "slice width 64, 96, 128 or 192");
  static_assert(BN_ / 2 + w / 2 <= 192, "at most 192 accumulator + temporary registers");
};

template <class CFG, epilogue EPI>
struct sm90_smem_layout {
  /* B of a stage is BN rows of 128 bytes, loaded as boxes of box_rows rows
   * (swiglu: the up box and the gate box, 128 rows each, from two places of
   * the weight matrix; store: one box per slice) */
  static constexpr int box_rows = EPI == epilogue::swiglu_quant ? 128 : CFG::w;
  static constexpr int boxes = CFG::bn / box_rows;
  static constexpr int stage_bytes = CFG::a_bytes + CFG::bn * 128;
  static constexpr int barriers_offset = CFG::stages * stage_bytes;
  static constexpr int scale_a_offset = barriers_offset + 3 * CFG::stages * 8;     /* [STAGES][BM] */
  static constexpr int scale_b_offset = scale_a_offset + CFG::stages * CFG::bm * 4; /* [STAGES][4] */
  static constexpr int prefix_offset = scale_b_offset + CFG::stages * 4 * 4;
  static constexpr int offsets_offset = prefix_offset + (sm90_max_groups + 1) * 4;
  /* [2][64]: half-tile row amax; [8][SWAP]: swapped-tile amax per consumer warp and row */
  static constexpr int amax_offset = offsets_offset + (sm90_max_groups + 1) * 4;
  static constexpr int amax_floats = CFG::swap > 16 ? 8 * CFG::swap : 2 * 64;
  static constexpr int item_offset = amax_offset + amax_floats * 4; /* [STAGES]: the item a stage starts, or -1 */
  /* [BM]: with a_rows, the source rows of the gather warps' current item */
  static constexpr int arow_offset = item_offset + CFG::stages * 4;
  /* clusters with claimed items: rank 0's claims for rank 1, [claims] mbarriers then [claims] items */
  static constexpr int claims = CFG::cluster > 1 ? CFG::stages + 1 : 0;
  static constexpr int claim_offset = (arow_offset + CFG::bm * 4 + 7) / 8 * 8;
  static constexpr int bytes = claims > 0 ? claim_offset + claims * 12 : arow_offset + CFG::bm * 4;
  static constexpr int dynamic_bytes = bytes + 1024; /* slack to align the base to 1024 */
  static_assert((box_rows * 128) % 1024 == 0, "B boxes keep the 1024-byte swizzle-atom alignment");
  static_assert(dynamic_bytes <= 227 * 1024, "the Hopper stage counts (tunables.h) exceed 227 KiB of shared memory");
};

/* The store tile of three consumer warpgroups (FP8MOE_SM90_STORE_CONSUMERS):
 * 192 rows x 128 columns, five stages of 40 KB. */
using sm90_config_3wg = sm90_config<128, 1, 5, 1, 0, 0, 0, 3>;

/* The default configuration per shape and epilogue (tunables.h): swiglu
 * pairs up and gate in two 128-column slices; the store epilogues take 256
 * columns where N allows it, else 128. */
template <int N, epilogue EPI>
struct sm90_tiling {
  static constexpr int nchunk =
      EPI == epilogue::swiglu_quant ? 2 : (N % (128 * FP8MOE_SM90_STORE_CHUNKS) == 0 ? FP8MOE_SM90_STORE_CHUNKS : 1);
  static constexpr bool pipe = FP8MOE_SM90_PIPELINE && nchunk == 2; /* 256 columns as 4 pipelined slices of 64 */
  using config = sm90_config<128 * nchunk, pipe ? 4 : nchunk,
                             nchunk == 2 ? FP8MOE_SM90_STAGES_BN256 : FP8MOE_SM90_STAGES_BN128, 1,
                             FP8MOE_SM90_HALF_TILES, FP8MOE_SM90_SWAP_TAIL_ROWS, pipe ? 1 : 0>;
};

template <int N, int K, epilogue EPI>
constexpr bool gemm_sm90_supported() {
  return N > 0 && K > 0 && N % 128 == 0 && K % 128 == 0 && (EPI != epilogue::swiglu_quant || N % 256 == 0);
}

/* Column tiles per m-tile, and the 128x128 weight-scale blocks a tile's
 * columns touch (a 192-column tile starts at column 0 or 64 of a block and
 * spans two). */
template <int N, epilogue EPI, class CFG>
struct sm90_tile_shape {
  static constexpr int n_tiles = EPI == epilogue::swiglu_quant ? N / 256 : (N + CFG::bn - 1) / CFG::bn;
  static constexpr int b_scales = EPI == epilogue::swiglu_quant ? 2 : (CFG::bn + 127) / 128 + (CFG::bn % 128 != 0);
  static_assert(EPI != epilogue::swiglu_quant || CFG::bn == 256, "swiglu tiles are 128 up + 128 gate columns");
  static_assert(b_scales <= 4, "4 weight scales per stage");
};

/* acc += tmp * (a_scale[row] * b_scale[block]) for slice c; f[r][b] holds the
 * product for the thread's row r (0: r0, 1: r0 + 8) and block b (relative
 * to the tile's first), the tile starting OFF columns into its first block.
 * c is a constant at every call (unrolled loops), so the block index of each
 * column group folds to a constant. */
template <epilogue EPI, class CFG, int OFF, int NSB>
static __device__ __forceinline__ void sm90_promote(int c, float (&acc)[CFG::w / 2], const float (&tmp)[CFG::w / 2],
                                                    const float (&f)[2][NSB]) {
#pragma unroll
  for (int j = 0; j < CFG::w / 8; j++) {
    /* swiglu: up slices, then gate slices; store: by column */
    const int b = (EPI == epilogue::swiglu_quant) ? c / (CFG::nsub / 2) : (OFF + c * CFG::w + 8 * j) / 128;
    acc[4 * j + 0] = fmaf(tmp[4 * j + 0], f[0][b], acc[4 * j + 0]);
    acc[4 * j + 1] = fmaf(tmp[4 * j + 1], f[0][b], acc[4 * j + 1]);
    acc[4 * j + 2] = fmaf(tmp[4 * j + 2], f[1][b], acc[4 * j + 2]);
    acc[4 * j + 3] = fmaf(tmp[4 * j + 3], f[1][b], acc[4 * j + 3]);
  }
}

template <int W>
static __device__ __forceinline__ void sm90_fence_regs(float (&r)[W]) {
#pragma unroll
  for (int i = 0; i < W; i++) sm90::fence_operand(r[i]);
}

/* A consumer's wait for a full stage (and, with FP8MOE_SM90_GATHER_LAG=0,
 * its fence before the wgmmas read rows the gather warps copied). */
static __device__ __forceinline__ void sm90_wait_full(uint64_t *full, const stage_ring &ring) {
  sm90::mbar_wait(&full[ring.stage], ring.phase);
  if constexpr (!FP8MOE_SM90_GATHER_LAG) sm90::fence_proxy_async_shared();
}

/* The 4 k32 wgmmas of slice c of the stage at byte offset soff << 4 into
 * tmp, committed as one group. */
template <class CFG>
static __device__ __forceinline__ void sm90_issue_slice(int c, float (&tmp)[CFG::w / 2], uint64_t desc_a0,
                                                        uint64_t desc_b0, uint64_t soff) {
  sm90_fence_regs(tmp);
  sm90::wgmma_fence();
#pragma unroll
  for (int k = 0; k < 4; k++)
    sm90::wgmma_e4m3<CFG::w>(tmp, desc_a0 + soff + 2 * k, desc_b0 + soff + (uint64_t)((c * CFG::w * 128) >> 4) + 2 * k,
                             k);
  sm90::wgmma_commit();
  /* callers fence tmp after their wait */
}

/* A consumer thread's release of a stage: one arrival on this CTA's empty
 * barrier; in a cluster, also one per warp (after the warp's own arrivals)
 * on the partner CTA's, whose producer multicasts into this CTA's stage.
 * That arrival has release at CTA scope: at cluster scope each one would
 * put a GPU-wide fence (MEMBAR.ALL.GPU) on every warp at every stage. */
template <int CLUSTER>
struct sm90_release {
  uint64_t *empty;
  uint32_t partner_empty; /* shared::cluster address of the partner's empty[0] */
  __device__ __forceinline__ void operator()(int stage) const {
    sm90::mbar_arrive(&empty[stage]);
    if constexpr (CLUSTER > 1) {
      __syncwarp();
      if ((threadIdx.x & 31) == 0)
        sm90::mbar_arrive_remote<sm90::mbar_scope::cta>(partner_empty + 8u * (uint32_t)stage);
    }
  }
};

/* The stage's scales for this thread's two rows, as products with each
 * weight-scale block: f[r][b] = a_scale[row r] * b_scale[b]. */
template <int BM, int NSB>
static __device__ __forceinline__ void sm90_load_scales(float (&f)[2][NSB], const float *s_scale_a,
                                                        const float *s_scale_b, int stage, int srow) {
  const float sa0 = s_scale_a[stage * BM + srow], sa1 = s_scale_a[stage * BM + srow + 8];
#pragma unroll
  for (int b = 0; b < NSB; b++) {
    const float sb = s_scale_b[stage * 4 + b];
    f[0][b] = sa0 * sb;
    f[1][b] = sa1 * sb;
  }
}

/* One consumer warpgroup's main loop over the K blocks of a tile with rows
 * for it: waits for each stage, runs its slices' wgmmas and promotions into
 * acc, and releases the stage (every thread arrives once per stage). */
template <int K, epilogue EPI, class CFG, int OFF, int NSB>
static __device__ __forceinline__ void sm90_mainloop(float (&acc)[CFG::nsub][CFG::w / 2],
                                                     float (&tmp)[CFG::w / 2], stage_ring &ring,
                                                     uint64_t *full, const sm90_release<CFG::cluster> &release,
                                                     const float *s_scale_a,
                                                     const float *s_scale_b, uint64_t desc_a0, uint64_t desc_b0,
                                                     int srow) {
  constexpr int KB = K / sm90_bk, NSUB = CFG::nsub;
  constexpr uint32_t stage_bytes = sm90_smem_layout<CFG, EPI>::stage_bytes;
  float f[2][NSB];
  for (int kb = 0; kb < KB; kb++) {
    sm90_wait_full(full, ring);
    sm90_load_scales<CFG::bm>(f, s_scale_a, s_scale_b, ring.stage, srow); /* into registers before the release */
    const uint64_t soff = (uint64_t)((ring.stage * stage_bytes) >> 4);
#pragma unroll
    for (int c = 0; c < NSUB; c++) {
      sm90_issue_slice<CFG>(c, tmp, desc_a0, desc_b0, soff);
      sm90::wgmma_wait<0>();
      sm90_fence_regs(tmp);
      /* each lane releases the stage after its own reads of it */
      if (c == NSUB - 1) release(ring.stage);
      sm90_promote<EPI, CFG, OFF, NSB>(c, acc[c], tmp, f);
    }
    ring.advance();
  }
}

/* The main loop with two temporaries (CFG::pipe): inside each K block,
 * slice c + 1's wgmmas run while slice c is promoted, and slice c + 2 is
 * issued into c's temporary as soon as it is promoted, so each warpgroup
 * keeps a batch in flight through all but its last promotion. The block
 * drains at its end: with wgmmas in flight across the loop's back edge
 * ptxas cannot prove the promotions read only completed temporaries and
 * serializes every wgmma (C7514). Every element gets the same products in
 * the same order as in sm90_mainloop. */
template <int K, epilogue EPI, class CFG, int OFF, int NSB>
static __device__ __forceinline__ void sm90_mainloop_pipelined(float (&acc)[CFG::nsub][CFG::w / 2],
                                                               float (&tmp0)[CFG::w / 2], float (&tmp1)[CFG::w / 2],
                                                               stage_ring &ring, uint64_t *full,
                                                               const sm90_release<CFG::cluster> &release,
                                                               const float *s_scale_a, const float *s_scale_b,
                                                               uint64_t desc_a0, uint64_t desc_b0, int srow) {
  constexpr int KB = K / sm90_bk, NSUB = CFG::nsub;
  constexpr uint32_t stage_bytes = sm90_smem_layout<CFG, EPI>::stage_bytes;
  float f[2][NSB];
  for (int kb = 0; kb < KB; kb++) {
    sm90_wait_full(full, ring);
    sm90_load_scales<CFG::bm>(f, s_scale_a, s_scale_b, ring.stage, srow);
    const uint64_t soff = (uint64_t)((ring.stage * stage_bytes) >> 4);
    sm90_issue_slice<CFG>(0, tmp0, desc_a0, desc_b0, soff);
    sm90_issue_slice<CFG>(1, tmp1, desc_a0, desc_b0, soff);
#pragma unroll
    for (int c = 0; c < NSUB; c++) {
      float(&t)[CFG::w / 2] = (c % 2 == 0) ? tmp0 : tmp1;
      if (c == NSUB - 1)
        sm90::wgmma_wait<0>();
      else
        sm90::wgmma_wait<1>();
      sm90_fence_regs(t);
      if (c == NSUB - 1) release(ring.stage); /* each lane after its own reads of the stage */
      sm90_promote<EPI, CFG, OFF, NSB>(c, acc[c], t, f);
      if (c + 2 < NSUB) sm90_issue_slice<CFG>(c + 2, t, desc_a0, desc_b0, soff);
    }
    ring.advance();
  }
}

/* The requantized SwiGLU results of a thread's rows r0 and r1 of the
 * intermediate ([rows, I] fp8), J groups of 8 columns: up0 and up1 hold
 * columns col0 + 8j, +1 (col0 = the slice's first column + 2 (lane % 4)),
 * sc0 and sc1 are the rows' block scales; v0 and v1 mask rows past the
 * group's end. */
template <int I, int J>
static __device__ __forceinline__ void sm90_store_swiglu_rows(uint8_t *out, int col0, int r0, int r1,
                                                              const float (&up0)[2 * J], const float (&up1)[2 * J],
                                                              float sc0, float sc1, bool v0, bool v1) {
#pragma unroll
  for (int j = 0; j < J; j++) {
    if (v0) *(uint16_t *)(out + (long long)r0 * I + col0 + 8 * j) = e4m3x2_quantize(up0[2 * j], up0[2 * j + 1], sc0);
    if (v1) *(uint16_t *)(out + (long long)r1 * I + col0 + 8 * j) = e4m3x2_quantize(up1[2 * j], up1[2 * j + 1], sc1);
  }
}

template <int N, int K, epilogue EPI, class CFG>
static __device__ __forceinline__ void sm90_half_tile(const grouped_gemm_params &p, const work_item &it, int wg,
                                                      int wrow, int lane, stage_ring &ring, uint64_t *full,
                                                      const sm90_release<1> &release, const float *s_scale_a,
                                                      const float *s_scale_b, uint8_t *smem, float *s_amax) {
  constexpr int KB = K / sm90_bk, BN = CFG::bn;
  constexpr bool SW = EPI == epilogue::swiglu_quant;
  constexpr int NS = SW ? 2 : 1;            /* slices per warpgroup */
  constexpr int WH = SW ? 64 : BN / 2;      /* slice width */
  constexpr uint32_t stage_bytes = sm90_smem_layout<CFG, EPI>::stage_bytes;
  const uint64_t desc_a = sm90::smem_desc_k_sw128(smem);
  /* B rows of this warpgroup's slices inside the stage */
  const int brow0 = SW ? 64 * wg : wg * (BN / 2), brow1 = SW ? 128 + 64 * wg : 0;
  const uint64_t desc_b[2] = {sm90::smem_desc_k_sw128(smem + CFG::a_bytes + brow0 * 128),
                              sm90::smem_desc_k_sw128(smem + CFG::a_bytes + brow1 * 128)};
  /* the weight-scale block of each slice: swiglu up 0, gate 1; store by column */
  const int bsel0 = SW ? 0 : (wg * (BN / 2)) / 128;
  float acc[NS][WH / 2], tmp[WH / 2];
#pragma unroll
  for (int s = 0; s < NS; s++)
#pragma unroll
    for (int i = 0; i < WH / 2; i++) acc[s][i] = 0.0f;
#pragma unroll
  for (int i = 0; i < WH / 2; i++) tmp[i] = 0.0f;
  for (int kb = 0; kb < KB; kb++) {
    sm90_wait_full(full, ring);
    const float sa0 = s_scale_a[ring.stage * CFG::bm + wrow], sa1 = s_scale_a[ring.stage * CFG::bm + wrow + 8];
    float f[NS][2];
#pragma unroll
    for (int s = 0; s < NS; s++) {
      const float sb = s_scale_b[ring.stage * 4 + (SW ? s : bsel0)];
      f[s][0] = sa0 * sb;
      f[s][1] = sa1 * sb;
    }
    const uint64_t soff = (uint64_t)((ring.stage * stage_bytes) >> 4);
#pragma unroll
    for (int s = 0; s < NS; s++) {
      sm90_fence_regs(tmp);
      sm90::wgmma_fence();
#pragma unroll
      for (int k = 0; k < 4; k++) sm90::wgmma_e4m3<WH>(tmp, desc_a + soff + 2 * k, desc_b[s] + soff + 2 * k, k);
      sm90::wgmma_commit();
      sm90::wgmma_wait<0>();
      sm90_fence_regs(tmp);
      if (s == NS - 1) release(ring.stage);
#pragma unroll
      for (int j = 0; j < WH / 8; j++) {
        acc[s][4 * j + 0] = fmaf(tmp[4 * j + 0], f[s][0], acc[s][4 * j + 0]);
        acc[s][4 * j + 1] = fmaf(tmp[4 * j + 1], f[s][0], acc[s][4 * j + 1]);
        acc[s][4 * j + 2] = fmaf(tmp[4 * j + 2], f[s][1], acc[s][4 * j + 2]);
        acc[s][4 * j + 3] = fmaf(tmp[4 * j + 3], f[s][1], acc[s][4 * j + 3]);
      }
    }
    ring.advance();
  }

  const int r0 = it.row0 + wrow, r1 = r0 + 8;
  const bool v0 = r0 < it.row_end, v1 = r1 < it.row_end;
  if constexpr (SW) {
    const int cq = 2 * (lane % 4);
    constexpr int I = N / 2;
    const swiglu_coeffs coeffs = swiglu_coeffs_of_group(p, it.g);
    float up0[16], gate0[16], up1[16], gate1[16];
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int e = 0; e < 2; e++) {
        up0[2 * j + e] = acc[0][4 * j + e];
        gate0[2 * j + e] = acc[1][4 * j + e];
        up1[2 * j + e] = acc[0][4 * j + 2 + e];
        gate1[2 * j + e] = acc[1][4 * j + 2 + e];
      }
    float m0 = quad_max(swiglu_segment(up0, gate0, coeffs));
    float m1 = quad_max(swiglu_segment(up1, gate1, coeffs));
    /* the other warpgroup holds the row's other 64 columns */
    if (cq == 0) {
      s_amax[wg * 64 + wrow] = m0;
      s_amax[wg * 64 + wrow + 8] = m1;
    }
    sm90::named_barrier_sync(1, 256);
    m0 = fmaxf(m0, s_amax[(wg ^ 1) * 64 + wrow]);
    m1 = fmaxf(m1, s_amax[(wg ^ 1) * 64 + wrow + 8]);
    sm90::named_barrier_sync(1, 256); /* both read before a later half tile writes again */
    const float sc0 = fp8moe_quant_scale(m0), sc1 = fp8moe_quant_scale(m1);
    sm90_store_swiglu_rows<I, 8>((uint8_t *)p.c, it.n_tile * 128 + 64 * wg + cq, r0, r1, up0, up1, sc0, sc1, v0, v1);
    if (cq == 0 && wg == 0) {
      float *cs = p.c_scale + (long long)it.n_tile * p.c_scale_ld;
      if (v0) cs[r0] = sc0;
      if (v1) cs[r1] = sc1;
    }
  } else {
    const int col0 = it.n_tile * BN + wg * (BN / 2);
    store_row_segment<EPI, WH>(p.c, (long long)r0 * N + col0, acc[0], 0, lane, v0, N - col0);
    store_row_segment<EPI, WH>(p.c, (long long)r1 * N + col0, acc[0], 2, lane, v1, N - col0);
  }
}

/* A tile of at most TN = CFG::swap (32 or 64) rows with the operands
 * swapped: D^T = B_tile * A^T, the weight rows on wgmma M and the tile's
 * rows (tokens) on N = TN, read from the same stages as a normal tile (A:
 * the stage's first one or two 32-row boxes).
 * Warpgroup wg takes weight blocks of 64 rows: swiglu, up rows [64wg, +64)
 * and gate rows [128 + 64wg, +64) of the tile (so a thread holds up and
 * gate of the same output); store, rows [BN/2 wg + 64 mb, +64). Per K
 * block one batch of 4 * MB wgmmas, one wait, and the promotion with the
 * same products as a normal tile: acc += tmp * (a_scale[token] *
 * b_scale[block]). Fragment: tmp[mb][4j + 2h + e] is weight row
 * 16 wq + l/4 + 8h of block mb (an output column), token 8j + 2(l%4) + e. */
template <int N, int K, epilogue EPI, class CFG>
static __device__ __forceinline__ void sm90_swapped_tile(const grouped_gemm_params &p, const work_item &it, int wg,
                                                         int wq, int lane, stage_ring &ring, uint64_t *full,
                                                         const sm90_release<1> &release, const float *s_scale_a,
                                                         const float *s_scale_b, uint8_t *smem, float *s_amax) {
  constexpr int KB = K / sm90_bk, BN = CFG::bn, TN = CFG::swap, J = TN / 8;
  constexpr bool SW = EPI == epilogue::swiglu_quant;
  constexpr int MB = SW ? 2 : BN / 128; /* 64-row weight blocks per warpgroup */
  constexpr uint32_t stage_bytes = sm90_smem_layout<CFG, EPI>::stage_bytes;
  const int q = lane % 4, mrow = 16 * wq + lane / 4;
  const uint64_t desc_x = sm90::smem_desc_k_sw128(smem);
  uint64_t desc_w[MB];
  int bsel[MB];
#pragma unroll
  for (int mb = 0; mb < MB; mb++) {
    const int wrow0 = SW ? 128 * mb + 64 * wg : (BN / 2) * wg + 64 * mb;
    desc_w[mb] = sm90::smem_desc_k_sw128(smem + CFG::a_bytes + wrow0 * 128);
    bsel[mb] = SW ? mb : wrow0 / 128;
  }
  float acc[MB][TN / 2], tmp[MB][TN / 2];
#pragma unroll
  for (int mb = 0; mb < MB; mb++)
#pragma unroll
    for (int i = 0; i < TN / 2; i++) acc[mb][i] = 0.0f, tmp[mb][i] = 0.0f;
  for (int kb = 0; kb < KB; kb++) {
    sm90_wait_full(full, ring);
    float sa[J][2], f[MB][J][2];
#pragma unroll
    for (int j = 0; j < J; j++)
#pragma unroll
      for (int e = 0; e < 2; e++) sa[j][e] = s_scale_a[ring.stage * CFG::bm + 8 * j + 2 * q + e];
#pragma unroll
    for (int mb = 0; mb < MB; mb++) {
      const float sb = s_scale_b[ring.stage * 4 + bsel[mb]];
#pragma unroll
      for (int j = 0; j < J; j++)
#pragma unroll
        for (int e = 0; e < 2; e++) f[mb][j][e] = sa[j][e] * sb;
    }
    const uint64_t soff = (uint64_t)((ring.stage * stage_bytes) >> 4);
#pragma unroll
    for (int mb = 0; mb < MB; mb++) sm90_fence_regs(tmp[mb]);
    sm90::wgmma_fence();
#pragma unroll
    for (int mb = 0; mb < MB; mb++)
#pragma unroll
      for (int k = 0; k < 4; k++) sm90::wgmma_e4m3<TN>(tmp[mb], desc_w[mb] + soff + 2 * k, desc_x + soff + 2 * k, k);
    sm90::wgmma_commit();
    sm90::wgmma_wait<0>();
#pragma unroll
    for (int mb = 0; mb < MB; mb++) sm90_fence_regs(tmp[mb]);
    release(ring.stage);
#pragma unroll
    for (int mb = 0; mb < MB; mb++)
#pragma unroll
      for (int j = 0; j < J; j++)
#pragma unroll
        for (int x = 0; x < 4; x++) acc[mb][4 * j + x] = fmaf(tmp[mb][4 * j + x], f[mb][j][x & 1], acc[mb][4 * j + x]);
    ring.advance();
  }

  if constexpr (SW) {
    constexpr int I = N / 2;
    const swiglu_coeffs coeffs = swiglu_coeffs_of_group(p, it.g);
    /* up (block 0) and gate (block 1) of the same output, in place over up;
     * each token's amax over the tile's 128 columns: its two values in this
     * thread, the 8 lanes at its quad position, then the 8 consumer warps
     * through shared memory */
#pragma unroll
    for (int j = 0; j < J; j++)
#pragma unroll
      for (int e = 0; e < 2; e++) {
        float up[2] = {acc[0][4 * j + e], acc[0][4 * j + e + 2]};
        const float gate[2] = {acc[1][4 * j + e], acc[1][4 * j + e + 2]};
        const float v = quad_position_max(swiglu_segment(up, gate, coeffs));
        acc[0][4 * j + e] = up[0];
        acc[0][4 * j + e + 2] = up[1];
        if (lane < 4) s_amax[(4 * wg + wq) * TN + 8 * j + 2 * q + e] = v;
      }
    sm90::named_barrier_sync(1, 256);
    float sc[J][2];
#pragma unroll
    for (int j = 0; j < J; j++)
#pragma unroll
      for (int e = 0; e < 2; e++) {
        float v = 0.0f;
#pragma unroll
        for (int w = 0; w < 8; w++) v = fmaxf(v, s_amax[w * TN + 8 * j + 2 * q + e]);
        sc[j][e] = fp8moe_quant_scale(v);
      }
    sm90::named_barrier_sync(1, 256); /* all read before a later tile writes again */
    uint8_t *out = (uint8_t *)p.c;
    const int col = it.n_tile * 128 + 64 * wg + mrow;
#pragma unroll
    for (int j = 0; j < J; j++)
#pragma unroll
      for (int x = 0; x < 4; x++) {
        const int r = it.row0 + 8 * j + 2 * q + (x & 1);
        if (r < it.row_end)
          out[(long long)r * I + col + 8 * (x >> 1)] =
              (uint8_t)(e4m3x2_quantize(acc[0][4 * j + x], 0.0f, sc[j][x & 1]) & 0xffu);
      }
    if (wg == 0 && wq == 0 && lane < 4) {
      float *cs = p.c_scale + (long long)it.n_tile * p.c_scale_ld;
#pragma unroll
      for (int j = 0; j < J; j++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
          const int r = it.row0 + 8 * j + 2 * q + e;
          if (r < it.row_end) cs[r] = sc[j][e];
        }
    }
  } else {
#pragma unroll
    for (int mb = 0; mb < MB; mb++) {
      const int col = it.n_tile * BN + (BN / 2) * wg + 64 * mb + mrow;
#pragma unroll
      for (int j = 0; j < J; j++)
#pragma unroll
        for (int x = 0; x < 4; x++) {
          const int r = it.row0 + 8 * j + 2 * q + (x & 1);
          if (r < it.row_end) {
            const long long off = (long long)r * N + col + 8 * (x >> 1);
            if constexpr (EPI == epilogue::store_fp32)
              static_cast<float *>(p.c)[off] = acc[mb][4 * j + x];
            else
              static_cast<uint16_t *>(p.c)[off] = float_to_bf16_bits(acc[mb][4 * j + x]);
          }
        }
    }
  }
}

template <int N, int K, epilogue EPI, class CFG>
__global__ void __launch_bounds__(CFG::threads, 1)
    gemm_sm90_e4m3_blockscale_kernel(const __grid_constant__ CUtensorMap map_a,
                                     const __grid_constant__ CUtensorMap map_b,
                                     const __grid_constant__ CUtensorMap map_b_extra, const grouped_gemm_params p,
                                     int half_rows) {
  static_assert(K % 128 == 0 && N % 128 == 0, "K and N are multiples of the 128 quantization block");
  static_assert(EPI != epilogue::swiglu_quant || N % 256 == 0, "swiglu pairs up/gate 128-column blocks");
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using L = sm90_smem_layout<CFG, EPI>;
  using TS = sm90_tile_shape<N, EPI, CFG>;
  constexpr int KB = K / sm90_bk;
  constexpr int BN = CFG::bn, NSUB = CFG::nsub, W = CFG::w, STAGES = CFG::stages, CL = CFG::cluster, BM = CFG::bm;
  constexpr int NT = TS::n_tiles, NSB = TS::b_scales;
  constexpr uint32_t stage_bytes = L::stage_bytes;

  /* ---- shared memory: stages | full[S] empty[S] item_ready[S] | scales | prefix | offsets | amax | items ---- */
  extern __shared__ uint8_t smem_raw[];
  /* aligned by pointer arithmetic on smem_raw (not through an integer), so
   * the compiler keeps every pointer below in the shared state space and
   * reads the scales with LDS rather than generic loads */
  uint8_t *smem = smem_raw + ((1024u - (smem_addr(smem_raw) & 1023u)) & 1023u);
  uint64_t *full = (uint64_t *)(smem + L::barriers_offset);
  uint64_t *empty = full + STAGES;
  uint64_t *item_ready = empty + STAGES; /* the TMA thread -> the scale warp: s_item of the stage is written */
  float *s_scale_a = (float *)(smem + L::scale_a_offset);
  float *s_scale_b = (float *)(smem + L::scale_b_offset);
  int *s_prefix = (int *)(smem + L::prefix_offset);
  int *s_off = (int *)(smem + L::offsets_offset);
  float *s_amax = (float *)(smem + L::amax_offset);
  int *s_item = (int *)(smem + L::item_offset);
  int *s_arow = (int *)(smem + L::arow_offset);

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int G = p.num_groups;
  /* A gathered by row (p.a_rows): the producer warpgroup's last two warps
   * copy the A rows with cp.async instead of TMA boxes */
  const bool gather = p.a_rows != nullptr;

  /* ---- setup: barriers, then the work list (schedule.cuh) ---- */
  if (tid == 0) {
    for (int s = 0; s < STAGES; s++) {
      /* TMA thread (+ bytes), the 32 scale lanes and, gathering, the 64 A-row lanes */
      sm90::mbar_init(&full[s], 1 + 32 + (gather ? 64 : 0));
      sm90::mbar_init(&empty[s], 128 * CFG::consumers + 8 * (CL - 1)); /* every consumer lane (+ each partner warp) */
      sm90::mbar_init(&item_ready[s], 1);
    }
    for (int j = 0; j < L::claims; j++) sm90::mbar_init((uint64_t *)(smem + L::claim_offset) + j, 1);
    sm90::mbar_fence_init();
  }
  const uint32_t rank = CL > 1 ? sm90::cluster_ctarank() : 0u;
  if constexpr (CL > 1) sm90::cluster_sync(); /* the partner's barriers exist before any remote use */
  /* early: the offsets are final already (params.cuh), so the work list and
   * the first item's weight boxes need not wait for the kernel before */
  constexpr bool EARLY = FP8MOE_EARLY_WEIGHTS && CL == 1;
  const bool early = EARLY && p.early_weights;
  if (!early) {
    griddep_wait(); /* group offsets and A: written by the kernels before (PDL) */
    griddep_launch_dependents();
  }
  build_work_list<CFG::threads, EARLY>(p, G, BM, s_off, s_prefix, warp, lane);
  /* items: (group, column tile, m-tile), or in a cluster (m-tile pair,
   * column tile); this CTA runs items first, first + step, ... */
  const int total = CL > 1 ? (s_prefix[G] + 1) / 2 * NT : s_prefix[G] * NT;
  const int first = CL > 1 ? (int)blockIdx.x / CL : (int)blockIdx.x, step = CL > 1 ? (int)gridDim.x / CL : (int)gridDim.x;
  /* this CTA's tile of item w (and, in a cluster, whether the partner's
   * tile has rows of the same group: then the weight tile is shared) */
  auto item_of = [&](int w, bool *shared_b) -> work_item {
    if constexpr (CL > 1) {
      const int pair = w / NT, n = w % NT;
      const work_item mine = decode_tile(2 * pair + (int)rank, n, s_prefix, s_off, G, BM);
      const work_item other = decode_tile(2 * pair + (int)(rank ^ 1u), n, s_prefix, s_off, G, BM);
      *shared_b = mine.g == other.g && mine.row0 < mine.row_end && other.row0 < other.row_end;
      return mine;
    } else {
      *shared_b = false;
      return decode_item(w, s_prefix, s_off, G, NT, BM);
    }
  };

  /* After its first item, a CTA takes the next of its static share, or,
   * with a tile counter, claims the next unclaimed item; in a cluster rank 0
   * claims for the pair and hands each claim to rank 1 through rank 1's
   * claim ring (a store into its shared memory, then a release arrival on
   * the slot's mbarrier). Rank 0's producer is never more than STAGES K
   * blocks ahead of rank 1's (each stage is released by both CTAs'
   * consumers), so a ring of STAGES + 1 slots is never overwritten before
   * it is read. */
  const bool dynamic = p.tile_counter != nullptr;
  auto next_item = [&](int w, int seq) -> int {
    if (!dynamic) return w + step;
    if constexpr (CL == 1) {
      return claim_item(p.tile_counter, (int)gridDim.x);
    } else {
      uint64_t *claim_bar = (uint64_t *)(smem + L::claim_offset);
      int *claim = (int *)(claim_bar + L::claims);
      const int j = seq % L::claims;
      if (rank == 0) {
        const int n = claim_item(p.tile_counter, step);
        sm90::st_shared_cluster_u32(sm90::cluster_map(claim + j, 1u), (uint32_t)n);
        sm90::mbar_arrive_remote<sm90::mbar_scope::cluster>(sm90::cluster_map(claim_bar + j, 1u));
        return n;
      }
      sm90::mbar_wait<sm90::mbar_scope::cluster>(claim_bar + j, (uint32_t)(seq / L::claims) & 1u);
      return claim[j];
    }
  };

  /* the weight boxes of K block kb of item it into stage `stage` */
  auto load_b = [&](const work_item &it, bool shared_b, int kb, int stage) {
    const bool extra = it.g >= G - p.extra_groups;
    const CUtensorMap *mb = extra ? &map_b_extra : &map_b;
    const int gi = extra ? it.g - (G - p.extra_groups) : it.g;
    uint8_t *st = smem + stage * stage_bytes;
#pragma unroll
    for (int c = 0; c < L::boxes; c++) {
      const int brow = gi * N + (EPI == epilogue::swiglu_quant ? c * (N / 2) + it.n_tile * 128
                                                               : it.n_tile * BN + c * L::box_rows);
      uint8_t *dst = st + CFG::a_bytes + c * L::box_rows * 128;
      if (CL > 1 && shared_b) { /* box c from rank c % 2, into both CTAs */
        if (c % CL == (int)rank)
          sm90::tma_load_2d_multicast(dst, mb, &full[stage], kb * sm90_bk, brow, (uint16_t)3);
      } else {
        sm90::tma_load_2d(dst, mb, &full[stage], kb * sm90_bk, brow);
      }
    }
  };
  /* early: the first item's first `pre` stages get their weight boxes now
   * (the ring is empty: stage kb holds K block kb) */
  const int pre = early && first < total ? (KB < STAGES ? KB : STAGES) : 0;
  if (early) {
    if (pre > 0 && warp == 4 * CFG::consumers && sm90::elect_one()) {
      sm90::tma_prefetch_map(&map_b);
      if (p.extra_groups > 0) sm90::tma_prefetch_map(&map_b_extra);
      bool shared_b;
      const work_item it = item_of(first, &shared_b);
      for (int kb = 0; kb < pre; kb++) {
        sm90::mbar_expect_tx(&full[kb], (uint32_t)(BN * 128));
        load_b(it, shared_b, kb, kb);
      }
    }
    griddep_wait(); /* A and its scales: written by the kernel before */
    griddep_launch_dependents();
  }

  if (warp >= 4 * CFG::consumers) {
    /* ---- producer warpgroup (the one after the consumers): its first warp
     * takes the items in turn and streams their A and B boxes with TMA (one
     * elected thread), its second (the scale warp) copies each stage's
     * scales with cp.async; both run up to STAGES K blocks ahead of
     * the consumers, so no load latency is on their path. The TMA thread
     * writes each stage's item into s_item before it arms the stage (for
     * the consumers) and signals item_ready (for the scale warp); after the last
     * item, one more stage carries -1: the list is done. ---- */
    sm90::setmaxnreg_dec<CFG::producer_regs>();
    if (warp == 4 * CFG::consumers) {
      if (sm90::elect_one()) {
        if (!gather) sm90::tma_prefetch_map(&map_a);
        sm90::tma_prefetch_map(&map_b);
        if (p.extra_groups > 0) sm90::tma_prefetch_map(&map_b_extra);
        stage_ring ring(STAGES);
        int seq = 0;
        for (int w = first; w < total; w = next_item(w, seq++)) {
          bool shared_b;
          const work_item it = item_of(w, &shared_b);
          /* decode-sized tiles load only the A rows they have (rows past the
           * group in the last box are other groups' rows or zeros; rows past
           * the last box keep stale data: all are masked at the store). A
           * last store tile past column N reads the next weight rows (or
           * zeros), masked the same way. */
          const int rows = min(it.row_end - it.row0, BM);
          const int a_boxes = gather ? 0 : (rows + sm90_a_box_rows - 1) / sm90_a_box_rows;
          /* a cluster partner with no rows loads nothing but keeps its ring in step */
          const uint32_t a_bytes = (uint32_t)(a_boxes * sm90_a_box_rows * 128);
          const uint32_t b_bytes = rows > 0 ? (uint32_t)(BN * 128) : 0u;
          for (int kb = 0; kb < KB; kb++) {
            const bool b_loaded = seq == 0 && kb < pre; /* before the wait, above */
            sm90::mbar_wait(&empty[ring.stage], ring.phase ^ 1u);
            s_item[ring.stage] = w; /* published by both arrives below */
            sm90::mbar_arrive(&item_ready[ring.stage]);
            uint8_t *st = smem + ring.stage * stage_bytes;
            sm90::mbar_arrive_expect_tx(&full[ring.stage], a_bytes + (b_loaded ? 0u : b_bytes));
            for (int b = 0; b < a_boxes; b++)
              sm90::tma_load_2d(st + b * sm90_a_box_rows * 128, &map_a, &full[ring.stage], kb * sm90_bk,
                                it.row0 + b * sm90_a_box_rows);
            if (!b_loaded && rows > 0) load_b(it, shared_b, kb, ring.stage); /* shared_b implies rows */
            ring.advance();
          }
        }
        /* the end of the list: a stage that carries no item */
        sm90::mbar_wait(&empty[ring.stage], ring.phase ^ 1u);
        s_item[ring.stage] = -1;
        sm90::mbar_arrive(&item_ready[ring.stage]);
        sm90::mbar_arrive(&full[ring.stage]);
        if (dynamic && rank == 0) claims_done(p.tile_counter, (int)gridDim.x / CL);
      }
    } else if (warp == 4 * CFG::consumers + 1) {
      stage_ring ring(STAGES);
      int cur = -1, kb = 0;
      work_item it = {0, 0, 0, 0};
      const float *bsrc = nullptr;
      int arow[BM / 32]; /* the A row (of a, its scales) of each of this lane's tile rows */
#pragma unroll
      for (int i = 0; i < BM / 32; i++) arow[i] = 0;
      for (;;) {
        /* every lane waits on both: its copies below are ordered after the
         * consumers' release of the stage, and it learns the stage's item */
        sm90::mbar_wait(&empty[ring.stage], ring.phase ^ 1u);
        sm90::mbar_wait(&item_ready[ring.stage], ring.phase);
        const int w = s_item[ring.stage];
        if (w < 0) { /* the closing stage: this warp's arrivals, no copies */
          sm90::mbar_arrive(&full[ring.stage]);
          break;
        }
        if (w == cur) {
          kb++;
        } else { /* the first stage of an item */
          cur = w;
          kb = 0;
          bool shared_b;
          it = item_of(w, &shared_b);
          /* the tile's weight-scale blocks (a store tile past column N
           * takes the last block: any finite value, its columns are masked) */
          const int nblk = EPI == epilogue::swiglu_quant ? lane * (N / 256) + it.n_tile
                                                         : min(it.n_tile * BN / 128 + lane, N / 128 - 1);
          bsrc = weights_of_group<N, K>(p, it.g).scale + (long long)nblk * KB;
#pragma unroll
          for (int i = 0; i < BM / 32; i++) {
            const int r = it.row0 + lane + 32 * i;
            arow[i] = gather && r < it.row_end ? p.a_rows[r] : r;
          }
        }
        const float *asrc = p.a_scale + (long long)kb * p.a_scale_ld;
        const uint32_t sa = smem_addr(s_scale_a + ring.stage * BM);
#pragma unroll
        for (int i = 0; i < BM / 32; i++) {
          const bool ok = it.row0 + lane + 32 * i < it.row_end;
          ptx::cp_async_4(sa + 4 * (lane + 32 * i), ok ? asrc + arow[i] : p.a_scale, ok);
        }
        if (lane < NSB) ptx::cp_async_4(smem_addr(s_scale_b + ring.stage * 4 + lane), bsrc + kb, true);
        sm90::cp_async_mbar_arrive(&full[ring.stage]);
        ring.advance();
      }
    } else if (gather && warp <= 4 * CFG::consumers + 3) {
      /* The gather warps: warp gw copies rows [HR gw, HR gw + HR) of each
       * stage's A tile, 8 lanes per row (a whole 128-byte line per 8
       * lanes), into the 128-byte swizzled layout TMA would write (chunk c
       * of row r at r * 128 + ((c ^ (r % 8)) << 4)); rows past the tile's
       * end are not copied (their results are masked). wgmma reads the
       * stage through the async proxy, so a stage's copies are complete
       * and fenced into it before this lane's arrival
       * (FP8MOE_SM90_GATHER_LAG): each lane waits for the previous stage's
       * group once this stage's is issued, fences, and arrives on the
       * previous stage; an item's last stage it hands over at once. */
      constexpr int HR = BM / 2; /* rows per gather warp */
      const int gw = warp - (4 * CFG::consumers + 2), q = lane / 8, c = lane % 8;
      int *my_rows = s_arow + HR * gw; /* this warp's rows' sources, per item */
      stage_ring ring(STAGES);
      int cur = -1, kb = 0, rows = 0, pending = -1;
      for (;;) {
        sm90::mbar_wait(&empty[ring.stage], ring.phase ^ 1u);
        sm90::mbar_wait(&item_ready[ring.stage], ring.phase);
        const int w = s_item[ring.stage];
        if (w < 0) { /* the closing stage (every item's last stage is handed over already) */
          ptx::cp_async_wait<0>();
          sm90::mbar_arrive(&full[ring.stage]);
          break;
        }
        if (w == cur) {
          kb++;
        } else {
          cur = w;
          kb = 0;
          bool shared_b;
          const work_item it = item_of(w, &shared_b);
          rows = min(it.row_end - it.row0, BM) - HR * gw; /* this warp's rows */
          __syncwarp(); /* every lane's reads of the previous item's rows are done */
          for (int r = lane; r < HR; r += 32) my_rows[r] = r < rows ? p.a_rows[it.row0 + HR * gw + r] : 0;
          __syncwarp();
        }
        const uint32_t st = smem_addr(smem + ring.stage * stage_bytes) + HR * gw * 128;
#pragma unroll 4
        for (int i = 0; i < HR / 4; i++) {
          const int r = 4 * i + q; /* inside this warp's HR rows */
          if (r < rows)
            ptx::cp_async_16(st + r * 128 + ((c ^ (r & 7)) << 4),
                             p.a + (long long)my_rows[r] * K + kb * sm90_bk + c * 16, true);
        }
        if (!FP8MOE_SM90_GATHER_LAG) {
          sm90::cp_async_mbar_arrive(&full[ring.stage]);
          ring.advance();
          continue;
        }
        ptx::cp_async_commit();
        if (kb == KB - 1) {
          /* an item's last stage goes without the lag: its hand-over must
           * not wait for the next item, which the TMA thread may still be
           * claiming */
          ptx::cp_async_wait<0>();
          sm90::fence_proxy_async_shared();
          if (pending >= 0) sm90::mbar_arrive(&full[pending]);
          sm90::mbar_arrive(&full[ring.stage]);
          pending = -1;
        } else {
          if (pending >= 0) {
            ptx::cp_async_wait<1>();
            sm90::fence_proxy_async_shared();
            sm90::mbar_arrive(&full[pending]);
          }
          pending = ring.stage;
        }
        ring.advance();
      }
    }
  } else {
    /* ---- consumer warpgroups: wgmma, promotion, epilogue ---- */
    sm90::setmaxnreg_inc<CFG::consumer_regs>();
    const int wg = warp / 4;               /* rows [64wg, 64wg + 64) of the tile */
    const int wrow = (warp % 4) * 16 + lane / 4;  /* this thread's first row inside the warpgroup's 64 */
    const uint64_t desc_a0 = sm90::smem_desc_k_sw128(smem + wg * 64 * 128);
    const uint64_t desc_b0 = sm90::smem_desc_k_sw128(smem + CFG::a_bytes);
    float tmp[W / 2], tmp_b[CFG::pipe ? W / 2 : 1]; /* tmp_b: the pipelined loop's second temporary */
#pragma unroll
    for (int i = 0; i < W / 2; i++) tmp[i] = 0.0f;
#pragma unroll
    for (int i = 0; i < (CFG::pipe ? W / 2 : 1); i++) tmp_b[i] = 0.0f;
    stage_ring ring(STAGES);
    const sm90_release<CL> release = {empty, CL > 1 ? sm90::cluster_map(empty, rank ^ 1u) : 0u};

    for (;;) {
      /* the item this stage starts, or -1: the list is done */
      sm90::mbar_wait(&full[ring.stage], ring.phase);
      const int w = s_item[ring.stage];
      if (w < 0) break;
      bool shared_b;
      const work_item it = item_of(w, &shared_b);
      if constexpr (CFG::swap > 0) {
        if (it.row_end - it.row0 <= CFG::swap) {
          sm90_swapped_tile<N, K, EPI, CFG>(p, it, wg, warp % 4, lane, ring, full, release, s_scale_a, s_scale_b,
                                            smem, s_amax);
          continue;
        }
      }
      if constexpr (CFG::half) {
        if (it.row_end - it.row0 <= half_rows) {
          sm90_half_tile<N, K, EPI, CFG>(p, it, wg, wrow, lane, ring, full, release, s_scale_a, s_scale_b, smem,
                                         s_amax);
          continue;
        }
      }
      const bool active = it.row0 + wg * 64 < it.row_end;
      const int r0 = it.row0 + wg * 64 + wrow, r1 = r0 + 8;
      const bool v0 = r0 < it.row_end, v1 = r1 < it.row_end;
      float acc[NSUB][W / 2];
#pragma unroll
      for (int c = 0; c < NSUB; c++)
#pragma unroll
        for (int i = 0; i < W / 2; i++) acc[c][i] = 0.0f;

      if (!active) { /* no rows for this warpgroup: keep the ring turning */
        for (int kb = 0; kb < KB; kb++) {
          sm90::mbar_wait(&full[ring.stage], ring.phase);
          release(ring.stage);
          ring.advance();
        }
        continue;
      }
      /* a 192-column store tile starts 0 or 64 columns into a scale block;
       * the two cases are separate instances so the promotion's block
       * choice is a constant */
      if constexpr (CFG::pipe) {
        static_assert(EPI == epilogue::swiglu_quant || BN % 128 == 0, "pipelined slices: tiles of 128-column blocks");
        sm90_mainloop_pipelined<K, EPI, CFG, 0, NSB>(acc, tmp, tmp_b, ring, full, release, s_scale_a, s_scale_b,
                                                     desc_a0, desc_b0, wg * 64 + wrow);
      } else if constexpr (EPI == epilogue::swiglu_quant || BN % 128 == 0) {
        sm90_mainloop<K, EPI, CFG, 0, NSB>(acc, tmp, ring, full, release, s_scale_a, s_scale_b, desc_a0, desc_b0,
                                           wg * 64 + wrow);
      } else {
        static_assert(BN % 128 == 64, "a tile starts 0 or 64 columns into a scale block");
        if ((it.n_tile * BN) % 128 == 0)
          sm90_mainloop<K, EPI, CFG, 0, NSB>(acc, tmp, ring, full, release, s_scale_a, s_scale_b, desc_a0, desc_b0,
                                             wg * 64 + wrow);
        else
          sm90_mainloop<K, EPI, CFG, 64, NSB>(acc, tmp, ring, full, release, s_scale_a, s_scale_b, desc_a0, desc_b0,
                                              wg * 64 + wrow);
      }

      /* ---- epilogue (epilogue.cuh). Accumulator layout (ptx/sm90.cuh):
       * acc[c][4j + {0,1}] is row r0, columns 8j + cq + {0,1} of slice c;
       * acc[c][4j + {2,3}] the same columns of row r1 ---- */
      if constexpr (EPI == epilogue::swiglu_quant) {
        const int cq = 2 * (lane % 4); /* this thread's column pair inside each 8 */
        constexpr int I = N / 2, JW = W / 8, HALF = NSUB / 2;
        const swiglu_coeffs coeffs = swiglu_coeffs_of_group(p, it.g);
        float up0[32], gate0[32], up1[32], gate1[32];
#pragma unroll
        for (int j = 0; j < 16; j++) /* column group j of the 128: slice j / JW, group j % JW in it */
#pragma unroll
          for (int e = 0; e < 2; e++) {
            up0[2 * j + e] = acc[j / JW][4 * (j % JW) + e];
            gate0[2 * j + e] = acc[HALF + j / JW][4 * (j % JW) + e];
            up1[2 * j + e] = acc[j / JW][4 * (j % JW) + 2 + e];
            gate1[2 * j + e] = acc[HALF + j / JW][4 * (j % JW) + 2 + e];
          }
        const float sc0 = fp8moe_quant_scale(quad_max(swiglu_segment(up0, gate0, coeffs)));
        const float sc1 = fp8moe_quant_scale(quad_max(swiglu_segment(up1, gate1, coeffs)));
        sm90_store_swiglu_rows<I, 16>((uint8_t *)p.c, it.n_tile * 128 + cq, r0, r1, up0, up1, sc0, sc1, v0, v1);
        if (cq == 0) {
          float *cs = p.c_scale + (long long)it.n_tile * p.c_scale_ld;
          if (v0) cs[r0] = sc0;
          if (v1) cs[r1] = sc1;
        }
      } else {
#pragma unroll
        for (int c = 0; c < NSUB; c++) {
          /* a last tile past column N (N not a multiple of BN) stores the columns it has */
          const int col0 = it.n_tile * BN + c * W;
          store_row_segment<EPI, W>(p.c, (long long)r0 * N + col0, acc[c], 0, lane, v0, N - col0);
          store_row_segment<EPI, W>(p.c, (long long)r1 * N + col0, acc[c], 2, lane, v1, N - col0);
        }
      }
    }
  }
  if constexpr (CL > 1) { /* no CTA leaves while its partner may still signal it or write into it */
    __syncwarp();
    sm90::cluster_sync();
  }
#else
  /* No sm_90a code in this image (built for another target, or for plain
   * sm_90): a static shared-memory marker, which the real kernel never has,
   * lets the host see that (sm90_image_present) and take the portable path. */
  __shared__ volatile uint32_t fp8moe_sm90a_absent[32];
  (void)map_a; (void)map_b; (void)map_b_extra; (void)half_rows;
  if (p.m_total < 0) fp8moe_sm90a_absent[threadIdx.x & 31] = 1u;
#endif
}

/* ---- host side ---- */

/* cuTensorMapEncodeTiled from the driver the runtime already loaded. */
static inline PFN_cuTensorMapEncodeTiled_v12000 sm90_tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = []() -> PFN_cuTensorMapEncodeTiled_v12000 {
    void *f = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();
      return nullptr;
    }
    return (PFN_cuTensorMapEncodeTiled_v12000)f;
  }();
  return fn;
}

/* A 2D K-major fp8 operand [rows, K] read as 128-byte x box_rows boxes with
 * the 128-byte swizzle; rows past `rows` read as zeros. */
static inline bool sm90_make_operand_map(CUtensorMap *map, const void *base, unsigned long long rows, int K,
                                         unsigned box_rows) {
  PFN_cuTensorMapEncodeTiled_v12000 encode = sm90_tensor_map_encoder();
  if (!encode) return false;
  cuuint64_t dims[2] = {(cuuint64_t)K, (cuuint64_t)rows};
  cuuint64_t strides[1] = {(cuuint64_t)K};
  cuuint32_t box[2] = {128, box_rows};
  cuuint32_t elem[2] = {1, 1};
  return encode(map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, const_cast<void *>(base), dims, strides, box, elem,
                CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

/* How many clusters of CL CTAs of `kernel` fit on the current device at
 * once (each CTA takes an SM; a cluster's CTAs share a GPC, so this can be
 * below sm_count / CL): the persistent grid. Asked once per device and
 * kernel; 0 when the query fails. */
template <int CL, class Kernel>
static inline int sm90_max_active_clusters(Kernel kernel, int threads, int smem_bytes) {
  enum { max_devices = 64 };
  static std::atomic<int> cache[max_devices];
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0) {
    (void)cudaGetLastError();
    return 0;
  }
  if (dev < max_devices) {
    const int c = cache[dev].load(std::memory_order_acquire);
    if (c > 0) return c;
  }
  cudaLaunchAttribute attr;
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = CL;
  attr.val.clusterDim.y = 1;
  attr.val.clusterDim.z = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(CL);
  cfg.blockDim = dim3(threads);
  cfg.dynamicSmemBytes = (size_t)smem_bytes;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  int n = 0;
  if (cudaOccupancyMaxActiveClusters(&n, kernel, &cfg) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  if (dev < max_devices && n > 0) cache[dev].store(n, std::memory_order_release);
  return n;
}

/* Calls whose groups average at most 64 rows (decode sizes): they run the
 * half tiles (HALF 1), larger calls the clusters (FP8MOE_SM90_CLUSTER) or
 * the three-warpgroup store tiles (FP8MOE_SM90_STORE_CONSUMERS). */
static inline bool sm90_decode_sized(const grouped_gemm_params &p) {
  return (long long)p.m_total <= 64LL * p.num_groups;
}

/* Launch with an explicit tile configuration (sm90_config; benchmarks and
 * tests compare them); gemm_sm90_launch picks the default one. */
template <int N, int K, epilogue EPI, class CFG>
fp8moe_status gemm_sm90_launch_config(const grouped_gemm_params &p, cudaStream_t stream, bool pdl = false) {
  static_assert(gemm_sm90_supported<N, K, EPI>(), "shape outside the sm90 GEMM envelope");
  using L = sm90_smem_layout<CFG, EPI>;
  using TS = sm90_tile_shape<N, EPI, CFG>;
  if (p.m_total < 0 || p.num_groups < 0 || p.num_groups > sm90_max_groups || p.extra_groups < 0 ||
      p.extra_groups > p.num_groups)
    return FP8MOE_ERROR_INVALID_SHAPE;
  if (p.m_total == 0 || p.num_groups == 0) return FP8MOE_OK;
  const int routed = p.num_groups - p.extra_groups;
  if (!p.a || !p.a_scale || !p.group_offset || !p.c || (routed > 0 && (!p.b || !p.b_scale)) ||
      (p.extra_groups > 0 && (!p.b_extra || !p.b_extra_scale)))
    return FP8MOE_ERROR_NULL_ARGUMENT;
  if (EPI == epilogue::swiglu_quant && !p.c_scale) return FP8MOE_ERROR_NULL_ARGUMENT;
  if (p.a_scale_ld < (p.a_rows ? 1 : p.m_total) || (EPI == epilogue::swiglu_quant && p.c_scale_ld < p.m_total))
    return FP8MOE_ERROR_INVALID_SHAPE;
  if (((uintptr_t)p.a | (uintptr_t)p.b | (uintptr_t)p.b_extra | (uintptr_t)p.c) & 15u)
    return FP8MOE_ERROR_MISALIGNED_POINTER;

  device_info dev;
  FP8MOE__GET_DEVICE_INFO(dev);
  if (dev.cc != 90 || dev.max_smem_optin < L::dynamic_bytes) return FP8MOE_ERROR_UNSUPPORTED_DEVICE;

  CUtensorMap map_a, map_b, map_b_extra;
  /* gathered A rows are copied by the gather warps, without a tensor map */
  if (!p.a_rows && !sm90_make_operand_map(&map_a, p.a, (unsigned long long)p.m_total, K, sm90_a_box_rows))
    return FP8MOE_ERROR_CUDA;
  if (routed > 0 && !sm90_make_operand_map(&map_b, p.b, (unsigned long long)routed * N, K, L::box_rows))
    return FP8MOE_ERROR_CUDA;
  if (p.extra_groups > 0 &&
      !sm90_make_operand_map(&map_b_extra, p.b_extra, (unsigned long long)p.extra_groups * N, K, L::box_rows))
    return FP8MOE_ERROR_CUDA;
  if (routed == 0) map_b = map_b_extra;
  if (p.extra_groups == 0) map_b_extra = map_b;
  if (p.a_rows) map_a = map_b;

  constexpr int CL = CFG::cluster;
  const int half_rows = CFG::half == 2 || (CFG::half == 1 && sm90_decode_sized(p)) ? 64 : 0;
  auto kernel = gemm_sm90_e4m3_blockscale_kernel<N, K, EPI, CFG>;
  FP8MOE__CHECK_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, L::dynamic_bytes));
  /* m-tiles are at most ceil(m_total / BM) + num_groups; clusters pair them */
  const long long items_bound =
      (long long)TS::n_tiles * ((ceil_div(p.m_total, CFG::bm) + p.num_groups + CL - 1) / CL);
  const int slots = CL > 1 ? sm90_max_active_clusters<CL>(kernel, CFG::threads, L::dynamic_bytes) : dev.sm_count;
  if (slots < 1) return FP8MOE_ERROR_UNSUPPORTED_DEVICE;
  const int grid = CL * (int)(items_bound < slots ? items_bound : slots);
  FP8MOE__CHECK_CUDA(launch_kernel_ex(kernel, dim3(grid), dim3(CFG::threads), L::dynamic_bytes, stream, pdl,
                                      (unsigned)CL, false, map_a, map_b, map_b_extra, p, half_rows));
  return FP8MOE_OK;
}

/* Whether the loaded image of this kernel holds the real sm_90a body (the
 * binary was built with -gencode arch=compute_90a,code=sm_90a): queried once
 * per instantiation; no launch, no synchronization. */
template <int N, int K, epilogue EPI>
bool sm90_image_present() {
  if constexpr (!gemm_sm90_supported<N, K, EPI>()) {
    return false;
  } else {
    static const bool present = [] {
      cudaFuncAttributes fa;
      auto kernel = gemm_sm90_e4m3_blockscale_kernel<N, K, EPI, typename sm90_tiling<N, EPI>::config>;
      if (cudaFuncGetAttributes(&fa, kernel) != cudaSuccess) {
        (void)cudaGetLastError();
        return false;
      }
      return fa.binaryVersion == 90 && fa.sharedSizeBytes == 0;
    }();
    return present;
  }
}

/* Shapes outside the envelope return FP8MOE_ERROR_INVALID_SHAPE without
 * instantiating the kernel, so a dispatcher may name any shape. The store
 * epilogues narrow the tile for decode-sized calls
 * (FP8MOE_SM90_NARROW_TILE_PCT); the bits are the same at every width. */
template <int N, int K, epilogue EPI>
fp8moe_status gemm_sm90_launch(const grouped_gemm_params &p, cudaStream_t stream, bool pdl = false) {
  if constexpr (!gemm_sm90_supported<N, K, EPI>()) {
    (void)p; (void)stream; (void)pdl;
    return FP8MOE_ERROR_INVALID_SHAPE;
  } else {
    using D = typename sm90_tiling<N, EPI>::config;
    if constexpr (EPI != epilogue::swiglu_quant && FP8MOE_SM90_NARROW_TILE_PCT > 0) {
      /* decode-sized calls: narrower tiles until the SMs have enough items
       * (tunables.h); each group with rows counts as one m-tile */
      using C128 = sm90_config<128, 1, FP8MOE_SM90_STAGES_BN128, 1, D::half, D::swap>;
      using C64 = sm90_config<64, 1, FP8MOE_SM90_STAGES_BN64>;
      device_info dev;
      FP8MOE__GET_DEVICE_INFO(dev);
      const long long m_tiles = (p.m_total < p.num_groups ? p.m_total : p.num_groups) + p.m_total / D::bm;
      const long long want = ((long long)FP8MOE_SM90_NARROW_TILE_PCT * dev.sm_count + 99) / 100;
      if (m_tiles * sm90_tile_shape<N, EPI, D>::n_tiles < want) {
        if (D::bn > 128 && m_tiles * sm90_tile_shape<N, EPI, C128>::n_tiles >= want)
          return gemm_sm90_launch_config<N, K, EPI, C128>(p, stream, pdl);
        return gemm_sm90_launch_config<N, K, EPI, C64>(p, stream, pdl);
      }
    }
    if constexpr (FP8MOE_SM90_STORE_CONSUMERS == 3 && EPI != epilogue::swiglu_quant) {
      if (!sm90_decode_sized(p))
        return gemm_sm90_launch_config<N, K, EPI, sm90_config_3wg>(p, stream, pdl);
    }
    if constexpr (FP8MOE_SM90_CLUSTER == 2 && D::bn % 128 == 0) {
      if (!sm90_decode_sized(p))
        return gemm_sm90_launch_config<N, K, EPI, sm90_config<D::bn, D::nsub, D::stages, 2>>(p, stream, pdl);
    }
    return gemm_sm90_launch_config<N, K, EPI, D>(p, stream, pdl);
  }
}

} // namespace detail
} // namespace fp8moe

#endif /* FP8MOE_DETAIL_GEMM_SM90_E4M3_BLOCKSCALE_CUH */
