/* fp8moe/gemm_mma_e4m3_blockscale.cuh - the portable grouped FP8 block-scale
 * GEMM on mma.sync (sm_89, sm_90, sm_100).
 *
 * Computes the contract of gemm_params.cuh with the e4m3 tensor-core
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
 * - Groups without the host. The host does not know the group sizes (they
 *   live on the device, written by the pipeline's scan), so the grid is
 *   persistent: min(SMs x occupancy, an upper bound of the tile count). Each
 *   CTA reads group_offset into shared memory, computes the exclusive prefix
 *   of tiles per group (ceil(rows/BM) x column tiles; empty groups have none)
 *   with a block scan, and takes tiles blockIdx.x, +gridDim.x, ... by binary
 *   search over that prefix. Inside a group, consecutive tiles step over M
 *   first, so CTAs running together share the B tile (the big operand) in L2.
 * - One pipeline across tiles. The (tile, k-block) iterations of a CTA form
 *   one flat sequence; the loads run S-1 iterations ahead of the math even
 *   across tile boundaries, so the next tile's first stages load while the
 *   current tile's epilogue runs.
 * - Epilogues straight from the accumulators: bf16x2 (4 B) or float2 (8 B)
 *   stores; swiglu_quant computes silu(gate) * up in fp32 with the accurate
 *   expf (__expf is off by many ulp for large |v|, and the activation is
 *   requantized, so its error would show), reduces the row amax over the
 *   quad, then over the 4 N-warps through shared memory, and stores e4m3 pairs
 *   and one scale per row. Rows past a group's end are masked; rows outside
 *   every group are never written.
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
 * deepest ring (up to FP8MOE_GEMM_MMA_MAX_STAGES) that fits the device's
 * opt-in limit: 4 stages on sm_90/sm_100, fewer on sm_89's 99 KB; and one
 * stage less where that lets two CTAs share an SM that one would fill, when
 * there are tiles for both (gemm_mma_launch_bm).
 *
 * Launch: with pdl (common.cuh) the kernel may start while the previous one
 * on the stream finishes; it waits (griddep_wait) before it reads the group
 * offsets or A.
 */
#ifndef FP8MOE_GEMM_MMA_E4M3_BLOCKSCALE_CUH
#define FP8MOE_GEMM_MMA_E4M3_BLOCKSCALE_CUH

#include <cuda_runtime.h>
#include <limits.h>
#include <stdint.h>

#include "common.cuh"
#include "gemm_params.cuh"

/* Deepest cp.async ring the host may choose (2..4). Each stage is 18-24 KB
 * (store) or 34-40 KB (swiglu) of shared memory; deeper hides more load
 * latency (the host takes fewer stages where the device has less shared
 * memory, e.g. sm_89's 99 KB). */
#ifndef FP8MOE_GEMM_MMA_MAX_STAGES
#define FP8MOE_GEMM_MMA_MAX_STAGES 4
#endif

/* Mean rows per group (m_total / num_groups) under which the 16-row tile
 * variant runs: it wastes less of the tensor cores on zero rows of small
 * groups, but re-streams B once per 16 rows instead of per 64. */
#ifndef FP8MOE_GEMM_MMA_SMALL_M_ROWS
#define FP8MOE_GEMM_MMA_SMALL_M_ROWS 32
#endif

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
#define FP8MOE__HAS_MMA_E4M3 1
#else
#define FP8MOE__HAS_MMA_E4M3 0
#endif

namespace fp8moe {
namespace detail {
/* PTX wrappers of this kernel, one per instruction, in their own namespace so
 * they never collide with the Hopper path's (ptx_sm90.cuh). */
namespace mma_ptx {

/* 16 bytes global -> shared, bypassing L1; src_bytes = 0 reads nothing and
 * zero-fills. */
static __device__ __forceinline__ void cp_async_16(uint32_t dst, const void *src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}

/* 4 bytes (a scale) global -> shared; src_bytes = 0 zero-fills. */
static __device__ __forceinline__ void cp_async_4(uint32_t dst, const void *src, int src_bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}

static __device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

template <int N>
static __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* Four 8x8 b16 matrices; lane l gives the row address of matrix l/8. */
static __device__ __forceinline__ void ldmatrix_x4(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

/* d += a (16x32 e4m3, row) * b (32x8 e4m3, col), fp32 accumulate. */
static __device__ __forceinline__ void mma_e4m3_16832(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                                      uint32_t b1) {
#if FP8MOE__HAS_MMA_E4M3
  asm volatile("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 "
               "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

} // namespace mma_ptx

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
 * the swiglu amax exchange, the scan's warp totals. */
static constexpr int mma_aux_bytes = 2 * (FP8MOE_MAX_EXPERTS + 1) * 4 + 256 * 4 + 8 * 4;

template <epilogue EPI, int BM, int BN>
static inline int mma_smem_bytes(int stages) {
  return stages * mma_tile<EPI, BM, BN>::stage_bytes + mma_aux_bytes;
}

/* Where one tile lies: rows [row0, row_end) of group g (row_end is the group's
 * end, the mask), column tile n0 (output column, or activation column j0). */
struct mma_tile_coord {
  int g, row0, row_end, n0;
};

static __device__ __forceinline__ mma_tile_coord mma_decode_tile(int tile, const int *s_off, const int *s_pre,
                                                                 int num_groups, int bm, int bn) {
  int lo = 0, hi = num_groups - 1; /* last group whose first tile is <= tile (skips empty groups) */
  while (lo < hi) {
    int mid = (lo + hi + 1) >> 1;
    if (s_pre[mid] <= tile) lo = mid; else hi = mid - 1;
  }
  mma_tile_coord c;
  c.g = lo;
  int start = s_off[lo], end = s_off[lo + 1];
  int mtiles = (end - start + bm - 1) / bm;
  int local = tile - s_pre[lo];
  c.row0 = start + (local % mtiles) * bm; /* M fastest: concurrent CTAs share B */
  c.row_end = end;
  c.n0 = (local / mtiles) * bn;
  return c;
}

template <int N, int K, epilogue EPI, int BM, int BN>
__global__ void __launch_bounds__(mma_tile<EPI, BM, BN>::threads, mma_tile<EPI, BM, BN>::min_blocks)
gemm_mma_e4m3_blockscale_kernel(const grouped_gemm_params p, int stages) {
  static_assert(N > 0 && K > 0 && N % 128 == 0 && K % 128 == 0, "N and K must be positive multiples of 128");
  static_assert(EPI != epilogue::swiglu_quant || N % 256 == 0, "swiglu_quant needs N = 2*I, I a multiple of 128");
#if FP8MOE__HAS_MMA_E4M3
  using namespace mma_ptx;
  using T = mma_tile<EPI, BM, BN>;
  static_assert(N % T::bn == 0, "N is a multiple of the tile width");
  constexpr int KB = K / 128;
  constexpr int HALF_N = EPI == epilogue::swiglu_quant ? N / 2 : 0; /* B row offset of the gate half */
  constexpr int N_TILES = (EPI == epilogue::swiglu_quant ? N / 2 : N) / T::bn;

  extern __shared__ __align__(128) uint8_t smem[];
  int *s_off = reinterpret_cast<int *>(smem + stages * T::stage_bytes);
  int *s_pre = s_off + (FP8MOE_MAX_EXPERTS + 1);
  float *s_red = reinterpret_cast<float *>(s_pre + (FP8MOE_MAX_EXPERTS + 1)); /* [warps_n][bm] */
  int *s_wsum = reinterpret_cast<int *>(s_red + 256);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int G = p.num_groups, m_total = p.m_total;

  griddep_wait(); /* group offsets and A: written by the kernels before (PDL) */
  griddep_launch_dependents();

  /* ---- Phase 1: tile prefix over groups (block scan, GPT groups per thread) ---- */
  for (int g = tid; g <= G; g += T::threads) {
    int o = p.group_offset[g];
    s_off[g] = o < 0 ? 0 : (o > m_total ? m_total : o);
  }
  __syncthreads();
  {
    constexpr int GPT = (FP8MOE_MAX_EXPERTS + T::threads - 1) / T::threads; /* 2 (256 threads) or 4 (128) */
    int t[GPT], sum = 0;
#pragma unroll
    for (int i = 0; i < GPT; ++i) {
      int g = GPT * tid + i;
      int rows = g < G ? s_off[g + 1] - s_off[g] : 0;
      t[i] = rows > 0 ? (rows + T::bm - 1) / T::bm * N_TILES : 0; /* a decreasing offset counts as empty */
      sum += t[i];
    }
    int incl = sum;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      int v = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += v;
    }
    if (lane == 31) s_wsum[warp] = incl;
    __syncthreads();
    for (int w = 0; w < warp; ++w) incl += s_wsum[w];
    int excl = incl - sum;
    if (tid == 0) s_pre[0] = 0;
#pragma unroll
    for (int i = 0; i < GPT; ++i) {
      excl += t[i];
      if (GPT * tid + i < G) s_pre[GPT * tid + i + 1] = excl;
    }
  }
  __syncthreads();
  const int total_tiles = s_pre[G];
  const int my_tiles = (int)blockIdx.x < total_tiles ? (total_tiles - 1 - (int)blockIdx.x) / (int)gridDim.x + 1 : 0;
  const int iters = my_tiles * KB;
  if (iters == 0) return;

  const uint32_t smem0 = smem_addr(smem);

  /* ---- Phase 2: producer. Stage `it` of the flat (tile, kb) sequence ---- */
  mma_tile_coord pc = mma_decode_tile(blockIdx.x, s_off, s_pre, G, T::bm, T::bn);
  int p_kb = 0, p_tile = blockIdx.x, p_stage = 0, p_it = 0;
  auto load_next = [&]() {
    if (p_it < iters) {
      const uint32_t st = smem0 + p_stage * T::stage_bytes;
      /* A: bm rows x 8 chunks; past the group's end: zero-fill */
#pragma unroll
      for (int i = 0; i < (T::bm * 8 + T::threads - 1) / T::threads; ++i) {
        int id = tid + i * T::threads, r = id >> 3, c = id & 7, row = pc.row0 + r;
        if (T::bm * 8 % T::threads != 0 && id >= T::bm * 8) break;
        bool ok = row < pc.row_end;
        const uint8_t *src = p.a + (ok ? (long long)row * K + p_kb * 128 + c * 16 : 0);
        cp_async_16(st + r * 128 + ((c ^ (r & 7)) << 4), src, ok ? 16 : 0);
      }
      /* B: halves x bn rows x 8 chunks */
#pragma unroll
      for (int i = 0; i < T::halves * T::bn * 8 / T::threads; ++i) {
        int id = tid + i * T::threads, r = id >> 3, c = id & 7;
        long long brow = (long long)pc.g * N + pc.n0 + (r / T::bn) * HALF_N + (r % T::bn);
        cp_async_16(st + T::a_bytes + r * 128 + ((c ^ (r & 7)) << 4), p.b + brow * K + p_kb * 128 + c * 16, 16);
      }
      /* scales of this k-block: bm A rows, one per B half */
      if (tid < T::bm) {
        int row = pc.row0 + tid;
        bool ok = row < pc.row_end;
        cp_async_4(st + T::sa_off + tid * 4, p.a_scale + (ok ? p_kb * p.a_scale_ld + row : 0), ok ? 4 : 0);
      } else if (tid < T::bm + T::halves) {
        int h = tid - T::bm;
        long long nb = (long long)pc.g * (N / 128) + (pc.n0 + h * HALF_N) / 128;
        cp_async_4(st + T::sb_off + h * 4, p.b_scale + nb * KB + p_kb, 4);
      }
      if (++p_kb == KB) {
        p_kb = 0;
        p_tile += gridDim.x;
        if (p_it + 1 < iters) pc = mma_decode_tile(p_tile, s_off, s_pre, G, T::bm, T::bn);
      }
      if (++p_stage == stages) p_stage = 0;
    }
    ++p_it;
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
  mma_tile_coord cc = pc; /* the consumer's tile; the producer's runs ahead */
  int c_tile = blockIdx.x, c_stage = 0;

  for (int s = 0; s < stages - 1; ++s) load_next();

  /* ---- Phase 4: main loop over the flat (tile, kb) sequence ---- */
  for (int it = 0; it < iters; ++it) {
    const int kb = it % KB;
    if (kb == 0) {
      if (it > 0) cc = mma_decode_tile(c_tile, s_off, s_pre, G, T::bm, T::bn);
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
    load_next();

    const uint32_t st = smem0 + c_stage * T::stage_bytes;
    const uint8_t *st_ptr = smem + c_stage * T::stage_bytes;
    if (++c_stage == stages) c_stage = 0;

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

    /* ---- Phase 5: epilogue of the finished tile ---- */
    c_tile += gridDim.x;
    if constexpr (EPI == epilogue::store_bf16 || EPI == epilogue::store_fp32) {
#pragma unroll
      for (int m = 0; m < T::mi; ++m)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int row = cc.row0 + wm0 + m * 16 + r * 8 + gid;
          if (row >= cc.row_end) continue;
#pragma unroll
          for (int n = 0; n < T::ni; ++n) {
            const long long off = (long long)row * N + cc.n0 + wn0 + n * 8 + 2 * tq;
            if constexpr (EPI == epilogue::store_bf16) {
              uint32_t v = (uint32_t)float_to_bf16_bits(acc[m][n][2 * r]) |
                           ((uint32_t)float_to_bf16_bits(acc[m][n][2 * r + 1]) << 16);
              *reinterpret_cast<uint32_t *>(static_cast<uint16_t *>(p.c) + off) = v;
            } else {
              *reinterpret_cast<float2 *>(static_cast<float *>(p.c) + off) =
                  make_float2(acc[m][n][2 * r], acc[m][n][2 * r + 1]);
            }
          }
        }
    } else {
      /* SwiGLU in place of the up half: a = silu(gate) * up, fp32 */
      float amax[T::mi][2];
#pragma unroll
      for (int m = 0; m < T::mi; ++m)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          float mx = 0.f;
#pragma unroll
          for (int n = 0; n < T::ni; ++n)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const float up = acc[m][n][2 * r + e], gate = acc[m][T::ni + n][2 * r + e];
              const float a = gate / (1.0f + expf(-gate)) * up;
              acc[m][n][2 * r + e] = a;
              mx = fmaxf(mx, fabsf(a));
            }
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
          amax[m][r] = mx;
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
          for (int n = 0; n < T::ni; ++n) {
            /* true division, as the reference: a_q = sat_e4m3(a / scale) */
            uint16_t q = float2_to_e4m3x2(__fdiv_rn(acc[m][n][2 * r], scale), __fdiv_rn(acc[m][n][2 * r + 1], scale));
            *reinterpret_cast<uint16_t *>(cq + (long long)row * I + cc.n0 + wn0 + n * 8 + 2 * tq) = q;
          }
          if (wn == 0 && tq == 0) p.c_scale[(long long)(cc.n0 / 128) * p.c_scale_ld + row] = scale;
        }
    }
  }
  cp_async_wait<0>(); /* nothing in flight at exit (only empty groups remain) */
#endif
}

/* Launch one tile variant (tests call it directly to cover both). */
template <int N, int K, epilogue EPI, int BM, int BN = 128>
fp8moe_status gemm_mma_launch_bm(const grouped_gemm_params &p, cudaStream_t stream, bool pdl = false) {
  static_assert(N > 0 && K > 0 && N % 128 == 0 && K % 128 == 0, "N and K must be positive multiples of 128");
  static_assert(EPI != epilogue::swiglu_quant || N % 256 == 0, "swiglu_quant needs N = 2*I, I a multiple of 128");
  static_assert(FP8MOE_GEMM_MMA_MAX_STAGES >= 2 && FP8MOE_GEMM_MMA_MAX_STAGES <= 4, "2..4 stages");
  using T = mma_tile<EPI, BM, BN>;
  if (p.m_total <= 0 || p.num_groups <= 0) return FP8MOE_OK;
  if (p.num_groups > FP8MOE_MAX_EXPERTS) return FP8MOE_ERROR_INVALID_SHAPE;
  device_info dev;
  FP8MOE__CHECK_CUDA(current_device_info(&dev));
  if (dev.cc < 89) return FP8MOE_ERROR_UNSUPPORTED_DEVICE;

  /* upper bound of the tile count: sum ceil(rows_g/bm) <= m_total/bm + G */
  constexpr int n_tiles = (EPI == epilogue::swiglu_quant ? N / 2 : N) / T::bn;
  const long long bound = ((long long)p.m_total / T::bm + p.num_groups) * n_tiles;
  if (bound * (K / 128) > INT_MAX) return FP8MOE_ERROR_INVALID_SHAPE;

  int stages = FP8MOE_GEMM_MMA_MAX_STAGES;
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
   * other computes: H200, DeepSeek-V3 T=128, layer at 95% of the floor
   * instead of 93%; with fewer tiles (T=1: 8 experts, 128 tiles) the deeper
   * ring is faster. */
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
 *   FP8MOE_GEMM_MMA_SMALL_M_ROWS, 16-row tiles (decode), else 64;
 * - a store epilogue with 16-row tiles takes 64-column tiles when even the
 *   most tiles of 128 columns there can be (at most min(m_total, groups)
 *   groups have rows) would give every SM fewer than 4: then the SMs share
 *   the weights more evenly (H200, DeepSeek-V3 T=1: 8 experts, 448 tiles of
 *   128 on 132 SMs; the layer went from 129 to 126 us). With more tiles the
 *   128-wide ones stream as well or better. */
template <int N, int K, epilogue EPI>
fp8moe_status gemm_mma_launch(const grouped_gemm_params &p, cudaStream_t stream, bool pdl = false) {
  if ((long long)p.m_total >= (long long)FP8MOE_GEMM_MMA_SMALL_M_ROWS * p.num_groups)
    return gemm_mma_launch_bm<N, K, EPI, 64>(p, stream, pdl);
  if constexpr (EPI != epilogue::swiglu_quant) {
    device_info dev;
    FP8MOE__CHECK_CUDA(current_device_info(&dev));
    if (groups_with_rows_bound(p) * (N / 128) < 4LL * dev.sm_count)
      return gemm_mma_launch_bm<N, K, EPI, 16, 64>(p, stream, pdl);
  }
  return gemm_mma_launch_bm<N, K, EPI, 16>(p, stream, pdl);
}

} // namespace detail
} // namespace fp8moe

#endif /* FP8MOE_GEMM_MMA_E4M3_BLOCKSCALE_CUH */
