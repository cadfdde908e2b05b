/* fp8moe/detail/gemm/pipeline.cuh - the position in a ring of pipeline
 * stages, shared by both GEMM paths' producers and consumers.
 *
 * A ring of `count` shared-memory stages is walked in order; every time it
 * wraps, the lap parity flips. On the Hopper path the parity is the
 * mbarrier phase a wait on the current stage needs (the producer waits on
 * `empty` with parity ^ 1, the consumers on `full` with parity); the
 * portable path's cp.async ring only needs the index.
 */
#ifndef FP8MOE_DETAIL_GEMM_PIPELINE_CUH
#define FP8MOE_DETAIL_GEMM_PIPELINE_CUH

#include <stdint.h>

namespace fp8moe {
namespace detail {

struct stage_ring {
  int stage;        /* current stage, 0..count-1 */
  uint32_t phase;   /* parity of the current lap */
  int count;

  __device__ __forceinline__ explicit stage_ring(int stages) : stage(0), phase(0u), count(stages) {}

  __device__ __forceinline__ void advance() {
    if (++stage == count) {
      stage = 0;
      phase ^= 1u;
    }
  }
};

} // namespace detail
} // namespace fp8moe

#endif /* FP8MOE_DETAIL_GEMM_PIPELINE_CUH */
