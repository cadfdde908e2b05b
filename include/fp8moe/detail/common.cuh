/* fp8moe/detail/common.cuh - device-side basics every stage shares.
 *
 * CUDA error plumbing (a failed launch becomes FP8MOE_ERROR_CUDA, never an
 * abort), the hardware conversions the kernels use (their host twins are in
 * numeric.h and are tested against these bit for bit), and a cached read of
 * the current device's properties (no synchronization, no allocation).
 */
#ifndef FP8MOE_DETAIL_COMMON_CUH
#define FP8MOE_DETAIL_COMMON_CUH

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <stdint.h>

#include <atomic>

#include "../fp8moe.h"

namespace fp8moe {
/* C++ helpers that are not part of the API live in fp8moe::detail (the C
 * convention fp8moe__ would put a double underscore in C++ names, which C++
 * reserves). */
namespace detail {

/* Return FP8MOE_ERROR_CUDA from the enclosing host function if a CUDA call
 * failed; the (non-sticky) last-error state is cleared so the caller's next
 * CUDA call is not blamed for it. */
#define FP8MOE__CHECK_CUDA(expr)                          \
  do {                                                    \
    cudaError_t fp8moe__e = (expr);                       \
    if (fp8moe__e != cudaSuccess) {                       \
      (void)cudaGetLastError();                           \
      return FP8MOE_ERROR_CUDA;                           \
    }                                                     \
  } while (0)

/* Same, for the launch just made. */
#define FP8MOE__CHECK_LAUNCH() FP8MOE__CHECK_CUDA(cudaGetLastError())

/* The status of a failed query of the current device: FP8MOE_ERROR_NO_DEVICE
 * when the machine has no CUDA device this build can use (none, a driver
 * too old for the runtime, devices unavailable), FP8MOE_ERROR_CUDA for any
 * other failure. Clears the last-error state. */
static inline fp8moe_status device_query_status(cudaError_t e) {
  (void)cudaGetLastError();
  switch (e) {
  case cudaSuccess: return FP8MOE_OK;
  case cudaErrorNoDevice:
  case cudaErrorInsufficientDriver:
  case cudaErrorSystemDriverMismatch:
  case cudaErrorCompatNotSupportedOnDevice:
  case cudaErrorDevicesUnavailable: return FP8MOE_ERROR_NO_DEVICE;
  default: return FP8MOE_ERROR_CUDA;
  }
}

/* What a launch needs to know about the current device. Read once per device
 * per process: cudaGetDevice and cudaDeviceGetAttribute neither allocate nor
 * synchronize, and the cache makes a run cost no attribute queries. */
struct device_info {
  int sm_count;
  int cc;            /* major*10 + minor */
  int max_smem_optin;
};

static inline cudaError_t current_device_info(device_info *out) {
  enum { max_devices = 64 };
  /* Threads of a server may call concurrently: the flag is published with
   * release after the entry is written, and read with acquire. Two threads
   * filling the same entry write the same values. */
  static device_info cache[max_devices];
  static std::atomic<int> cached[max_devices];
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  if (dev >= 0 && dev < max_devices && cached[dev].load(std::memory_order_acquire)) {
    *out = cache[dev];
    return cudaSuccess;
  }
  device_info d;
  int major = 0, minor = 0;
  if ((e = cudaDeviceGetAttribute(&d.sm_count, cudaDevAttrMultiProcessorCount, dev)) != cudaSuccess) return e;
  if ((e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev)) != cudaSuccess) return e;
  if ((e = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev)) != cudaSuccess) return e;
  if ((e = cudaDeviceGetAttribute(&d.max_smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev)) != cudaSuccess)
    return e;
  d.cc = major * 10 + minor;
  if (dev >= 0 && dev < max_devices && !cached[dev].load(std::memory_order_acquire)) {
    cache[dev] = d;
    cached[dev].store(1, std::memory_order_release);
  }
  *out = d;
  return cudaSuccess;
}

/* Fill `dev` for the current device, or return the status of the failure
 * from the enclosing host function (device_query_status). */
#define FP8MOE__GET_DEVICE_INFO(dev)                                                      \
  do {                                                                                    \
    fp8moe_status fp8moe__s = device_query_status(current_device_info(&(dev)));           \
    if (fp8moe__s != FP8MOE_OK) return fp8moe__s;                                         \
  } while (0)

static inline int ceil_div(long long a, long long b) { return (int)((a + b - 1) / b); }

/* Shared-window address of a shared-memory pointer: what every .shared PTX
 * operand of the GEMM kernels takes (both paths' wrappers use this one). */
static __device__ __forceinline__ uint32_t smem_addr(const void *p) {
  return (uint32_t)__cvta_generic_to_shared(p);
}

/* ---- programmatic dependent launch (PDL, sm_90 and newer) ----
 *
 * With fp8moe_args.enable_pdl on a cc >= 9.0 device, every kernel of a run
 * after the first is launched with programmatic stream serialization: the
 * GPU may start it while the kernel before it on the stream is still
 * running, so its launch, block scheduling and prologue overlap that
 * kernel's tail instead of following it. Every fp8moe kernel therefore calls
 * griddep_wait() before it reads anything the kernel before it wrote (the
 * grouped GEMMs read their group offsets, written two kernels back, and
 * load weights ahead of it: params.cuh, early_weights) (it returns
 * once the preceding grid has completed and its writes are visible; it is a
 * no-op in a kernel not launched that way, and compiles to nothing before
 * sm_90), and griddep_launch_dependents() right after it, which lets the
 * next kernel be scheduled. Kernels wait before they touch their inputs, so
 * results are the same bit for bit with and without PDL; in a CUDA graph the
 * programmatic edges are captured as such. */
static __device__ __forceinline__ void griddep_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

static __device__ __forceinline__ void griddep_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

/* Launch `kernel` on `stream`, with programmatic stream serialization when
 * pdl is set (the caller decides: cc >= 9.0 and enable_pdl), in clusters of
 * `cluster` CTAs along x when cluster > 1 (grid.x a multiple of it), as a
 * cooperative launch (every CTA resident, grid-wide barriers allowed) when
 * cooperative is set. */
template <typename... KernelArgs, typename... Args>
static inline cudaError_t launch_kernel_ex(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem,
                                           cudaStream_t stream, bool pdl, unsigned cluster, bool cooperative,
                                           Args &&...args) {
  cudaLaunchAttribute attr[3];
  unsigned n = 0;
  if (cooperative) {
    attr[n].id = cudaLaunchAttributeCooperative;
    attr[n].val.cooperative = 1;
    n++;
  }
  if (pdl) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n].val.programmaticStreamSerializationAllowed = 1;
    n++;
  }
  if (cluster > 1) {
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n].val.clusterDim.x = cluster;
    attr[n].val.clusterDim.y = 1;
    attr[n].val.clusterDim.z = 1;
    n++;
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = n;
  return cudaLaunchKernelEx(&cfg, kernel, static_cast<Args &&>(args)...);
}

template <typename... KernelArgs, typename... Args>
static inline cudaError_t launch_kernel(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem,
                                        cudaStream_t stream, bool pdl, Args &&...args) {
  return launch_kernel_ex(kernel, grid, block, smem, stream, pdl, 1u, false, static_cast<Args &&>(args)...);
}

/* ---- conversions (device) ---- */

static __device__ __forceinline__ float bf16_bits_to_float(uint16_t b) {
  return __uint_as_float((uint32_t)b << 16);
}

static __device__ __forceinline__ uint16_t float_to_bf16_bits(float f) {
  __nv_bfloat16 h = __float2bfloat16_rn(f);
  return *reinterpret_cast<uint16_t *>(&h);
}

static __device__ __forceinline__ float e4m3_to_float(uint8_t v) {
  __half_raw h = __nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)v, __NV_E4M3);
  return __half2float(*reinterpret_cast<__half *>(&h));
}

/* Round to nearest even, saturate to +-448, NaN -> 0x7F (cvt.rn.satfinite). */
static __device__ __forceinline__ uint8_t float_to_e4m3(float f) {
  return (uint8_t)__nv_cvt_float_to_fp8(f, __NV_SATFINITE, __NV_E4M3);
}

/* Two at once: low byte from lo, high byte from hi. */
static __device__ __forceinline__ uint16_t float2_to_e4m3x2(float lo, float hi) {
  return (uint16_t)__nv_cvt_float2_to_fp8x2(make_float2(lo, hi), __NV_SATFINITE, __NV_E4M3);
}

/* Two values of a block quantized with its scale (numeric.h's rule:
 * fp8moe_quantize_e4m3 of each, with the hardware conversion). */
static __device__ __forceinline__ uint16_t e4m3x2_quantize(float lo, float hi, float scale) {
  return float2_to_e4m3x2(fp8moe__div_rn(lo, scale), fp8moe__div_rn(hi, scale));
}

static __device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

static __device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

} // namespace detail
} // namespace fp8moe

#endif /* FP8MOE_DETAIL_COMMON_CUH */
