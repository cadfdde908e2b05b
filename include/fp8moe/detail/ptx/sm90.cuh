/* fp8moe/detail/ptx/sm90.cuh - one small named wrapper per Hopper PTX
 * instruction the sm_90a GEMM uses: mbarriers (and the cp.async arrival on
 * one), TMA bulk tensor loads (multicast too), clusters, async-proxy
 * fences, wgmma (fences,
 * commit/wait, the e4m3 MMA itself, shared-memory matrix descriptors),
 * setmaxnreg and elect.sync. The 4-byte cp.async it shares with the
 * portable path is in mma.cuh.
 *
 * Kernel bodies never contain raw asm: they call these, so each instruction's
 * operands and semantics are stated once, next to the PTX ISA section they
 * come from. Every wrapper body is guarded by __CUDA_ARCH_FEAT_SM90_ALL (the
 * macro nvcc defines for compute_90a only): wgmma and setmaxnreg exist on
 * sm_90a alone, not on sm_90, sm_89 or sm_100a. On any other target the
 * wrappers compile to nothing, so a translation unit built for several
 * -gencode targets at once still compiles; the kernels that call them are
 * themselves guarded and never run there.
 */
#ifndef FP8MOE_DETAIL_PTX_SM90_CUH
#define FP8MOE_DETAIL_PTX_SM90_CUH

#include <cuda.h> /* CUtensorMap (the type only; nothing links libcuda) */
#include <stdint.h>

#include "../common.cuh" /* smem_addr */

namespace fp8moe {
namespace detail {
namespace sm90 {

/* ---- mbarrier ------------------------------------------------------- */

/* mbarrier.init: `count` arrivals complete a phase. */
static __device__ __forceinline__ void mbar_init(uint64_t *bar, uint32_t count) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count) : "memory");
#endif
}

/* Make initialized barriers visible to the other threads and to the async
 * proxy (TMA's complete_tx) before anyone uses them. */
static __device__ __forceinline__ void mbar_fence_init() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
#endif
}

/* One arrival, and `bytes` more expected transaction bytes for this phase. */
static __device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t *bar, uint32_t bytes) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes)
               : "memory");
#endif
}

/* `bytes` more expected transaction bytes for this phase, no arrival. */
static __device__ __forceinline__ void mbar_expect_tx(uint64_t *bar, uint32_t bytes) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
#endif
}

/* One arrival. */
static __device__ __forceinline__ void mbar_arrive(uint64_t *bar) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(bar)) : "memory");
#endif
}

/* The scope of an mbarrier's release (arrive) or acquire (wait): cta, or
 * cluster for signals that carry stores into another CTA's shared memory. */
enum class mbar_scope { cta, cluster };

/* mbarrier.try_wait.parity: true once the phase of parity `parity` has
 * completed (a fresh barrier counts its "previous" phase, parity 1, as
 * complete, which is how a producer's first wait on an empty slot passes).
 * mbar_scope::cluster acquires at cluster scope: for a phase completed by
 * another CTA's cluster-scope release (mbar_arrive_remote), whose earlier
 * stores into this CTA's shared memory are then visible. */
#define FP8MOE__MBAR_TRY_WAIT_ASM(SEM)                                  \
  "{\n"                                                                 \
  ".reg .pred p;\n"                                                     \
  "mbarrier.try_wait.parity" SEM ".shared::cta.b64 p, [%1], %2;\n"      \
  "selp.u32 %0, 1, 0, p;\n"                                             \
  "}\n"
template <mbar_scope S = mbar_scope::cta>
static __device__ __forceinline__ bool mbar_try_wait(uint64_t *bar, uint32_t parity) {
  uint32_t done = 1;
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  if constexpr (S == mbar_scope::cta)
    asm volatile(FP8MOE__MBAR_TRY_WAIT_ASM("") : "=r"(done) : "r"(smem_addr(bar)), "r"(parity) : "memory");
  else
    asm volatile(FP8MOE__MBAR_TRY_WAIT_ASM(".acquire.cluster") : "=r"(done) : "r"(smem_addr(bar)), "r"(parity)
                 : "memory");
#endif
  return done != 0;
}
#undef FP8MOE__MBAR_TRY_WAIT_ASM

template <mbar_scope S = mbar_scope::cta>
static __device__ __forceinline__ void mbar_wait(uint64_t *bar, uint32_t parity) {
  while (!mbar_try_wait<S>(bar, parity)) {
  }
}

/* ---- TMA ------------------------------------------------------------ */

/* prefetch.tensormap: pull a __grid_constant__ tensor map into the
 * descriptor cache before the first load that uses it. */
static __device__ __forceinline__ void tma_prefetch_map(const CUtensorMap *map) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("prefetch.tensormap [%0];" ::"l"((uint64_t)map) : "memory");
#endif
}

/* cp.async.bulk.tensor.2d: the box at (c0 = inner, c1 = outer) of `map`
 * into shared memory at `dst`, completing `bytes` of transactions on `bar`.
 * Out-of-range elements are zero-filled and still count toward the bytes. */
static __device__ __forceinline__ void tma_load_2d(void *dst, const CUtensorMap *map, uint64_t *bar, int c0,
                                                   int c1) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];" ::
          "r"(smem_addr(dst)),
      "l"((uint64_t)map), "r"(smem_addr(bar)), "r"(c0), "r"(c1)
      : "memory");
#endif
}

/* The same box written to the same shared-memory offset of every CTA in
 * `cta_mask` (bit r: cluster rank r), each completing `bytes` on its own
 * mbarrier at `bar`'s offset. */
static __device__ __forceinline__ void tma_load_2d_multicast(void *dst, const CUtensorMap *map, uint64_t *bar,
                                                             int c0, int c1, uint16_t cta_mask) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
      " [%0], [%1, {%3, %4}], [%2], %5;" ::"r"(smem_addr(dst)),
      "l"((uint64_t)map), "r"(smem_addr(bar)), "r"(c0), "r"(c1), "h"(cta_mask)
      : "memory");
#else
  (void)dst; (void)map; (void)bar; (void)c0; (void)c1; (void)cta_mask;
#endif
}

/* cp.async.mbarrier.arrive.noinc: one arrival on `bar` once all of this
 * thread's earlier cp.async copies have landed (noinc: the arrival is part
 * of the count the barrier was initialized with). */
static __device__ __forceinline__ void cp_async_mbar_arrive(uint64_t *bar) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(smem_addr(bar)) : "memory");
#endif
}

/* fence.proxy.async.shared::cta: order this thread's generic-proxy shared
 * memory accesses before later async-proxy (TMA / wgmma) ones. */
static __device__ __forceinline__ void fence_proxy_async_shared() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
#endif
}

/* ---- clusters ------------------------------------------------------- */

/* This CTA's rank in its cluster. */
static __device__ __forceinline__ uint32_t cluster_ctarank() {
  uint32_t r = 0;
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
#endif
  return r;
}

/* barrier.cluster arrive (release) + wait (acquire), by every thread of
 * every CTA of the cluster: orders barrier initialization before the peers'
 * first remote use, and keeps a CTA's shared memory alive until its peers
 * are done with it. */
static __device__ __forceinline__ void cluster_sync() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("barrier.cluster.arrive.release.aligned;\n"
               "barrier.cluster.wait.acquire.aligned;" ::: "memory");
#endif
}

/* mapa: the shared::cluster address of the same variable in CTA `rank`. */
static __device__ __forceinline__ uint32_t cluster_map(const void *p, uint32_t rank) {
  uint32_t r = 0;
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(smem_addr(p)), "r"(rank));
#else
  (void)p; (void)rank;
#endif
  return r;
}

/* One arrival on an mbarrier of another CTA of the cluster (address from
 * cluster_map). mbar_scope::cta: no fence, for signals that publish no data
 * of this thread (a consumer's "stage read": its wgmma reads of the stage
 * are complete at the wgmma wait before it). mbar_scope::cluster: this
 * thread's earlier stores into that CTA's shared memory are visible to
 * whoever acquires the phase (mbar_wait<mbar_scope::cluster>); it costs a
 * GPU-wide memory fence (MEMBAR.ALL.GPU in SASS), so it is for rare
 * signals. */
template <mbar_scope S>
static __device__ __forceinline__ void mbar_arrive_remote(uint32_t cluster_addr) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  if constexpr (S == mbar_scope::cta)
    asm volatile("mbarrier.arrive.release.cta.shared::cluster.b64 _, [%0];" ::"r"(cluster_addr) : "memory");
  else
    asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];" ::"r"(cluster_addr) : "memory");
#else
  (void)cluster_addr;
#endif
}

/* st.shared::cluster: a 32-bit store into another CTA's shared memory of
 * the cluster (address from cluster_map). */
static __device__ __forceinline__ void st_shared_cluster_u32(uint32_t cluster_addr, uint32_t v) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("st.shared::cluster.u32 [%0], %1;" ::"r"(cluster_addr), "r"(v) : "memory");
#else
  (void)cluster_addr; (void)v;
#endif
}

/* ---- warp specialization -------------------------------------------- */

/* setmaxnreg: hand registers back (producer) or take them (consumers). The
 * whole warpgroup executes it; it needs a register cap at kernel entry
 * (__launch_bounds__(threads, 1)). */
template <int REGS>
static __device__ __forceinline__ void setmaxnreg_dec() {
  static_assert(REGS % 8 == 0 && REGS >= 24 && REGS <= 256, "setmaxnreg range");
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(REGS));
#endif
}

template <int REGS>
static __device__ __forceinline__ void setmaxnreg_inc() {
  static_assert(REGS % 8 == 0 && REGS >= 24 && REGS <= 256, "setmaxnreg range");
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(REGS));
#endif
}

/* bar.sync on named barrier `id` (1..15; 0 is __syncthreads) for `threads`
 * threads (a multiple of 32): a barrier among some warps of the CTA. */
static __device__ __forceinline__ void named_barrier_sync(uint32_t id, uint32_t threads) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
#else
  (void)id; (void)threads;
#endif
}

/* elect.sync: true in exactly one lane of the (fully active) warp. */
static __device__ __forceinline__ bool elect_one() {
  uint32_t pred = 0;
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n"
      ".reg .b32 r;\n"
      ".reg .pred p;\n"
      "elect.sync r|p, 0xffffffff;\n"
      "selp.u32 %0, 1, 0, p;\n"
      "}\n"
      : "=r"(pred));
#endif
  return pred != 0;
}

/* ---- wgmma ---------------------------------------------------------- */

/* Shared-memory matrix descriptor of a K-major operand tile laid out as TMA
 * writes it with CU_TENSOR_MAP_SWIZZLE_128B: rows of 128 bytes, 8-row
 * (1024-byte) swizzle atoms stacked along M/N. Fields: start address >> 4
 * (bits 0-13), leading byte offset >> 4 (16-29; unused for swizzled K-major,
 * set to 1), stride byte offset >> 4 (32-45: 1024 bytes between 8-row
 * groups), base offset 0 (49-51: the tile starts 1024-aligned), layout 1 =
 * 128-byte swizzle (62-63). Advancing K by 32 fp8 elements inside the atom
 * is adding 32 bytes (2 in the >>4 units) to the start address. */
static __device__ __forceinline__ uint64_t smem_desc_k_sw128(const void *tile) {
  uint64_t d = 0;
  d |= (uint64_t)((smem_addr(tile) & 0x3FFFFu) >> 4);
  d |= (uint64_t)1 << 16;
  d |= (uint64_t)(1024 >> 4) << 32;
  d |= (uint64_t)1 << 62;
  return d;
}

/* wgmma.fence: order earlier register writes of the accumulators before
 * the wgmma that reads them. */
static __device__ __forceinline__ void wgmma_fence() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#endif
}

static __device__ __forceinline__ void wgmma_commit() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
#endif
}

/* Wait until at most N committed wgmma groups are still pending. */
template <int N>
static __device__ __forceinline__ void wgmma_wait() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
#endif
}

/* Keep the compiler from moving accesses of an accumulator register across
 * the asynchronous wgmma that owns it. */
static __device__ __forceinline__ void fence_operand(float &r) { asm volatile("" : "+f"(r)::"memory"); }

/* wgmma.mma_async m64nNk32, e4m3 x e4m3 -> f32, both operands K-major in
 * shared memory, for the tile widths the GEMM uses (N = 64, 96, 128, 192).
 * d += A * B^T when accumulate != 0, d = A * B^T otherwise.
 * Accumulator layout (per thread of the warpgroup, warp w, lane l, N/2
 * registers): d[4j + {0,1}] is row 16w + l/4, columns 8j + 2(l%4) + {0,1};
 * d[4j + {2,3}] is the same columns of row 16w + l/4 + 8. */
static __device__ __forceinline__ void wgmma_m64n64k32_e4m3(float (&d)[32], uint64_t desc_a, uint64_t desc_b,
                                                             int accumulate) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, "
      "%8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, "
      "%24, %25, %26, %27, %28, %29, %30, %31},"
      " %32, %33, p, 1, 1;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
#else
  (void)d; (void)desc_a; (void)desc_b; (void)accumulate;
#endif
}

static __device__ __forceinline__ void wgmma_m64n96k32_e4m3(float (&d)[48], uint64_t desc_a, uint64_t desc_b,
                                                             int accumulate) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %50, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n96k32.f32.e4m3.e4m3 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, "
      "%8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, "
      "%24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, "
      "%40, %41, %42, %43, %44, %45, %46, %47},"
      " %48, %49, p, 1, 1;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47])
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
#else
  (void)d; (void)desc_a; (void)desc_b; (void)accumulate;
#endif
}

static __device__ __forceinline__ void wgmma_m64n128k32_e4m3(float (&d)[64], uint64_t desc_a, uint64_t desc_b,
                                                             int accumulate) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, "
      "%8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, "
      "%24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, "
      "%40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, "
      "%56, %57, %58, %59, %60, %61, %62, %63},"
      " %64, %65, p, 1, 1;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
#else
  (void)d; (void)desc_a; (void)desc_b; (void)accumulate;
#endif
}

static __device__ __forceinline__ void wgmma_m64n192k32_e4m3(float (&d)[96], uint64_t desc_a, uint64_t desc_b,
                                                             int accumulate) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %98, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n192k32.f32.e4m3.e4m3 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, "
      "%8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, "
      "%24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, "
      "%40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, "
      "%56, %57, %58, %59, %60, %61, %62, %63, "
      "%64, %65, %66, %67, %68, %69, %70, %71, "
      "%72, %73, %74, %75, %76, %77, %78, %79, "
      "%80, %81, %82, %83, %84, %85, %86, %87, "
      "%88, %89, %90, %91, %92, %93, %94, %95},"
      " %96, %97, p, 1, 1;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
        "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
        "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
        "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
        "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95])
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
#else
  (void)d; (void)desc_a; (void)desc_b; (void)accumulate;
#endif
}

static __device__ __forceinline__ void wgmma_m64n32k32_e4m3(float (&d)[16], uint64_t desc_a, uint64_t desc_b,
                                                             int accumulate) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k32.f32.e4m3.e4m3 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, "
      "%8, %9, %10, %11, %12, %13, %14, %15},"
      " %16, %17, p, 1, 1;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
#else
  (void)d; (void)desc_a; (void)desc_b; (void)accumulate;
#endif
}

/* The m64nNk32 wrapper for a width known at compile time. */
template <int N>
static __device__ __forceinline__ void wgmma_e4m3(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, int accumulate) {
  static_assert(N == 32 || N == 64 || N == 96 || N == 128 || N == 192,
                "wgmma widths wrapped here: 32, 64, 96, 128, 192");
  if constexpr (N == 32) wgmma_m64n32k32_e4m3(d, desc_a, desc_b, accumulate);
  else if constexpr (N == 64) wgmma_m64n64k32_e4m3(d, desc_a, desc_b, accumulate);
  else if constexpr (N == 96) wgmma_m64n96k32_e4m3(d, desc_a, desc_b, accumulate);
  else if constexpr (N == 128) wgmma_m64n128k32_e4m3(d, desc_a, desc_b, accumulate);
  else wgmma_m64n192k32_e4m3(d, desc_a, desc_b, accumulate);
}

} // namespace sm90
} // namespace detail
} // namespace fp8moe

#endif /* FP8MOE_DETAIL_PTX_SM90_CUH */
