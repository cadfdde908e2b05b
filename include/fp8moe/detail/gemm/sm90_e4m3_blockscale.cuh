/* fp8moe/detail/gemm/sm90_e4m3_blockscale.cuh - the Hopper (sm_90a) grouped
 * FP8 block-scale GEMM: TMA + wgmma + warp specialization + a persistent
 * scheduler. It implements the contract of params.cuh (read that first).
 *
 * Design.
 *  - One CTA per SM (grid = SM count, capped by an upper bound of the work),
 *    384 threads: warpgroups 0 and 1 are consumers (wgmma + epilogue, 232
 *    registers each after setmaxnreg.inc), warpgroup 2 is the producer (40
 *    registers after setmaxnreg.dec): in warp 8 one elected thread issues
 *    TMA, warp 9 copies the block scales with cp.async, warps 10-11 exit.
 *    ptxas caps the kernel at 168 registers (65536 / 384) and allocates each
 *    branch up to its setmaxnreg value; 40/232 is the split with no spills
 *    (tunables.h: FP8MOE_SM90_PRODUCER_REGS / _CONSUMER_REGS).
 *  - A CTA tile is BM = 128 rows x BN columns; consumer warpgroup w owns rows
 *    [64w, 64w + 64) and all BN columns. BN is one or two "chunks" of 128
 *    columns, each a separate TMA box of B and a separate 128x128 b-scale:
 *    store epilogues use 2 chunks (BN = 256, 4 stages) by default when N is a
 *    multiple of 256, else 1 (BN = 128, 6 stages; tunables.h); swiglu_quant
 *    always uses 2 chunks: chunk 0 = "up" rows [j0, j0+128) of B, chunk 1 =
 *    "gate" rows [I + j0, I + j0 + 128), so every thread holds up and gate of
 *    the same (row, column) in registers and SwiGLU is thread-local.
 *  - Operands are K-major, 128-byte swizzled: a TMA box is 128 bytes of K
 *    (one whole quantization block) by 128 rows, written 1024-byte aligned,
 *    which is exactly the wgmma SW128 K-major canonical layout. A stage holds
 *    one K block: A (16 KiB) + NCHUNK B boxes (16 KiB each) + that block's
 *    scales (128 A scales, NCHUNK B scales), in a ring of full/empty
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
 *  - Block scales: per K block and chunk, the 4 wgmma k32 steps write a
 *    64-register temporary (scale-d = 0 on the first), which is then promoted
 *    into the fp32 accumulator: acc += tmp * a_scale[row] * b_scale. The
 *    tensor core's internal accumulation therefore never spans more than 128
 *    products. Register budget per consumer thread: NCHUNK * 64 accumulator +
 *    64 temporary (192 with two chunks, 128 with one). Scales travel with the
 *    stage (4-byte cp.async, so a_scale_ld needs no alignment; rows past the
 *    group's end get scale 0), so no load latency is on the consumers' path.
 *  - Persistent scheduler (schedule.cuh): work items are (group, n-tile,
 *    m-tile), consecutive items sharing the expert's weight tile in L2; each
 *    CTA strides over the list. B comes through one tensor map per weight
 *    array (the routed experts' and, when there are extra groups, the
 *    shared experts'). When a tile has at most 64 valid rows, warpgroup 1
 *    skips its wgmmas (it only keeps the barrier protocol), which halves
 *    the tensor work of decode.
 *  - Epilogues (epilogue.cuh) store straight from the accumulators (bf16,
 *    fp32 or fp8 pairs), rows masked at the group end; swiglu_quant holds up
 *    and gate of the same (row, column) in one thread, reduces the row amax
 *    over the quad that holds a row (shuffles only) and writes the fp8
 *    activations and one scale per (row, 128 columns).
 *
 * Where the time goes at prefill (the consumers: wgmma, wait, promote per
 * chunk) and at decode is measured in docs/performance.md.
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
  sm90_threads = 384,          /* 2 consumer warpgroups + 1 producer warpgroup */
  sm90_bm = 128,               /* rows per CTA tile */
  sm90_bk = 128,               /* K per stage: one quantization block, one 128-byte swizzle row */
  sm90_box_bytes = 128 * 128,  /* one B box: 128 rows x 128 bytes */
  sm90_a_box_rows = 32,        /* A comes in boxes of 32 rows, only as many as the tile has rows */
  sm90_max_groups = gemm_max_groups
};

static_assert(FP8MOE_SM90_PRODUCER_REGS % 8 == 0 && FP8MOE_SM90_CONSUMER_REGS % 8 == 0 &&
                  FP8MOE_SM90_PRODUCER_REGS + 2 * FP8MOE_SM90_CONSUMER_REGS <= 504,
              "FP8MOE_SM90_*_REGS: multiples of 8, producer + 2 x consumer <= 504");
static_assert(FP8MOE_SM90_STORE_CHUNKS == 1 || FP8MOE_SM90_STORE_CHUNKS == 2, "FP8MOE_SM90_STORE_CHUNKS: 1 or 2");

template <int NCHUNK, int STAGES>
struct sm90_smem_layout {
  static constexpr int stage_bytes = (1 + NCHUNK) * sm90_box_bytes;
  static constexpr int barriers_offset = STAGES * stage_bytes;
  static constexpr int scale_a_offset = barriers_offset + 2 * STAGES * 8;   /* [STAGES][128] */
  static constexpr int scale_b_offset = scale_a_offset + STAGES * 128 * 4;  /* [STAGES][4] */
  static constexpr int prefix_offset = scale_b_offset + STAGES * 4 * 4;
  static constexpr int offsets_offset = prefix_offset + (sm90_max_groups + 1) * 4;
  static constexpr int bytes = offsets_offset + (sm90_max_groups + 1) * 4;
  static constexpr int dynamic_bytes = bytes + 1024; /* slack to align the base to 1024 */
  static_assert(dynamic_bytes <= 227 * 1024, "the Hopper stage counts (tunables.h) exceed 227 KiB of shared memory");
};

/* Tiles of 128 columns per item (swiglu always pairs up and gate), and the
 * pipeline depth that goes with them (tunables.h). */
template <int N, epilogue EPI>
struct sm90_tiling {
  static constexpr int nchunk =
      EPI == epilogue::swiglu_quant ? 2 : (N % (128 * FP8MOE_SM90_STORE_CHUNKS) == 0 ? FP8MOE_SM90_STORE_CHUNKS : 1);
  static constexpr int stages = nchunk == 2 ? FP8MOE_SM90_STAGES_BN256 : FP8MOE_SM90_STAGES_BN128;
};

template <int N, int K, epilogue EPI>
constexpr bool gemm_sm90_supported() {
  return N > 0 && K > 0 && N % 128 == 0 && K % 128 == 0 && (EPI != epilogue::swiglu_quant || N % 256 == 0);
}

template <int N, int K, epilogue EPI, int NCHUNK, int STAGES>
__global__ void __launch_bounds__(sm90_threads, 1)
    gemm_sm90_e4m3_blockscale_kernel(const __grid_constant__ CUtensorMap map_a,
                                     const __grid_constant__ CUtensorMap map_b,
                                     const __grid_constant__ CUtensorMap map_b_extra, const grouped_gemm_params p) {
  static_assert(K % 128 == 0 && N % 128 == 0, "K and N are multiples of the 128 quantization block");
  static_assert(NCHUNK == 1 || NCHUNK == 2, "1 or 2 chunks of 128 columns per tile");
  static_assert(EPI != epilogue::swiglu_quant || (NCHUNK == 2 && N % 256 == 0), "swiglu pairs up/gate chunks");
  static_assert(N % (128 * NCHUNK) == 0, "N is a multiple of the tile width");
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using L = sm90_smem_layout<NCHUNK, STAGES>;
  constexpr int KB = K / sm90_bk;
  constexpr int BN = 128 * NCHUNK;
  constexpr int NT = EPI == epilogue::swiglu_quant ? N / 256 : N / BN;
  constexpr uint32_t stage_bytes = L::stage_bytes;

  /* ---- shared memory: stages | full[S] empty[S] | scales | prefix | offsets ---- */
  extern __shared__ uint8_t smem_raw[];
  uint8_t *smem = (uint8_t *)(((uintptr_t)smem_raw + 1023) & ~(uintptr_t)1023);
  uint64_t *full = (uint64_t *)(smem + L::barriers_offset);
  uint64_t *empty = full + STAGES;
  float *s_scale_a = (float *)(smem + L::scale_a_offset);
  float *s_scale_b = (float *)(smem + L::scale_b_offset);
  int *s_prefix = (int *)(smem + L::prefix_offset);
  int *s_off = (int *)(smem + L::offsets_offset);

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int G = p.num_groups;

  /* ---- setup: barriers, then the work list (schedule.cuh) ---- */
  if (tid == 0) {
    for (int s = 0; s < STAGES; s++) {
      sm90::mbar_init(&full[s], 1 + 32); /* TMA thread (+ bytes) and the 32 scale lanes */
      sm90::mbar_init(&empty[s], 8 * 32); /* every consumer lane */
    }
    sm90::mbar_fence_init();
  }
  griddep_wait(); /* group offsets and A: written by the kernels before (PDL) */
  griddep_launch_dependents();
  load_group_offsets<sm90_threads>(p, s_off);
  __syncthreads();
  if (warp == 0) build_tile_prefix(s_off, G, sm90_bm, s_prefix, lane);
  __syncthreads();
  const int total = s_prefix[G] * NT;

  if (warp >= 8) {
    /* ---- producer warpgroup: warp 8 streams A and B boxes with TMA, warp 9
     * copies the stage's scales with cp.async; both run up to STAGES K
     * blocks ahead of the consumers, so no load latency is on their path ---- */
    sm90::setmaxnreg_dec<FP8MOE_SM90_PRODUCER_REGS>();
    if (warp == 8) {
      if (sm90::elect_one()) {
        sm90::tma_prefetch_map(&map_a);
        sm90::tma_prefetch_map(&map_b);
        if (p.extra_groups > 0) sm90::tma_prefetch_map(&map_b_extra);
        stage_ring ring(STAGES);
        for (int w = blockIdx.x; w < total; w += gridDim.x) {
          const work_item it = decode_item(w, s_prefix, s_off, G, NT, sm90_bm);
          const bool extra = it.g >= G - p.extra_groups;
          const CUtensorMap *mb = extra ? &map_b_extra : &map_b;
          const int gi = extra ? it.g - (G - p.extra_groups) : it.g;
          int brow[NCHUNK];
#pragma unroll
          for (int c = 0; c < NCHUNK; c++)
            brow[c] = gi * N + (EPI == epilogue::swiglu_quant ? c * (N / 2) + it.n_tile * 128 : it.n_tile * BN + c * 128);
          /* decode-sized tiles load only the A rows they have (rows past the
           * group in the last box are other groups' rows or zeros; rows past
           * the last box keep stale data: all are masked at the store) */
          const int rows = min(it.row_end - it.row0, sm90_bm);
          const int a_boxes = (rows + sm90_a_box_rows - 1) / sm90_a_box_rows;
          const uint32_t bytes = (uint32_t)(a_boxes * sm90_a_box_rows * 128 + NCHUNK * sm90_box_bytes);
          for (int kb = 0; kb < KB; kb++) {
            sm90::mbar_wait(&empty[ring.stage], ring.phase ^ 1u);
            uint8_t *st = smem + ring.stage * stage_bytes;
            sm90::mbar_arrive_expect_tx(&full[ring.stage], bytes);
            for (int b = 0; b < a_boxes; b++)
              sm90::tma_load_2d(st + b * sm90_a_box_rows * 128, &map_a, &full[ring.stage], kb * sm90_bk,
                                it.row0 + b * sm90_a_box_rows);
#pragma unroll
            for (int c = 0; c < NCHUNK; c++)
              sm90::tma_load_2d(st + (1 + c) * sm90_box_bytes, mb, &full[ring.stage], kb * sm90_bk, brow[c]);
            ring.advance();
          }
        }
      }
    } else if (warp == 9) {
      stage_ring ring(STAGES);
      for (int w = blockIdx.x; w < total; w += gridDim.x) {
        const work_item it = decode_item(w, s_prefix, s_off, G, NT, sm90_bm);
        const int nblk = EPI == epilogue::swiglu_quant ? lane * (N / 256) + it.n_tile : it.n_tile * NCHUNK + lane;
        const float *bsrc = weights_of_group<N, K>(p, it.g).scale + (long long)nblk * KB;
        for (int kb = 0; kb < KB; kb++) {
          /* every lane waits: its copies below are ordered after the
           * consumers' release of the stage */
          sm90::mbar_wait(&empty[ring.stage], ring.phase ^ 1u);
          const float *asrc = p.a_scale + (long long)kb * p.a_scale_ld;
          const uint32_t sa = smem_addr(s_scale_a + ring.stage * 128);
#pragma unroll
          for (int i = 0; i < 4; i++) {
            const int r = it.row0 + lane + 32 * i;
            const bool ok = r < it.row_end;
            ptx::cp_async_4(sa + 4 * (lane + 32 * i), ok ? asrc + r : p.a_scale, ok);
          }
          if (lane < NCHUNK) ptx::cp_async_4(smem_addr(s_scale_b + ring.stage * 4 + lane), bsrc + kb, true);
          sm90::cp_async_mbar_arrive(&full[ring.stage]);
          ring.advance();
        }
      }
    }
  } else {
    /* ---- consumer warpgroups: wgmma, promotion, epilogue ---- */
    sm90::setmaxnreg_inc<FP8MOE_SM90_CONSUMER_REGS>();
    const int wg = warp / 4;               /* 0 or 1: rows [64wg, 64wg + 64) of the tile */
    const int wrow = (warp % 4) * 16 + lane / 4;  /* this thread's first row inside the warpgroup's 64 */
    const uint64_t desc_a0 = sm90::smem_desc_k_sw128(smem + wg * 64 * 128);
    const uint64_t desc_b0 = sm90::smem_desc_k_sw128(smem + sm90_box_bytes);
    float tmp[64];
#pragma unroll
    for (int i = 0; i < 64; i++) tmp[i] = 0.0f;
    stage_ring ring(STAGES);

    for (int w = blockIdx.x; w < total; w += gridDim.x) {
      const work_item it = decode_item(w, s_prefix, s_off, G, NT, sm90_bm);
      const bool active = it.row0 + wg * 64 < it.row_end;
      const int r0 = it.row0 + wg * 64 + wrow, r1 = r0 + 8;
      const bool v0 = r0 < it.row_end, v1 = r1 < it.row_end;
      float acc[NCHUNK][64];
#pragma unroll
      for (int c = 0; c < NCHUNK; c++)
#pragma unroll
        for (int i = 0; i < 64; i++) acc[c][i] = 0.0f;

      for (int kb = 0; kb < KB; kb++) {
        sm90::mbar_wait(&full[ring.stage], ring.phase);
        if (active) {
          /* this stage's scales, into registers before the stage is released */
          const float sa0 = s_scale_a[ring.stage * 128 + wg * 64 + wrow];
          const float sa1 = s_scale_a[ring.stage * 128 + wg * 64 + wrow + 8];
          float sb[NCHUNK];
#pragma unroll
          for (int c = 0; c < NCHUNK; c++) sb[c] = s_scale_b[ring.stage * 4 + c];
          const uint64_t soff = (uint64_t)((ring.stage * stage_bytes) >> 4);
#pragma unroll
          for (int c = 0; c < NCHUNK; c++) {
#pragma unroll
            for (int i = 0; i < 64; i++) sm90::fence_operand(tmp[i]);
            sm90::wgmma_fence();
#pragma unroll
            for (int k = 0; k < 4; k++)
              sm90::wgmma_m64n128k32_e4m3(tmp, desc_a0 + soff + 2 * k,
                                          desc_b0 + soff + (uint64_t)(c * (sm90_box_bytes >> 4)) + 2 * k, k);
            sm90::wgmma_commit();
#pragma unroll
            for (int i = 0; i < 64; i++) sm90::fence_operand(tmp[i]);
            sm90::wgmma_wait<0>();
#pragma unroll
            for (int i = 0; i < 64; i++) sm90::fence_operand(tmp[i]);
            /* each lane releases the stage after its own reads of it */
            if (c == NCHUNK - 1) sm90::mbar_arrive(&empty[ring.stage]);
            const float s0 = sa0 * sb[c], s1 = sa1 * sb[c];
#pragma unroll
            for (int j = 0; j < 16; j++) {
              acc[c][4 * j + 0] = fmaf(tmp[4 * j + 0], s0, acc[c][4 * j + 0]);
              acc[c][4 * j + 1] = fmaf(tmp[4 * j + 1], s0, acc[c][4 * j + 1]);
              acc[c][4 * j + 2] = fmaf(tmp[4 * j + 2], s1, acc[c][4 * j + 2]);
              acc[c][4 * j + 3] = fmaf(tmp[4 * j + 3], s1, acc[c][4 * j + 3]);
            }
          }
        } else {
          sm90::mbar_arrive(&empty[ring.stage]); /* no rows here: keep the ring turning */
        }
        ring.advance();
      }
      if (!active) continue;

      /* ---- epilogue (epilogue.cuh). Accumulator layout (ptx/sm90.cuh):
       * acc[c][4j + {0,1}] is row r0, columns 8j + cq + {0,1} of chunk c;
       * acc[c][4j + {2,3}] the same columns of row r1 ---- */
      const int cq = 2 * (lane % 4); /* this thread's column pair inside each 8 */
      if constexpr (EPI == epilogue::swiglu_quant) {
        constexpr int I = N / 2;
        const swiglu_coeffs coeffs = swiglu_coeffs_of_group(p, it.g);
        float up0[32], gate0[32], up1[32], gate1[32];
#pragma unroll
        for (int j = 0; j < 16; j++)
#pragma unroll
          for (int e = 0; e < 2; e++) {
            up0[2 * j + e] = acc[0][4 * j + e];
            gate0[2 * j + e] = acc[1][4 * j + e];
            up1[2 * j + e] = acc[0][4 * j + 2 + e];
            gate1[2 * j + e] = acc[1][4 * j + 2 + e];
          }
        const float sc0 = fp8moe_quant_scale(quad_max(swiglu_segment(up0, gate0, coeffs)));
        const float sc1 = fp8moe_quant_scale(quad_max(swiglu_segment(up1, gate1, coeffs)));
        uint8_t *out = (uint8_t *)p.c;
        const int col0 = it.n_tile * 128 + cq;
#pragma unroll
        for (int j = 0; j < 16; j++) {
          if (v0)
            *(uint16_t *)(out + (long long)r0 * I + col0 + 8 * j) = e4m3x2_quantize(up0[2 * j], up0[2 * j + 1], sc0);
          if (v1)
            *(uint16_t *)(out + (long long)r1 * I + col0 + 8 * j) = e4m3x2_quantize(up1[2 * j], up1[2 * j + 1], sc1);
        }
        if (cq == 0) {
          float *cs = p.c_scale + (long long)it.n_tile * p.c_scale_ld;
          if (v0) cs[r0] = sc0;
          if (v1) cs[r1] = sc1;
        }
      } else {
#pragma unroll
        for (int c = 0; c < NCHUNK; c++) {
          const int col0 = it.n_tile * BN + c * 128 + cq;
#pragma unroll
          for (int j = 0; j < 16; j++) {
            if (v0) store_pair<EPI>(p.c, (long long)r0 * N + col0 + 8 * j, acc[c][4 * j + 0], acc[c][4 * j + 1]);
            if (v1) store_pair<EPI>(p.c, (long long)r1 * N + col0 + 8 * j, acc[c][4 * j + 2], acc[c][4 * j + 3]);
          }
        }
      }
    }
  }
#else
  /* No sm_90a code in this image (built for another target, or for plain
   * sm_90): a static shared-memory marker, which the real kernel never has,
   * lets the host see that (sm90_image_present) and take the portable path. */
  __shared__ volatile uint32_t fp8moe_sm90a_absent[32];
  (void)map_a; (void)map_b; (void)map_b_extra;
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

/* Launch with an explicit tile configuration (benchmarks compare them);
 * gemm_sm90_launch picks the default one. */
template <int N, int K, epilogue EPI, int NCHUNK, int STAGES>
fp8moe_status gemm_sm90_launch_config(const grouped_gemm_params &p, cudaStream_t stream, bool pdl = false) {
  static_assert(gemm_sm90_supported<N, K, EPI>(), "shape outside the sm90 GEMM envelope");
  using L = sm90_smem_layout<NCHUNK, STAGES>;
  if (p.m_total < 0 || p.num_groups < 0 || p.num_groups > sm90_max_groups || p.extra_groups < 0 ||
      p.extra_groups > p.num_groups)
    return FP8MOE_ERROR_INVALID_SHAPE;
  if (p.m_total == 0 || p.num_groups == 0) return FP8MOE_OK;
  const int routed = p.num_groups - p.extra_groups;
  if (!p.a || !p.a_scale || !p.group_offset || !p.c || (routed > 0 && (!p.b || !p.b_scale)) ||
      (p.extra_groups > 0 && (!p.b_extra || !p.b_extra_scale)))
    return FP8MOE_ERROR_NULL_ARGUMENT;
  if (EPI == epilogue::swiglu_quant && !p.c_scale) return FP8MOE_ERROR_NULL_ARGUMENT;
  if (p.a_scale_ld < p.m_total || (EPI == epilogue::swiglu_quant && p.c_scale_ld < p.m_total))
    return FP8MOE_ERROR_INVALID_SHAPE;
  if (((uintptr_t)p.a | (uintptr_t)p.b | (uintptr_t)p.b_extra | (uintptr_t)p.c) & 15u)
    return FP8MOE_ERROR_MISALIGNED_POINTER;

  device_info dev;
  FP8MOE__GET_DEVICE_INFO(dev);
  if (dev.cc != 90 || dev.max_smem_optin < L::dynamic_bytes) return FP8MOE_ERROR_UNSUPPORTED_DEVICE;

  CUtensorMap map_a, map_b, map_b_extra;
  if (!sm90_make_operand_map(&map_a, p.a, (unsigned long long)p.m_total, K, sm90_a_box_rows))
    return FP8MOE_ERROR_CUDA;
  if (routed > 0 && !sm90_make_operand_map(&map_b, p.b, (unsigned long long)routed * N, K, 128))
    return FP8MOE_ERROR_CUDA;
  if (p.extra_groups > 0 &&
      !sm90_make_operand_map(&map_b_extra, p.b_extra, (unsigned long long)p.extra_groups * N, K, 128))
    return FP8MOE_ERROR_CUDA;
  if (routed == 0) map_b = map_b_extra;
  if (p.extra_groups == 0) map_b_extra = map_b;

  constexpr int NT = EPI == epilogue::swiglu_quant ? N / 256 : N / (128 * NCHUNK);
  const long long items_bound = (long long)NT * (ceil_div(p.m_total, sm90_bm) + p.num_groups);
  const int grid = (int)(items_bound < dev.sm_count ? items_bound : dev.sm_count);

  auto kernel = gemm_sm90_e4m3_blockscale_kernel<N, K, EPI, NCHUNK, STAGES>;
  FP8MOE__CHECK_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, L::dynamic_bytes));
  FP8MOE__CHECK_CUDA(launch_kernel(kernel, dim3(grid), dim3(sm90_threads), L::dynamic_bytes, stream, pdl, map_a, map_b,
                                   map_b_extra, p));
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
      auto kernel = gemm_sm90_e4m3_blockscale_kernel<N, K, EPI, sm90_tiling<N, EPI>::nchunk, sm90_tiling<N, EPI>::stages>;
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
 * instantiating the kernel, so a dispatcher may name any shape. */
template <int N, int K, epilogue EPI>
fp8moe_status gemm_sm90_launch(const grouped_gemm_params &p, cudaStream_t stream, bool pdl = false) {
  if constexpr (!gemm_sm90_supported<N, K, EPI>()) {
    (void)p; (void)stream; (void)pdl;
    return FP8MOE_ERROR_INVALID_SHAPE;
  } else {
    return gemm_sm90_launch_config<N, K, EPI, sm90_tiling<N, EPI>::nchunk, sm90_tiling<N, EPI>::stages>(p, stream, pdl);
  }
}

} // namespace detail
} // namespace fp8moe

#endif /* FP8MOE_DETAIL_GEMM_SM90_E4M3_BLOCKSCALE_CUH */
