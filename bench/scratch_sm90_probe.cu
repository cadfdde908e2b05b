/* bench/scratch_sm90_probe.cu - scratch timing probe of the sm90 grouped GEMM
 * (not part of the library or the test suite). Runs the DeepSeek shapes at
 * decode and prefill sizes and prints the median time. Built by
 * scratch_sm90_probe.sh, once per PROBE mode, against a patched copy of the
 * header: PROBE=1 skips the wgmmas (the load pipeline alone), PROBE=2 skips
 * the TMA loads (the consumers alone), PROBE=3 skips both (barrier overhead).
 *   usage: scratch_sm90_probe [case ...]   cases: g1d g1D g1p g2d g2D g2p g2p256
 */
#include <fp8moe/gemm_sm90_e4m3_blockscale.cuh>

#include <algorithm>
#include <stdio.h>
#include <string.h>
#include <vector>

#ifndef PROBE
#define PROBE 0
#endif

using namespace fp8moe::detail;

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { printf("%s: %s\n", #x, cudaGetErrorString(e_)); exit(1); } } while (0)

__global__ void fill_fp8(uint8_t *p, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    uint64_t z = (i + 1) * 0x9e3779b97f4a7c15ull ^ seed;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    uint8_t v = (uint8_t)(z >> 29);
    if ((v & 0x7F) == 0x7F) v &= 0xFE;
    p[i] = v;
  }
}
__global__ void fill_scale(float *p, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    p[i] = (1.0f + (float)(i % 7)) / 256.0f;
}

template <int N, int K, epilogue EPI, int NC, int ST>
static void bench(const char *name, int groups, int rows, int reps) {
  const int m = groups * rows, KB = K / 128;
  uint8_t *A, *B, *C;
  float *sa, *sb, *cs;
  int *off;
  size_t cb = EPI == epilogue::swiglu_quant ? (size_t)m * N / 2 : (size_t)m * N * (EPI == epilogue::store_bf16 ? 2 : 4);
  CK(cudaMalloc(&A, (size_t)m * K)); CK(cudaMalloc(&B, (size_t)groups * N * K)); CK(cudaMalloc(&C, cb));
  CK(cudaMalloc(&sa, (size_t)KB * m * 4)); CK(cudaMalloc(&sb, (size_t)groups * (N / 128) * KB * 4));
  CK(cudaMalloc(&cs, (size_t)(N / 256 + 1) * m * 4)); CK(cudaMalloc(&off, (groups + 1) * 4));
  std::vector<int> o(groups + 1);
  for (int g = 0; g <= groups; g++) o[g] = g * rows;
  CK(cudaMemcpy(off, o.data(), o.size() * 4, cudaMemcpyHostToDevice));
  fill_fp8<<<2048, 256>>>(A, (size_t)m * K, 1);
  fill_fp8<<<2048, 256>>>(B, (size_t)groups * N * K, 2);
  fill_scale<<<256, 256>>>(sa, (size_t)KB * m);
  fill_scale<<<256, 256>>>(sb, (size_t)groups * (N / 128) * KB);
  grouped_gemm_params p = {A, sa, m, B, sb, off, groups, m, C, cs, m};
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0); cudaEventCreate(&e1);
  std::vector<float> ms;
  for (int i = 0; i < reps + 2; i++) {
    cudaEventRecord(e0);
    fp8moe_status s = gemm_sm90_launch_config<N, K, EPI, NC, ST>(p, 0);
    cudaEventRecord(e1);
    if (s != FP8MOE_OK) { printf("launch: %s\n", fp8moe_status_string(s)); exit(1); }
    CK(cudaEventSynchronize(e1));
    float t; cudaEventElapsedTime(&t, e0, e1);
    if (i >= 2) ms.push_back(t);
  }
  CK(cudaGetLastError());
  std::sort(ms.begin(), ms.end());
  double t = ms[ms.size() / 2] * 1e-3;
  double bytes = (double)m * K + (double)groups * N * K + (double)cb;
  printf("PROBE=%d %-28s G=%3d x %4d: %9.2f us  %7.1f TFLOP/s  %7.1f GB/s\n", PROBE, name, groups, rows, t * 1e6,
         2.0 * m * N * (double)K / t * 1e-12, bytes / t * 1e-9);
  cudaFree(A); cudaFree(B); cudaFree(C); cudaFree(sa); cudaFree(sb); cudaFree(cs); cudaFree(off);
}

int main(int argc, char **argv) {
  const char *def[] = {"g1d", "g1D", "g1p", "g2d", "g2D", "g2p", "g2p256"};
  std::vector<const char *> cases(def, def + 7);
  int reps = 10;
  if (argc > 1) { cases.assign(argv + 1, argv + argc); reps = 3; }
  for (const char *c : cases) {
    if (!strcmp(c, "g1d")) bench<4096, 7168, epilogue::swiglu_quant, 2, 4>("GEMM1 swiglu", 8, 8, reps);
    if (!strcmp(c, "g1D")) bench<4096, 7168, epilogue::swiglu_quant, 2, 4>("GEMM1 swiglu", 256, 4, reps);
    if (!strcmp(c, "g1p")) bench<4096, 7168, epilogue::swiglu_quant, 2, 4>("GEMM1 swiglu", 32, 4096, reps);
    if (!strcmp(c, "g2d")) bench<7168, 2048, epilogue::store_bf16, 1, 6>("GEMM2 bf16 BN128", 8, 8, reps);
    if (!strcmp(c, "g2D")) bench<7168, 2048, epilogue::store_bf16, 1, 6>("GEMM2 bf16 BN128", 256, 4, reps);
    if (!strcmp(c, "g2p")) bench<7168, 2048, epilogue::store_bf16, 1, 6>("GEMM2 bf16 BN128", 32, 4096, reps);
    if (!strcmp(c, "g2p256")) bench<7168, 2048, epilogue::store_bf16, 2, 4>("GEMM2 bf16 BN256", 32, 4096, reps);
  }
  return 0;
}
