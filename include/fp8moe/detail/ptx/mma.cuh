/* fp8moe/detail/ptx/mma.cuh - one small named wrapper per PTX instruction of
 * the portable GEMM path (sm_80 and newer): cp.async copies and their
 * groups (one with an L2 prefetch hint for streamed weights), ldmatrix, and
 * the e4m3 tensor-core mma.sync. The Hopper path uses
 * the 4-byte cp.async from here too (its scales); its own instructions are in
 * sm90.cuh.
 *
 * Kernel bodies never contain raw asm: they call these, so each
 * instruction's operands and semantics are stated once. Bodies are guarded
 * by the architecture that has the instruction; elsewhere they compile to
 * nothing, so one translation unit builds for every -gencode target (the
 * kernels that call them are guarded too and never run there).
 */
#ifndef FP8MOE_DETAIL_PTX_MMA_CUH
#define FP8MOE_DETAIL_PTX_MMA_CUH

#include <stdint.h>

#include "../common.cuh" /* smem_addr */

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
#define FP8MOE__HAS_MMA_E4M3 1
#else
#define FP8MOE__HAS_MMA_E4M3 0
#endif

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define FP8MOE__HAS_CP_ASYNC 1
#else
#define FP8MOE__HAS_CP_ASYNC 0
#endif

namespace fp8moe {
namespace detail {
namespace ptx {

/* cp.async.cg (16 bytes, global -> shared, bypassing L1). When `valid` is
 * false nothing is read and the 16 bytes are zeroed (src-size 0), so `src`
 * need not point at anything. */
static __device__ __forceinline__ void cp_async_16(uint32_t dst, const void *src, bool valid) {
#if FP8MOE__HAS_CP_ASYNC
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0)
               : "memory");
#endif
}

/* The same with a 256-byte L2 prefetch hint: for streams of weights read
 * once, where each copy of a warp covers 64 bytes of a row and the next
 * copies the rest of its 256 bytes. */
static __device__ __forceinline__ void cp_async_16_stream(uint32_t dst, const void *src, bool valid) {
#if FP8MOE__HAS_CP_ASYNC
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0)
               : "memory");
#endif
}

/* cp.async.ca (4 bytes, global -> shared): one scale. When `valid` is false
 * nothing is read and the 4 bytes are zeroed. */
static __device__ __forceinline__ void cp_async_4(uint32_t dst, const void *src, bool valid) {
#if FP8MOE__HAS_CP_ASYNC
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 4 : 0)
               : "memory");
#endif
}

/* Close the group of this thread's cp.async copies issued since the last. */
static __device__ __forceinline__ void cp_async_commit() {
#if FP8MOE__HAS_CP_ASYNC
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

/* Wait until at most N of this thread's committed groups are pending. */
template <int N>
static __device__ __forceinline__ void cp_async_wait() {
#if FP8MOE__HAS_CP_ASYNC
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

/* ldmatrix.x4: four 8x8 b16 matrices; lane l gives the row address of
 * matrix l/8. With 8-bit data a lane's 32-bit word is four consecutive k of
 * one row, which is the mma fragment layout. */
static __device__ __forceinline__ void ldmatrix_x4(uint32_t addr, uint32_t (&r)[4]) {
#if FP8MOE__HAS_CP_ASYNC
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#else
  r[0] = r[1] = r[2] = r[3] = 0u;
  (void)addr;
#endif
}

/* mma.sync m16n8k32: d += a (16x32 e4m3, row) * b (32x8 e4m3, col), fp32
 * accumulate. */
static __device__ __forceinline__ void mma_e4m3_16832(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                                      uint32_t b1) {
#if FP8MOE__HAS_MMA_E4M3
  asm volatile("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 "
               "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  (void)d; (void)a; (void)b0; (void)b1;
#endif
}

} // namespace ptx
} // namespace detail
} // namespace fp8moe

#endif /* FP8MOE_DETAIL_PTX_MMA_CUH */
