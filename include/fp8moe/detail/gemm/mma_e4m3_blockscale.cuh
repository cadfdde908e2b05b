/* fp8moe/detail/gemm/mma_e4m3_blockscale.cuh - the portable grouped FP8
 * block-scale GEMM on mma.sync (sm_89, sm_90, sm_100).
 *
 * Computes the contract of params.cuh with the e4m3 tensor-core
 * instruction every FP8 GPU has, mma.sync.m16n8k32.e4m3.e4m3.f32. It is the
 * fallback on Ada and Blackwell and for shapes the Hopper wgmma path does not
 * take, so it aims at "correct everywhere, reasonably fast", not at peak.
 *
 * Design:
 * - Tiles. A CTA of 8 warps owns a BM x 128 column output tile and walks K
 *   in stages of BK = 128 bytes, which is exactly one scale block, so each
 *   stage carries its own BM A scales and its B scale(s). For swiglu_quant
 *   the CTA owns 128 *activation* columns j0..j0+127, i.e. the 128 "up" rows
 *   [j0, j0+128) and the 128 "gate" rows [I+j0, I+j0+128) of B (two 128-row
 *   halves), so SwiGLU and the per-(row, 128 column) amax of the
 *   requantization never leave the CTA. BM = 64 (warps 2 (M) x 4 (N), each
 *   32 x 32 of each half) for groups of many rows; BM = 16 (warps 1 x 8, each
 *   16 x 16) when the mean group is small (decode), where 64-row tiles would
 *   spend the tensor cores on zero rows instead of streaming B.
 * - Operands. cp.async (16 B, src-size 0 zero-fill past the group's last row:
 *   nothing outside a group is ever read) fills a 2-4 stage ring in shared
 *   memory; rows of 128 bytes are XOR-swizzled by 16-byte chunk (chunk ^
 *   row%8) so both the cp.async writes and the ldmatrix reads are free of bank
 *   conflicts. ldmatrix.x4 yields the m16n8k32 A fragment and two B
 *   fragments directly (8-bit data, b16 matrices: a lane's 32-bit word is four
 *   consecutive k of one row, which is the mma fragment layout).
 * - Block-scale promotion. The four k32 steps of a stage accumulate into a
 *   zeroed temporary; then acc += tmp * (a_scale[row] * b_scale[half]). The
 *   tensor core thus never adds across scale blocks, and the fp32 accumulator
 *   sees one add per 128 of K (also bounds the error of the tensor core's
 *   reduced-precision internal accumulation to 128 products).
 * - Groups without the host: a persistent grid of min(SMs x occupancy, an
 *   upper bound of the tile count) CTAs walks the work list of schedule.cuh
 *   (group, column tile, m-tile; consecutive tiles share the B tile in L2):
 *   given a tile counter (and FP8MOE_MMA_CLAIMED, on by default), CTA b
 *   takes tile b and then the next unclaimed one each time its loads reach
 *   the end of a tile (thread 0 claims, a block barrier publishes it, the
 *   ids wait in a small ring for the math); without, tiles b, b + grid, ...
 * - One pipeline across tiles. The (tile, k-block) iterations of a CTA form
 *   one flat sequence; the loads run S-1 iterations ahead of the math even
 *   across tile boundaries, so the next tile's first stages load while the
 *   current tile's epilogue runs.
 * - Epilogues straight from the accumulators (epilogue.cuh): bf16x2 or
 *   float2 stores; swiglu_quant applies the gated activation in fp32,
 *   reduces the row amax over the quad, then over the 4 N-warps through
 *   shared memory, and stores e4m3 pairs and one scale per row. Rows past a
 *   group's end are masked; rows outside every group are never written.
 *
 * What the hardware does with it (SASS, nvcc 13.0): sm_89 runs
 * QMMA.16832.F32.E4M3.E4M3, the native FP8 tensor-core op. sm_90a and sm_100a
 * have no fp8 mma.sync in hardware: ptxas widens each fragment to f16
 * (F2FP.F16.E4M3.UNPACK_B, exact) and issues two HMMA.16816.F32 per mma, so
 * there this path runs at the f16 mma.sync rate, below Hopper's wgmma and
 * Blackwell's tcgen05 FP8 paths. The results are unaffected (e4m3 -> f16 is
 * exact, accumulation is fp32).
 *
 * Shared memory per stage: BM x 128 B of A (8 or 2 KB) + 8 KB (16 x 64
 * store), 16 KB (store) or 32 KB (swiglu) of B + scales. The host picks the
 * deepest ring (up to FP8MOE_MMA_MAX_STAGES) that fits the device's
 * opt-in limit: 4 stages on sm_90/sm_100, fewer on sm_89's 99 KB; and one
 * stage less where that lets two CTAs share an SM that one would fill, when
 * there are tiles for both (gemm_mma_launch_bm). Tunables: tunables.h.
 *
 * Launch: with pdl (common.cuh) the kernel may start while the previous one
 * on the stream finishes; it waits (griddep_wait) before it reads A, and
 * before it reads the group offsets unless they are final already
 * (params.cuh, early_weights): then the 16-row tiles load their first
 * tile's weights ahead of the wait.
 */
#ifndef FP8MOE_DETAIL_GEMM_MMA_E4M3_BLOCKSCALE_CUH
#define FP8MOE_DETAIL_GEMM_MMA_E4M3_BLOCKSCALE_CUH

#include <cuda_runtime.h>
#include <limits.h>
#include <stdint.h>

#include "../common.cuh"
#include "../ptx/mma.cuh"
#include "epilogue.cuh"
#include "params.cuh"
#include "pipeline.cuh"
#include "schedule.cuh"

namespace fp8moe {
namespace detail {

/* The geometry of one kernel variant: BM = 64 (2 x 4 warps of 32 x 32) for
 * groups of many rows, BM = 16 (1 x 8 warps of 16 x 16) for decode-sized
 * groups, where a 64-row tile would be mostly zero rows and the kernel should
 * be bound by streaming B; BM = 16 with BN = 64 (1 x 4 warps, 128 threads)
 * for the store epilogues of decode-sized groups: twice the tiles of half the
 * width, so few experts' weights still spread evenly over every SM (a
 * swiglu_quant tile needs all 128 columns of a scale block for the row amax,
 * so it stays 128 wide). halves = blocks of bn rows of B per CTA (up and
 * gate for swiglu_quant). */
template <epilogue EPI, int BM, int BN = 128>
struct mma_tile {
  static_assert(BM == 64 || BM == 16, "tile heights 64 and 16");
  static_assert(BN == 128 || (BN == 64 && BM == 16 && EPI != epilogue::swiglu_quant),
                "64-column tiles: 16-row store epilogues only");
  static constexpr int threads = BN == 128 ? 256 : 128;
  static constexpr int warps_m = BM == 64 ? 2 : 1, warps_n = threads / 32 / warps_m;
  static constexpr int bm = BM, bk = 128, bn = BN; /* bn: output (or activation) columns per CTA */
  static constexpr int halves = EPI == epilogue::swiglu_quant ? 2 : 1;
  static constexpr int warp_m = bm / warps_m, warp_n = bn / warps_n; /* per half */
  static constexpr int mi = warp_m / 16, ni = warp_n / 8;
  static constexpr int a_bytes = bm * bk;
  static constexpr int b_bytes = halves * bn * bk;
  static constexpr int sa_off = a_bytes + b_bytes;  /* bm fp32 A scales */
  static constexpr int sb_off = sa_off + bm * 4;    /* halves fp32 B scales */
  static constexpr int stage_bytes = (sb_off + 16 + 127) / 128 * 128;
  /* 64 rows: ~125 registers on sm_89, ~240 on sm_90/sm_100 (fragments
   * widened to f16, see above), and a cap of 128 for two CTAs spills. 16
   * rows: few accumulators, and more CTAs keep more of B in flight. */
  static constexpr int min_blocks = BM == 64 ? 1 : BN == 128 ? 2 : 4;
  static_assert(warps_n * bm <= 256, "s_red holds 256 floats");
};

/* Shared memory after the ring: group offsets and tile prefix (G+1 each),
 * the swiglu amax exchange, and the claimed tiles' ring (longer than the
 * loads run ahead of the math: at most 3 tiles). */
enum { mma_claim_ring = 8 };
static constexpr int mma_aux_bytes = 2 * (gemm_max_groups + 1) * 4 + 256 * 4 + mma_claim_ring * 4;

template <epilogue EPI, int BM, int BN>
static inline int mma_smem_bytes(int stages) {
  return stages * mma_tile<EPI, BM, BN>::stage_bytes + mma_aux_bytes;
}

template <int N, int K, epilogue EPI, int BM, int BN>
__global__ void __launch_bounds__(mma_tile<EPI, BM, BN>::threads, mma_tile<EPI, BM, BN>::min_blocks)
gemm_mma_e4m3_blockscale_kernel(const grouped_gemm_params p, int stages) {
  static_assert(N > 0 && K > 0 && N % 128 == 0 && K % 128 == 0, "N and K must be positive multiples of 128");
  static_assert(EPI != epilogue::swiglu_quant || N % 256 == 0, "swiglu_quant needs N = 2*I, I a multiple of 128");
#if FP8MOE__HAS_MMA_E4M3
  using namespace ptx;
  using T = mma_tile<EPI, BM, BN>;
  static_assert(N % T::bn == 0, "N is a multiple of the tile width");
  constexpr int KB = K / 128;
  constexpr int HALF_N = EPI == epilogue::swiglu_quant ? N / 2 : 0; /* B row offset of the gate half */
  constexpr int N_TILES = (EPI == epilogue::swiglu_quant ? N / 2 : N) / T::bn;

  extern __shared__ __align__(128) uint8_t smem[];
  int *s_off = reinterpret_cast<int *>(smem + stages * T::stage_bytes);
  int *s_pre = s_off + (gemm_max_groups + 1);
  float *s_red = reinterpret_cast<float *>(s_pre + (gemm_max_groups + 1)); /* [warps_n][bm] */
  int *s_claim = reinterpret_cast<int *>(s_red + 256); /* [mma_claim_ring]: this CTA's tile j at j % ring */

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int G = p.num_groups;

  /* early: the offsets are final already (params.cuh), so the work list and
   * the first tile's weights need not wait for the kernel before; only the
   * 16-row (decode) tiles do it, which are the ones Hopper runs */
  constexpr bool EARLY = FP8MOE_EARLY_WEIGHTS && BM == 16;
  const bool early = EARLY && p.early_weights;
  if (!early) {
    griddep_wait(); /* group offsets and A: written by the kernels before (PDL) */
    griddep_launch_dependents();
  }

  /* ---- Phase 1: the work list (schedule.cuh) ---- */
  build_work_list<T::threads, EARLY>(p, G, T::bm, s_off, s_pre, warp, lane);
  const int total_tiles = s_pre[G] * N_TILES;
  const int my_tiles = (int)blockIdx.x < total_tiles ? (total_tiles - 1 - (int)blockIdx.x) / (int)gridDim.x + 1 : 0;
  const int iters = my_tiles * KB; /* the static order's (tile, kb) iterations */
  /* claimed (FP8MOE_MMA_CLAIMED, given a counter): after tile blockIdx.x,
   * each next tile is claimed (schedule.cuh) as the loads reach it, so
   * CTAs whose tiles cost less (L2 hits: the other m-tiles of a hot
   * expert) take more of them; otherwise the next is tile + gridDim.x.
   * Either way the loops run until a tile id is past the list. */
  const bool claimed = FP8MOE_MMA_CLAIMED && p.tile_counter != nullptr;
  if (iters == 0) {
    if (claimed && tid == 0) claims_done(p.tile_counter, (int)gridDim.x);
    return;
  }

  const uint32_t smem0 = smem_addr(smem);

  /* ---- Phase 2: producer. Stage `it` of the flat (tile, kb) sequence ---- */
  work_item pc = decode_item(blockIdx.x, s_pre, s_off, G, N_TILES, T::bm);
  group_weights pw = weights_of_group<N, K>(p, pc.g);
  int p_kb = 0, p_tile = blockIdx.x, p_it = 0;
  stage_ring p_ring(stages);
  /* B of K block kb of column tile n0 of group weights w: halves x bn rows
   * x 8 chunks of the group's [N, K] */
  auto load_b = [&](uint32_t st, const group_weights &w, int n0, int kb) {
#pragma unroll
    for (int i = 0; i < T::halves * T::bn * 8 / T::threads; ++i) {
      int id = tid + i * T::threads, r = id >> 3, c = id & 7;
      long long brow = n0 + (r / T::bn) * HALF_N + (r % T::bn);
      cp_async_16(st + T::a_bytes + r * 128 + ((c ^ (r & 7)) << 4), w.b + brow * K + kb * 128 + c * 16, true);
    }
  };
  /* early: the first `pre` stages' B (all of the first tile) as one
   * cp.async group ahead of the stages' own, before the wait */
  const int pre = early ? min(stages - 1, min(iters, KB)) : 0;
  if (early) {
    for (int s = 0; s < pre; ++s) load_b(smem0 + s * T::stage_bytes, pw, pc.n_tile * T::bn, s);
    cp_async_commit();
    griddep_wait(); /* A and its scales: written by the kernel before */
    griddep_launch_dependents();
  }
  auto load_next = [&](bool with_b) {
    if (p_tile < total_tiles) { /* the loads have a tile */
      const uint32_t st = smem0 + p_ring.stage * T::stage_bytes;
      const int n0 = pc.n_tile * T::bn;
      /* A: bm rows x 8 chunks; past the group's end: zero-fill */
#pragma unroll
      for (int i = 0; i < (T::bm * 8 + T::threads - 1) / T::threads; ++i) {
        int id = tid + i * T::threads, r = id >> 3, c = id & 7, row = pc.row0 + r;
        if (T::bm * 8 % T::threads != 0 && id >= T::bm * 8) break;
        bool ok = row < pc.row_end;
        const long long arow = ok && p.a_rows ? p.a_rows[row] : row; /* the gather (params.cuh) */
        const uint8_t *src = p.a + (ok ? arow * K + p_kb * 128 + c * 16 : 0);
        cp_async_16(st + r * 128 + ((c ^ (r & 7)) << 4), src, ok);
      }
      if (with_b) load_b(st, pw, n0, p_kb);
      /* scales of this k-block: bm A rows, one per B half */
      if (tid < T::bm) {
        int row = pc.row0 + tid;
        bool ok = row < pc.row_end;
        const long long arow = ok && p.a_rows ? p.a_rows[row] : row;
        cp_async_4(st + T::sa_off + tid * 4, p.a_scale + (ok ? p_kb * p.a_scale_ld + arow : 0), ok);
      } else if (tid < T::bm + T::halves) {
        int h = tid - T::bm;
        cp_async_4(st + T::sb_off + h * 4, pw.scale + (long long)((n0 + h * HALF_N) / 128) * KB + p_kb, true);
      }
      if (++p_kb == KB) { /* the next tile (p_kb is the same in every thread) */
        p_kb = 0;
        if (claimed) {
          const int slot = (p_it + 1) / KB % mma_claim_ring; /* this CTA's (p_it + 1) / KB-th tile */
          if (tid == 0) s_claim[slot] = claim_item(p.tile_counter, (int)gridDim.x);
          __syncthreads();
          p_tile = s_claim[slot];
        }
        if (!claimed) p_tile += gridDim.x;
        if (p_tile < total_tiles) {
          pc = decode_item(p_tile, s_pre, s_off, G, N_TILES, T::bm);
          pw = weights_of_group<N, K>(p, pc.g);
        }
      }
      p_ring.advance();
      ++p_it; /* the loads made, which name a claimed tile's ring slot */
    }
    cp_async_commit(); /* empty groups keep the wait count uniform */
  };

  /* ---- Phase 3: consumer state: warp tile, accumulators ---- */
  const int wm0 = (warp / T::warps_n) * T::warp_m, wn0 = (warp % T::warps_n) * T::warp_n;
  const int gid = lane >> 2, tq = lane & 3;
  /* ldmatrix row offsets (bytes) and swizzle key; every row a lane addresses
   * is = lane (mod 8), so the XOR key is lane & 7 */
  const int swz = lane & 7;
  uint32_t a_row[T::mi];
#pragma unroll
  for (int m = 0; m < T::mi; ++m) a_row[m] = (wm0 + m * 16 + (lane & 15)) * 128;
  const int a_chunk_hi = lane >> 4;
  uint32_t b_row[T::halves][T::ni / 2];
#pragma unroll
  for (int h = 0; h < T::halves; ++h)
#pragma unroll
    for (int q = 0; q < T::ni / 2; ++q) b_row[h][q] = (h * T::bn + wn0 + q * 16 + ((lane >> 4) << 3) + (lane & 7)) * 128;
  const int b_chunk_hi = (lane >> 3) & 1;

  float acc[T::mi][T::halves * T::ni][4];
  work_item cc = pc; /* the consumer's tile; the producer's runs ahead */
  int c_tile = blockIdx.x;
  stage_ring c_ring(stages);

  for (int s = 0; s < stages - 1; ++s) load_next(s >= pre); /* stage s is the s-th load */

  /* ---- Phase 4: main loop over the flat (tile, kb) sequence ---- */
  for (int it = 0; it < INT_MAX; ++it) { /* ends at the break below */
    const int kb = it % KB;
    if (kb == 0) {
      if (it > 0) {
        /* a claimed tile: the loads took it, and its claim was published, at
         * least one barrier ago; its ring slot is rewritten 8 tiles later */
        c_tile = claimed ? s_claim[it / KB % mma_claim_ring] : c_tile + (int)gridDim.x;
        if (c_tile >= total_tiles) break;
        cc = decode_item(c_tile, s_pre, s_off, G, N_TILES, T::bm);
      }
#pragma unroll
      for (int m = 0; m < T::mi; ++m)
#pragma unroll
        for (int n = 0; n < T::halves * T::ni; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[m][n][e] = 0.f;
    }
    /* stage `it` has landed (at most S-2 younger groups pending) and every
     * warp is done with stage it-1, which the next load overwrites */
    switch (stages) {
    case 2: cp_async_wait<0>(); break;
    case 3: cp_async_wait<1>(); break;
    default: cp_async_wait<2>(); break;
    }
    __syncthreads();
    load_next(true);

    const uint32_t st = smem0 + c_ring.stage * T::stage_bytes;
    const uint8_t *st_ptr = smem + c_ring.stage * T::stage_bytes;
    c_ring.advance();

    /* the 4 k32 steps of this scale block into a zeroed temporary */
    float tmp[T::mi][T::halves * T::ni][4];
#pragma unroll
    for (int m = 0; m < T::mi; ++m)
#pragma unroll
      for (int n = 0; n < T::halves * T::ni; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) tmp[m][n][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) {
      uint32_t af[T::mi][4];
#pragma unroll
      for (int m = 0; m < T::mi; ++m) ldmatrix_x4(st + a_row[m] + (((2 * ks + a_chunk_hi) ^ swz) << 4), af[m]);
      uint32_t bf[T::halves * T::ni / 2][4];
#pragma unroll
      for (int h = 0; h < T::halves; ++h)
#pragma unroll
        for (int q = 0; q < T::ni / 2; ++q)
          ldmatrix_x4(st + T::a_bytes + b_row[h][q] + (((2 * ks + b_chunk_hi) ^ swz) << 4), bf[h * T::ni / 2 + q]);
#pragma unroll
      for (int m = 0; m < T::mi; ++m)
#pragma unroll
        for (int n = 0; n < T::halves * T::ni; ++n)
          mma_e4m3_16832(tmp[m][n], af[m], bf[n >> 1][(n & 1) * 2], bf[n >> 1][(n & 1) * 2 + 1]);
    }

    /* promotion: acc += tmp * a_scale[row] * b_scale[half] */
    {
      const float *sa = reinterpret_cast<const float *>(st_ptr + T::sa_off);
      const float *sb = reinterpret_cast<const float *>(st_ptr + T::sb_off);
      float bs[T::halves];
#pragma unroll
      for (int h = 0; h < T::halves; ++h) bs[h] = sb[h];
#pragma unroll
      for (int m = 0; m < T::mi; ++m)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const float as = sa[wm0 + m * 16 + r * 8 + gid];
#pragma unroll
          for (int n = 0; n < T::halves * T::ni; ++n) {
            const float s = as * bs[n / T::ni];
            acc[m][n][2 * r] = fmaf(tmp[m][n][2 * r], s, acc[m][n][2 * r]);
            acc[m][n][2 * r + 1] = fmaf(tmp[m][n][2 * r + 1], s, acc[m][n][2 * r + 1]);
          }
        }
    }
    if (kb != KB - 1) continue;

    /* ---- Phase 5: epilogue of the finished tile (epilogue.cuh) ---- */
    const int n0 = cc.n_tile * T::bn;
    if constexpr (EPI == epilogue::store_bf16 || EPI == epilogue::store_fp32) {
#pragma unroll
      for (int m = 0; m < T::mi; ++m)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int row = cc.row0 + wm0 + m * 16 + r * 8 + gid;
          if (row >= cc.row_end) continue;
#pragma unroll
          for (int n = 0; n < T::ni; ++n)
            store_pair<EPI>(p.c, (long long)row * N + n0 + wn0 + n * 8 + 2 * tq, acc[m][n][2 * r],
                            acc[m][n][2 * r + 1]);
        }
    } else {
      /* the gated activation in place of the up half, and each row's amax */
      const swiglu_coeffs coeffs = swiglu_coeffs_of_group(p, cc.g);
      float amax[T::mi][2];
#pragma unroll
      for (int m = 0; m < T::mi; ++m)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          float up[2 * T::ni], gate[2 * T::ni];
#pragma unroll
          for (int n = 0; n < T::ni; ++n)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              up[2 * n + e] = acc[m][n][2 * r + e];
              gate[2 * n + e] = acc[m][T::ni + n][2 * r + e];
            }
          amax[m][r] = quad_max(swiglu_segment(up, gate, coeffs));
#pragma unroll
          for (int n = 0; n < T::ni; ++n)
#pragma unroll
            for (int e = 0; e < 2; ++e) acc[m][n][2 * r + e] = up[2 * n + e];
        }
      /* row amax across the 4 N-warps; s_red is next written one tile later,
       * after the main loop's barrier */
      const int wn = warp % T::warps_n;
      if (tq == 0) {
#pragma unroll
        for (int m = 0; m < T::mi; ++m)
#pragma unroll
          for (int r = 0; r < 2; ++r) s_red[wn * T::bm + wm0 + m * 16 + r * 8 + gid] = amax[m][r];
      }
      __syncthreads();
      constexpr int I = N / 2;
      uint8_t *cq = static_cast<uint8_t *>(p.c);
#pragma unroll
      for (int m = 0; m < T::mi; ++m)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int rl = wm0 + m * 16 + r * 8 + gid, row = cc.row0 + rl;
          float mx = s_red[rl];
#pragma unroll
          for (int w = 1; w < T::warps_n; ++w) mx = fmaxf(mx, s_red[w * T::bm + rl]);
          const float scale = fp8moe_quant_scale(mx);
          if (row >= cc.row_end) continue;
#pragma unroll
          for (int n = 0; n < T::ni; ++n)
            *reinterpret_cast<uint16_t *>(cq + (long long)row * I + n0 + wn0 + n * 8 + 2 * tq) =
                e4m3x2_quantize(acc[m][n][2 * r], acc[m][n][2 * r + 1], scale);
          if (wn == 0 && tq == 0) p.c_scale[(long long)(n0 / 128) * p.c_scale_ld + row] = scale;
        }
    }
  }
  cp_async_wait<0>(); /* nothing in flight at exit (only empty groups remain) */
  if (claimed && tid == 0) claims_done(p.tile_counter, (int)gridDim.x); /* after its last claim, past the list */
#endif
}

/* Launch one tile variant (tests call it directly to cover both). */
template <int N, int K, epilogue EPI, int BM, int BN = 128>
fp8moe_status gemm_mma_launch_bm(const grouped_gemm_params &p, cudaStream_t stream, bool pdl = false) {
  static_assert(N > 0 && K > 0 && N % 128 == 0 && K % 128 == 0, "N and K must be positive multiples of 128");
  static_assert(EPI != epilogue::swiglu_quant || N % 256 == 0, "swiglu_quant needs N = 2*I, I a multiple of 128");
  static_assert(FP8MOE_MMA_MAX_STAGES >= 2 && FP8MOE_MMA_MAX_STAGES <= 4, "FP8MOE_MMA_MAX_STAGES: 2..4");
  using T = mma_tile<EPI, BM, BN>;
  if (p.m_total <= 0 || p.num_groups <= 0) return FP8MOE_OK;
  if (p.num_groups > gemm_max_groups || p.extra_groups < 0 || p.extra_groups > p.num_groups)
    return FP8MOE_ERROR_INVALID_SHAPE;
  device_info dev;
  FP8MOE__GET_DEVICE_INFO(dev);
  if (dev.cc < 89) return FP8MOE_ERROR_UNSUPPORTED_DEVICE;

  /* upper bound of the tile count: sum ceil(rows_g/bm) <= m_total/bm + G */
  constexpr int n_tiles = (EPI == epilogue::swiglu_quant ? N / 2 : N) / T::bn;
  const long long bound = ((long long)p.m_total / T::bm + p.num_groups) * n_tiles;
  if (bound * (K / 128) > INT_MAX) return FP8MOE_ERROR_INVALID_SHAPE;

  int stages = FP8MOE_MMA_MAX_STAGES;
  while (stages > 2 && mma_smem_bytes<EPI, BM, BN>(stages) > dev.max_smem_optin) --stages;
  int smem = mma_smem_bytes<EPI, BM, BN>(stages);
  if (smem > dev.max_smem_optin) return FP8MOE_ERROR_UNSUPPORTED_DEVICE;

  auto kernel = gemm_mma_e4m3_blockscale_kernel<N, K, EPI, BM, BN>;
  FP8MOE__CHECK_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  int occ = 0;
  FP8MOE__CHECK_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kernel, T::threads, smem));
  if (occ < 1) occ = 1;
  /* A ring so deep that one CTA fills the SM (the 16 x 128 swiglu tile: 4
   * stages of 34 KB): where one stage less lets two CTAs share the SM and
   * the groups that can have rows (at most min(m_total, G)) give them at
   * least two tiles each, take it. Two CTAs keep loads in flight while the
   * other computes; with fewer tiles the deeper ring is faster
   * (docs/performance.md). */
  if (occ == 1 && stages > 3) {
    const int smem2 = mma_smem_bytes<EPI, BM, BN>(stages - 1);
    int occ2 = 0;
    FP8MOE__CHECK_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ2, kernel, T::threads, smem2));
    if (occ2 > 1 && groups_with_rows_bound(p) * n_tiles >= 2LL * occ2 * dev.sm_count) {
      --stages;
      smem = smem2;
      occ = occ2;
    }
  }
  const long long grid = (long long)occ * dev.sm_count < bound ? (long long)occ * dev.sm_count : bound;
  FP8MOE__CHECK_CUDA(launch_kernel(kernel, dim3((unsigned)grid), dim3(T::threads), smem, stream, pdl, p, stages));
  return FP8MOE_OK;
}

/* Launch the persistent grouped GEMM. m_total == 0 (or no group): OK,
 * nothing launched. Never synchronizes, never allocates. The host knows only
 * the bound m_total (not the group sizes), so:
 * - the tile height follows the mean rows per group: under
 *   FP8MOE_MMA_SMALL_M_ROWS, 16-row tiles (decode), else 64;
 * - a store epilogue with 16-row tiles takes 64-column tiles when even the
 *   most tiles of 128 columns there can be (at most min(m_total, groups)
 *   groups have rows) would give every SM fewer than 4: then the SMs share
 *   the weights more evenly (DeepSeek-V3 T=1: 8 experts, 448 tiles of 128 on
 *   132 SMs). With more tiles the 128-wide ones stream as well or better.
 * The tile shape never changes a row's result (each output element is the
 * same sequence of mma and promotion steps whatever the tile). */
template <int N, int K, epilogue EPI>
fp8moe_status gemm_mma_launch(const grouped_gemm_params &p, cudaStream_t stream, bool pdl = false) {
  if ((long long)p.m_total >= (long long)FP8MOE_MMA_SMALL_M_ROWS * p.num_groups)
    return gemm_mma_launch_bm<N, K, EPI, 64>(p, stream, pdl);
  if constexpr (EPI != epilogue::swiglu_quant) {
    device_info dev;
    FP8MOE__GET_DEVICE_INFO(dev);
    if (groups_with_rows_bound(p) * (N / 128) < 4LL * dev.sm_count)
      return gemm_mma_launch_bm<N, K, EPI, 16, 64>(p, stream, pdl);
  }
  return gemm_mma_launch_bm<N, K, EPI, 16>(p, stream, pdl);
}

} // namespace detail
} // namespace fp8moe

#endif /* FP8MOE_DETAIL_GEMM_MMA_E4M3_BLOCKSCALE_CUH */
