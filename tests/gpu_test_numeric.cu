/* tests/gpu_test_numeric.cu - the kernels' conversions against numeric.h, bit for bit.
 *
 * The CPU reference can only be as exact as its rounding matches the GPU's.
 * This runs every one of the 2^32 fp32 bit patterns through the device
 * conversions of common.cuh (cvt.rn.satfinite e4m3, cvt.rn bf16, and the
 * paired e4m3x2 form the epilogues use) and through the host functions of
 * numeric.h compiled for the device (they are __host__ __device__ under nvcc),
 * and counts the patterns where they differ: the count must be zero. The
 * decoders (e4m3 and bf16 to fp32) are compared on all their codes, on the
 * device and against the host build of numeric.h.
 *
 * Canaries keep the sweep honest: the number of patterns visited must be
 * exactly 2^32, and exactly the 2*(2^23-1) fp32 NaN patterns may map to the
 * e4m3 NaN 0x7F on the device.
 */
#include "gpu_util.h"

#include <fp8moe/detail/common.cuh>

#include <stdio.h>

namespace {

using fp8moe::detail::bf16_bits_to_float;
using fp8moe::detail::e4m3_to_float;
using fp8moe::detail::float2_to_e4m3x2;
using fp8moe::detail::float_to_bf16_bits;
using fp8moe::detail::float_to_e4m3;

enum { K_E4M3, K_BF16, K_E4M3X2_LO, K_E4M3X2_HI, K_KINDS };
static const char *const kind_name[K_KINDS] = {"float_to_e4m3", "float_to_bf16_bits", "float2_to_e4m3x2 (low byte)",
                                               "float2_to_e4m3x2 (high byte)"};

struct sweep_counters {
  unsigned long long mismatches[K_KINDS];
  /* smallest mismatching pattern: (bits << 32) | (device << 16) | host */
  unsigned long long first[K_KINDS];
  unsigned long long visited;
  unsigned long long e4m3_nan; /* patterns the device mapped to 0x7F */
};

/* The partner of pattern u in the paired conversion: a bijection of the
 * 32-bit patterns (odd multiplier), so the high lane sees every pattern too. */
__host__ __device__ static inline uint32_t partner(uint32_t u) { return u * 0x9e3779b1u + 0x7f4a7c15u; }

__device__ static inline void note(sweep_counters *c, int kind, uint32_t u, unsigned dev, unsigned host) {
  atomicAdd(&c->mismatches[kind], 1ull);
  atomicMin(&c->first[kind], ((unsigned long long)u << 32) | ((unsigned long long)dev << 16) | host);
}

__global__ void sweep_fp32(unsigned long long base, unsigned long long count, sweep_counters *c) {
  unsigned long long visited = 0, nan = 0;
  for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < count;
       i += (unsigned long long)gridDim.x * blockDim.x) {
    uint32_t u = (uint32_t)(base + i);
    float f = __uint_as_float(u);

    unsigned d8 = float_to_e4m3(f), h8 = fp8moe_e4m3_from_float(f);
    if (d8 != h8) note(c, K_E4M3, u, d8, h8);
    nan += d8 == 0x7fu;

    unsigned d16 = float_to_bf16_bits(f), h16 = fp8moe_bf16_from_float(f);
    if (d16 != h16) note(c, K_BF16, u, d16, h16);

    uint32_t v = partner(u);
    float g = __uint_as_float(v);
    unsigned x2 = float2_to_e4m3x2(f, g);
    if ((x2 & 0xffu) != h8) note(c, K_E4M3X2_LO, u, x2 & 0xffu, h8);
    unsigned hg = fp8moe_e4m3_from_float(g);
    if ((x2 >> 8) != hg) note(c, K_E4M3X2_HI, v, x2 >> 8, hg);
    visited++;
  }
  /* one atomic per warp for the canaries */
  for (int o = 16; o > 0; o >>= 1) {
    visited += __shfl_xor_sync(0xffffffffu, visited, o);
    nan += __shfl_xor_sync(0xffffffffu, nan, o);
  }
  if ((threadIdx.x & 31) == 0) {
    atomicAdd(&c->visited, visited);
    atomicAdd(&c->e4m3_nan, nan);
  }
}

/* Both decoders on the device, and the host functions built for the device. */
__global__ void decode_all(float *e4m3_dev, float *e4m3_hd, float *bf16_dev, float *bf16_hd) {
  unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < 256) {
    e4m3_dev[i] = e4m3_to_float((uint8_t)i);
    e4m3_hd[i] = fp8moe_e4m3_to_float((uint8_t)i);
  }
  if (i < 65536) {
    bf16_dev[i] = bf16_bits_to_float((uint16_t)i);
    bf16_hd[i] = fp8moe_bf16_to_float((uint16_t)i);
  }
}

/* Same value: identical bits, or both NaN (NaN payloads may differ between
 * the hardware path and numeric.h; both are NaN to every consumer). */
static bool same_value(float a, float b) {
  if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
  return fp8moe__float_bits(a) == fp8moe__float_bits(b);
}

} // namespace

TestSuite(gpu_numeric, .init = fp8moe_test_require_gpu, .timeout = 600);

Test(gpu_numeric, decoders_match_host) {
  float *d = dev_alloc<float>(256 * 2 + 65536 * 2);
  decode_all<<<65536 / 256, 256>>>(d, d + 256, d + 512, d + 512 + 65536);
  CUDA_OK(cudaGetLastError());
  CUDA_OK(cudaDeviceSynchronize());
  float *h = (float *)malloc(sizeof(float) * (256 * 2 + 65536 * 2));
  cr_assert_not_null(h);
  dev_download(h, d, 256 * 2 + 65536 * 2);
  const float *e_dev = h, *e_hd = h + 256, *b_dev = h + 512, *b_hd = h + 512 + 65536;

  int nan_codes = 0;
  for (unsigned c = 0; c < 256; c++) {
    float host = fp8moe_e4m3_to_float((uint8_t)c);
    cr_assert(same_value(e_dev[c], host), "e4m3 0x%02x: device %a (0x%08x), host %a (0x%08x)", c, (double)e_dev[c],
              fp8moe__float_bits(e_dev[c]), (double)host, fp8moe__float_bits(host));
    cr_assert(same_value(e_hd[c], host), "e4m3 0x%02x: numeric.h on the device %a, on the host %a", c,
              (double)e_hd[c], (double)host);
    nan_codes += isnan(e_dev[c]) ? 1 : 0;
  }
  cr_assert_eq(nan_codes, 2, "e4m3 has exactly two NaN codes (0x7F, 0xFF); the device decoded %d", nan_codes);
  cr_assert_eq(e_dev[0x7e], 448.0f);
  cr_assert_eq(fp8moe__float_bits(e_dev[0x80]), 0x80000000u);

  for (unsigned b = 0; b < 65536; b++) {
    float host = fp8moe_bf16_to_float((uint16_t)b);
    /* widening is exact, NaN payloads included: compare bits */
    cr_assert_eq(fp8moe__float_bits(b_dev[b]), fp8moe__float_bits(host), "bf16 0x%04x: device 0x%08x, host 0x%08x", b,
                 fp8moe__float_bits(b_dev[b]), fp8moe__float_bits(host));
    cr_assert_eq(fp8moe__float_bits(b_hd[b]), fp8moe__float_bits(host));
  }
  free(h);
  CUDA_OK(cudaFree(d));
}

/* All 2^32 fp32 patterns, in chunks of 2^30 (each launch well under a
 * second, so no watchdog can interfere). */
Test(gpu_numeric, every_fp32_pattern_matches_host) {
  sweep_counters init;
  memset(&init, 0, sizeof init);
  for (int k = 0; k < K_KINDS; k++) init.first[k] = ~0ull;
  sweep_counters *dc = dev_upload(&init, 1);

  int dev = 0, sms = 0;
  CUDA_OK(cudaGetDevice(&dev));
  CUDA_OK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  cr_assert_gt(sms, 0);
  const unsigned long long chunk = 1ull << 30;
  for (unsigned long long base = 0; base < (1ull << 32); base += chunk) {
    sweep_fp32<<<sms * 8, 256>>>(base, chunk, dc);
    CUDA_OK(cudaGetLastError());
    CUDA_OK(cudaDeviceSynchronize());
  }
  sweep_counters c;
  dev_download(&c, dc, 1);
  CUDA_OK(cudaFree(dc));

  cr_assert_eq(c.visited, 1ull << 32, "the sweep visited %llu patterns, not 2^32", c.visited);
  cr_assert_eq(c.e4m3_nan, 2ull * ((1ull << 23) - 1), "%llu patterns became e4m3 NaN on the device, want the %llu fp32 NaNs",
               c.e4m3_nan, 2ull * ((1ull << 23) - 1));
  bool ok = true;
  for (int k = 0; k < K_KINDS; k++) {
    if (!c.mismatches[k]) continue;
    ok = false;
    uint32_t u = (uint32_t)(c.first[k] >> 32);
    fprintf(stderr, "%s: %llu mismatches; first at fp32 0x%08x (%a): device 0x%llx, numeric.h 0x%llx\n",
            kind_name[k], c.mismatches[k], u, (double)fp8moe__bits_float(u), (c.first[k] >> 16) & 0xffffull,
            c.first[k] & 0xffffull);
  }
  cr_assert(ok, "device and host conversions differ (details above)");
}
