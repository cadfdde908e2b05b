/* examples/ep_nccl.cu - expert parallelism over NCCL: each GPU runs its shard
 * of the experts, an all-reduce sums the partial outputs.
 *
 * Build (from the repository root; NCCL's headers and library on the default
 * paths, else add -I<nccl>/include -L<nccl>/lib):
 *   nvcc -std=c++17 -O3 -Iinclude -gencode arch=compute_90a,code=sm_90a \
 *        examples/ep_nccl.cu -o ep_nccl -lnccl
 * Run (scripts/gpu-ep.sh does both on the GPU machine):
 *   NCCL_NVLS_ENABLE=0 ./ep_nccl [num_tokens=512] [num_gpus=2] [bf16|fp32]
 *
 * What it does. A DeepSeek-V3 layer (E=256, K=8, H=7168, I=2048) with random
 * FP8 weights, the same T tokens and the same routed top-8 (packed) on every
 * GPU. GPU r of N holds experts [r*E/N, (r+1)*E/N) and calls
 *     dsv3_run_routed(args with local_expert_offset = r*E/N,
 *                     local_num_experts = E/N)
 * which computes only the slots routed to its experts, weighted and summed,
 * and writes exact zeros for tokens with none (SPEC section 2, step 1): a
 * partial bf16 output [T, H]. One all-reduce (sum) of the partials gives the
 * layer's output on every GPU. The same layer with all E experts on GPU 0 is
 * the reference: both all-reduce variants below must match it within SPEC's
 * tolerance (relative L2 <= 1e-2); the program prints the errors and times.
 *
 * bf16 or fp32 all-reduce. NCCL sums bf16 buffers in bf16: each reduction
 * step rounds, so a ring over N GPUs rounds a sum up to N-1 times on top of
 * the rounding of each partial. The fp32 variant widens each partial to fp32,
 * all-reduces fp32 (twice the bytes) and rounds once at the end. With N = 2
 * the two agree (one addition, one rounding either way); the gap grows with
 * N and with cancellation between partials. The example's output (the third
 * argument picks) is the fp32 variant by default: its error does not grow
 * with the number of GPUs, and its cost is small - 4*T*H bytes per GPU
 * instead of 2*T*H, next to a layer that reads E_loc*3*H*I bytes of weights
 * per GPU. Engines that all-reduce in bf16 to halve the bytes get the other
 * line of the printout (both variants are run, checked and timed).
 *
 * To 8 GPUs. `./ep_nccl 512 8` shards 32 experts per GPU (SPEC's EP shard,
 * rank 2 is "32 local at offset 64"). The code is per rank already; across
 * processes (one per GPU, MPI or torchrun), replace ncclCommInitAll by
 * ncclGetUniqueId on rank 0, a broadcast of the id, and ncclCommInitRank,
 * and drop the group calls around the per-rank loop.
 *
 * All-to-all instead. Here every GPU sees every token and sends T*H
 * partial sums through the all-reduce whatever the routing. With
 * data-parallel attention each GPU holds its own tokens, and each token
 * travels only to the GPUs that own its experts: examples/ep_alltoall.cu.
 */
#include <fp8moe/fp8moe.cuh>
#include <nccl.h>

#include "ep_util.cuh"

#include <string.h>
#include <time.h>

FP8MOE_DEFINE(dsv3, 256, 8, 7168, 2048);
using namespace epx;

__global__ void bf16_to_f32(const uint16_t *in, float *out, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    out[i] = __uint_as_float((uint32_t)in[i] << 16);
}

__global__ void f32_to_bf16(const float *in, uint16_t *out, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    __nv_bfloat16 b = __float2bfloat16_rn(in[i]);
    out[i] = *reinterpret_cast<uint16_t *>(&b);
  }
}

struct Rank {
  int dev;
  cudaStream_t stream;
  ncclComm_t comm;
  weights w;
  uint8_t *x;
  float *xs;
  int32_t *topk;
  uint16_t *partial;   /* this GPU's partial output, bf16 [T, H] */
  uint16_t *sum_bf16;  /* all-reduce in bf16 */
  float *acc;          /* the partial widened to fp32, all-reduced in place */
  uint16_t *sum_fp32;  /* acc rounded to bf16 */
  void *ws;
  size_t ws_bytes;
  fp8moe_args args;
  cudaEvent_t ev[3];
};

int main(int argc, char **argv) {
  const int T = argc > 1 ? atoi(argv[1]) : 512;
  int N = argc > 2 ? atoi(argv[2]) : 2;
  const int use_fp32 = !(argc > 3 && strcmp(argv[3], "bf16") == 0);
  /* This example never needs NVLink SHARP (multicast); leave it off unless
   * the caller's environment says otherwise. */
  setenv("NCCL_NVLS_ENABLE", "0", 0);

  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    printf("ep_nccl: no CUDA device here; nothing to run.\n");
    return 0;
  }
  if (T < 1 || N < 1 || E % N != 0) {
    fprintf(stderr, "usage: ep_nccl [num_tokens >= 1] [num_gpus dividing %d] [bf16|fp32]\n", E);
    return 2;
  }
  if (N > ndev) {
    fprintf(stderr, "ep_nccl: %d GPUs asked for, %d visible\n", N, ndev);
    return 2;
  }
  const int E_loc = E / N;
  uint64_t seed = getenv("FP8MOE_SEED") ? strtoull(getenv("FP8MOE_SEED"), NULL, 0) : (uint64_t)time(NULL);
  int nccl_version = 0;
  NCCL_CHECK(ncclGetVersion(&nccl_version));
  printf("ep_nccl: DeepSeek-V3 layer E=%d K=%d H=%d I=%d, T=%d tokens, %d GPU(s) x %d experts, NCCL %d, "
         "seed %llu (FP8MOE_SEED)\n",
         E, K, H, I, T, N, E_loc, nccl_version, (unsigned long long)seed);

  const std::vector<int32_t> packed = random_topk(T, seed);

  const size_t n_out = (size_t)T * H;
  std::vector<uint16_t> ref(n_out), got_bf16(n_out), got_fp32(n_out), other(n_out);

  /* ---- the reference: all E experts on GPU 0 ---- */
  std::vector<Rank> ranks(N);
  for (int r = 0; r < N; r++) {
    Rank &R = ranks[r];
    R.dev = r;
    CUDA_CHECK(cudaSetDevice(r));
    CUDA_CHECK(cudaStreamCreateWithFlags(&R.stream, cudaStreamNonBlocking));
    for (auto &e : R.ev) CUDA_CHECK(cudaEventCreate(&e));
    R.x = dev_alloc<uint8_t>(n_out);
    R.xs = dev_alloc<float>((size_t)(H / 128) * T);
    make_tokens(R.x, R.xs, 0, T, T, seed, R.stream);
    R.topk = dev_alloc<int32_t>(packed.size());
    CUDA_CHECK(cudaMemcpyAsync(R.topk, packed.data(), packed.size() * 4, cudaMemcpyHostToDevice, R.stream));
    R.ws_bytes = dsv3_workspace_size(T);
    CUDA_CHECK(cudaMalloc(&R.ws, R.ws_bytes));
    R.partial = dev_alloc<uint16_t>(n_out);
    memset(&R.args, 0, sizeof R.args);
    R.args.num_tokens = T;
    R.args.hidden_states = R.x;
    R.args.hidden_states_scale = R.xs;
    R.args.topk_packed = R.topk;
    R.args.output = R.partial;
  }

  CUDA_CHECK(cudaSetDevice(0));
  const float single_ms =
      whole_layer_reference(ranks[0].args, dsv3_run_routed, ranks[0].ws, ranks[0].ws_bytes, seed, ranks[0].stream,
                            20, ref.data());
  double ref_norm = 0;
  for (uint16_t v : ref) ref_norm += (double)fp8moe_bf16_to_float(v) * fp8moe_bf16_to_float(v);
  if (!(ref_norm > 0) || !isfinite(ref_norm)) {
    fprintf(stderr, "ep_nccl: the single-GPU output is zero or not finite (||ref||^2 = %g)\n", ref_norm);
    return 1;
  }
  printf("single GPU (all %d experts on GPU 0): %.3f ms per layer (median of 20)\n", E, single_ms);

  /* ---- the shards and the communicator ---- */
  for (int r = 0; r < N; r++) {
    Rank &R = ranks[r];
    CUDA_CHECK(cudaSetDevice(r));
    R.w = make_weights(r * E_loc, E_loc, seed, R.stream);
    R.args.local_expert_offset = r * E_loc;
    R.args.local_num_experts = E_loc;
    R.args.w1 = R.w.w1;
    R.args.w1_scale = R.w.w1s;
    R.args.w2 = R.w.w2;
    R.args.w2_scale = R.w.w2s;
    R.sum_bf16 = dev_alloc<uint16_t>(n_out);
    R.acc = dev_alloc<float>(n_out);
    R.sum_fp32 = dev_alloc<uint16_t>(n_out);
  }
  std::vector<ncclComm_t> comms(N);
  std::vector<int> devs(N);
  for (int r = 0; r < N; r++) devs[r] = r;
  NCCL_CHECK(ncclCommInitAll(comms.data(), N, devs.data()));
  for (int r = 0; r < N; r++) ranks[r].comm = comms[r];

  /* ---- one EP step: every GPU its shard, then the all-reduce ---- */
  struct Timing {
    std::vector<float> step_ms, layer_ms, reduce_ms;
  } timing[2];
  for (int variant = 0; variant < 2; variant++) { /* 0: bf16 all-reduce, 1: fp32 */
    for (int it = 0; it < 25; it++) {
      double t0 = seconds_now();
      for (int r = 0; r < N; r++) {
        Rank &R = ranks[r];
        CUDA_CHECK(cudaSetDevice(r));
        CUDA_CHECK(cudaEventRecord(R.ev[0], R.stream));
        MOE_CHECK(dsv3_run_routed(&R.args, R.ws, R.ws_bytes, R.stream));
        CUDA_CHECK(cudaEventRecord(R.ev[1], R.stream));
        if (variant == 1) {
          bf16_to_f32<<<1024, 256, 0, R.stream>>>(R.partial, R.acc, n_out);
          CUDA_CHECK(cudaGetLastError());
        }
      }
      /* one thread drives all GPUs: the per-rank collectives form one group */
      NCCL_CHECK(ncclGroupStart());
      for (int r = 0; r < N; r++) {
        Rank &R = ranks[r];
        if (variant == 0)
          NCCL_CHECK(ncclAllReduce(R.partial, R.sum_bf16, n_out, ncclBfloat16, ncclSum, R.comm, R.stream));
        else
          NCCL_CHECK(ncclAllReduce(R.acc, R.acc, n_out, ncclFloat32, ncclSum, R.comm, R.stream));
      }
      NCCL_CHECK(ncclGroupEnd());
      for (int r = 0; r < N; r++) {
        Rank &R = ranks[r];
        CUDA_CHECK(cudaSetDevice(r));
        if (variant == 1) {
          f32_to_bf16<<<1024, 256, 0, R.stream>>>(R.acc, R.sum_fp32, n_out);
          CUDA_CHECK(cudaGetLastError());
        }
        CUDA_CHECK(cudaEventRecord(R.ev[2], R.stream));
      }
      float layer = 0, reduce = 0;
      for (int r = 0; r < N; r++) {
        Rank &R = ranks[r];
        CUDA_CHECK(cudaSetDevice(r));
        CUDA_CHECK(cudaStreamSynchronize(R.stream));
        float a, b;
        CUDA_CHECK(cudaEventElapsedTime(&a, R.ev[0], R.ev[1]));
        CUDA_CHECK(cudaEventElapsedTime(&b, R.ev[1], R.ev[2]));
        layer = std::max(layer, a);
        reduce = std::max(reduce, b);
      }
      double t1 = seconds_now();
      if (it >= 5) {
        timing[variant].step_ms.push_back((float)((t1 - t0) * 1e3));
        timing[variant].layer_ms.push_back(layer);
        timing[variant].reduce_ms.push_back(reduce);
      }
    }
  }

  /* ---- check: both variants against the single GPU, every rank the same ---- */
  int ok = 1;
  CUDA_CHECK(cudaSetDevice(0));
  CUDA_CHECK(cudaMemcpy(got_bf16.data(), ranks[0].sum_bf16, n_out * 2, cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(got_fp32.data(), ranks[0].sum_fp32, n_out * 2, cudaMemcpyDeviceToHost));
  for (int r = 1; r < N; r++) {
    CUDA_CHECK(cudaSetDevice(r));
    CUDA_CHECK(cudaMemcpy(other.data(), ranks[r].sum_fp32, n_out * 2, cudaMemcpyDeviceToHost));
    if (memcmp(other.data(), got_fp32.data(), n_out * 2) != 0) {
      printf("GPU %d's fp32-reduced output differs from GPU 0's  FAIL\n", r);
      ok = 0;
    }
  }
  size_t differ = 0;
  double max_diff = 0;
  for (size_t i = 0; i < n_out; i++) {
    double d = fabs((double)fp8moe_bf16_to_float(got_bf16[i]) - fp8moe_bf16_to_float(got_fp32[i]));
    differ += got_bf16[i] != got_fp32[i];
    max_diff = std::max(max_diff, d);
  }
  const char *name[2] = {"bf16 all-reduce", "fp32 all-reduce"};
  for (int variant = 0; variant < 2; variant++) {
    int nonfinite;
    double err = rel_l2((variant == 0 ? got_bf16 : got_fp32).data(), ref.data(), n_out, &nonfinite);
    int pass = err <= 1e-2 && nonfinite == 0;
    ok &= pass;
    printf("EP %d GPUs, %s%s: rel L2 vs single GPU = %.3e  %s | step %.3f ms (layer %.3f ms on the slowest GPU, "
           "then %.3f ms to the reduced output)\n",
           N, name[variant], variant == use_fp32 ? " [output]" : "", err, pass ? "OK" : "FAIL",
           median(timing[variant].step_ms), median(timing[variant].layer_ms), median(timing[variant].reduce_ms));
  }
  printf("bf16 vs fp32 all-reduce: %zu of %zu elements differ, max |diff| %.3e%s\n", differ, n_out, max_diff,
         N <= 2 ? " (N <= 2: one rounding either way, expect none)" : "");

  for (int r = 0; r < N; r++) {
    Rank &R = ranks[r];
    CUDA_CHECK(cudaSetDevice(r));
    NCCL_CHECK(ncclCommDestroy(R.comm));
    free_weights(R.w);
    CUDA_CHECK(cudaFree(R.x));
    CUDA_CHECK(cudaFree(R.xs));
    CUDA_CHECK(cudaFree(R.topk));
    CUDA_CHECK(cudaFree(R.ws));
    CUDA_CHECK(cudaFree(R.partial));
    CUDA_CHECK(cudaFree(R.sum_bf16));
    CUDA_CHECK(cudaFree(R.acc));
    CUDA_CHECK(cudaFree(R.sum_fp32));
  }
  printf("ep_nccl: %s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}
