/* fp8moe/workspace.h - where every scratch buffer of a run lives.
 *
 * One function, fp8moe_workspace_layout_shared(), computes every offset from
 * (T, E, K, H, I, S); name_workspace_size*() and name_run*() all call it, so
 * the size a caller allocates and the offsets a run uses cannot disagree. A
 * run lays the buffers out for its own num_tokens, which needs no more bytes
 * than the max_tokens the workspace was sized for (the size grows with T).
 * At T = 0 the layout still holds the per-expert counters (a few hundred
 * bytes), though a run of zero tokens touches no workspace at all.
 *
 * Rows of the grouped GEMMs are (token, slot) pairs sorted by local expert,
 * unpadded: row r of expert e is expert_offset[e] + i; then, with S shared
 * experts, T rows per shared expert s, token order: row expert_offset[E_loc]
 * + s*T + t. The GEMMs mask the last partial tile of each group instead of
 * padding it, so the workspace is proportional to T*(K + S), not to
 * T*K + E*tile.
 *
 *   buffer          type   shape                 written by
 *   slot_expert     int32  [T*K]   local expert of (t,k), or -1   decode/route
 *   slot_weight     fp32   [T*K]   routing weight of (t,k)        decode/route
 *   slot_row        int32  [T*K]   rank in its expert, then       decode, permute
 *                                  GEMM row of (t,k), or -1
 *   expert_count    int32  [E]     rows per local expert          decode/route (atomics)
 *   expert_offset   int32  [E+1+S] exclusive scan of the counts, then the shared groups   scan
 *   tile_counter    int32  [4]     the GEMMs' work counters, 2 each  zeroed by scan
 *   x_perm          fp8    [R, H]        gathered activations     permute
 *   x_perm_scale    fp32   [H/128, ld]   their scales, transposed permute
 *   act             fp8    [R, I]        SwiGLU output, requantized  GEMM1
 *   act_scale       fp32   [I/128, ld]   its scales, transposed      GEMM1
 *   y               bf16   [R, H]        GEMM2 output per row        GEMM2
 *   small_part      fp32   [P, max(2I, H)]  partial sums of the small-T layer (detail/small.cuh)
 *
 * R = T*(K + S) rows at most; ld = R rounded up to 4 (16-byte strides for
 * TMA). y reuses the bytes of x_perm (dead once GEMM1 has run).
 * P = (K + S) * max(8, min(T, L)) rows, L = fp8moe_small_token_limit (0
 * at T = 0 or with the small-T layer compiled out): room for 8 splits of
 * the K loop at one token, 1 from T = 8 to L.
 * The small-T layer uses act / act_scale too, [rows, I] and [rows, I/128].
 */
#ifndef FP8MOE_WORKSPACE_H
#define FP8MOE_WORKSPACE_H

#include <stddef.h>
#include <stdint.h>

#include "tunables.h"

/* Every buffer starts on this boundary (TMA wants 128 bytes; 256 matches
 * cudaMalloc), except tile_counter, which follows expert_offset inside its
 * block. The workspace pointer itself must be aligned to it. */
#define FP8MOE_WORKSPACE_ALIGN 256

/* Byte offsets of every buffer from the workspace start, and the total. */
typedef struct fp8moe_workspace_layout {
  size_t rows;          /* T*(K + S): GEMM rows at most */
  size_t scale_ld;      /* leading dimension of the transposed scale buffers */
  size_t slot_expert, slot_weight, slot_row;
  size_t expert_count, expert_offset, tile_counter;
  size_t x_perm, x_perm_scale, act, act_scale, y;
  size_t small_rows;    /* P: rows of small_part */
  size_t small_part;
  size_t total;         /* bytes */
} fp8moe_workspace_layout;

static inline size_t fp8moe__align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

/* The most slots (T * K) the small-T layer's plan holds (detail/small.cuh,
 * in shared memory): 8 per token up to FP8MOE_SMALL_MAX_TOKENS, at least
 * 128. */
#define FP8MOE__SMALL_MAX_SLOTS (8 * (FP8MOE_SMALL_MAX_TOKENS > 16 ? FP8MOE_SMALL_MAX_TOKENS : 16))

/* Whether experts of hidden size H and intermediate size I count as large
 * for the small-T layer: 3 I H >= FP8MOE_SMALL_LARGE_EXPERT_WEIGHTS (no
 * product that overflows for any int H, I). */
static inline int fp8moe__small_large_experts(int H, int I) {
  return (long long)I * H >= ((long long)FP8MOE_SMALL_LARGE_EXPERT_WEIGHTS + 2) / 3;
}

/* The largest T the small-T layer can take (docs/design.md) for top-k K
 * and experts of hidden size H and intermediate size I: FP8MOE_SMALL_MAX_TOKENS
 * where the experts have fewer than FP8MOE_SMALL_LARGE_EXPERT_WEIGHTS
 * weights (3 I H), FP8MOE_SMALL_LARGE_EXPERT_MAX_TOKENS (at most that)
 * where they have more, and at most FP8MOE__SMALL_MAX_SLOTS / K; whether a
 * run takes it also depends on T and the local experts (detail/small.cuh,
 * small_takes). 0: the path is compiled out. */
static inline int fp8moe_small_token_limit(int K, int H, int I) {
  int t = FP8MOE_SMALL_MAX_TOKENS;
  if (fp8moe__small_large_experts(H, I) && t > FP8MOE_SMALL_LARGE_EXPERT_MAX_TOKENS)
    t = FP8MOE_SMALL_LARGE_EXPERT_MAX_TOKENS;
  if (K > 0 && t > FP8MOE__SMALL_MAX_SLOTS / K) t = FP8MOE__SMALL_MAX_SLOTS / K; /* no product: any int K */
  return t;
}

/* Layout for T tokens of a problem (E experts, K slots, hidden H, inter I)
 * with S shared experts. T < 0 and S < 0 are treated as 0. All arithmetic is
 * in size_t: no int overflow for any int T on a 64-bit host. */
static inline fp8moe_workspace_layout fp8moe_workspace_layout_shared(int T, int E, int K, int H, int I, int S) {
  fp8moe_workspace_layout L;
  size_t t = T > 0 ? (size_t)T : 0, e = (size_t)(E > 0 ? E : 0), k = (size_t)(K > 0 ? K : 0);
  size_t h = (size_t)(H > 0 ? H : 0), in = (size_t)(I > 0 ? I : 0), sh = (size_t)(S > 0 ? S : 0);
  size_t rows = t * (k + sh), off = 0;
  const size_t A = FP8MOE_WORKSPACE_ALIGN;
  L.rows = rows;
  L.scale_ld = fp8moe__align_up(rows, 4);
#define FP8MOE__WS_TAKE(field, bytes) do { L.field = off; off = fp8moe__align_up(off + (bytes), A); } while (0)
  FP8MOE__WS_TAKE(slot_expert, t * k * 4);
  FP8MOE__WS_TAKE(slot_weight, t * k * 4);
  FP8MOE__WS_TAKE(slot_row, t * k * 4);
  FP8MOE__WS_TAKE(expert_count, e * 4);
  /* the tile counters share the offsets' 256-byte block where it has room */
  L.expert_offset = off;
  L.tile_counter = off + fp8moe__align_up((e + 1 + sh) * 4, 16);
  off = fp8moe__align_up(L.tile_counter + 4 * 4, A);
  {
    /* x_perm + x_perm_scale, later y: one region of the larger size */
    size_t xbytes = fp8moe__align_up(rows * h, A) + (h / 128) * L.scale_ld * 4;
    size_t ybytes = rows * h * 2;
    L.x_perm = off;
    L.y = off;
    L.x_perm_scale = off + fp8moe__align_up(rows * h, A);
    off = fp8moe__align_up(off + (xbytes > ybytes ? xbytes : ybytes), A);
  }
  FP8MOE__WS_TAKE(act, rows * in);
  FP8MOE__WS_TAKE(act_scale, (in / 128) * L.scale_ld * 4);
  {
    /* the small-T layer's partial sums, (K + S) * max(8, min(T, its
     * limit)) rows: its splits of (K + S) * T rows fit (detail/small.cuh);
     * never smaller for a larger T */
    const size_t lim = (size_t)fp8moe_small_token_limit(K, H, I), tt = t < lim ? t : lim, st = tt > 8 ? tt : 8;
    L.small_rows = t == 0 || lim == 0 ? 0 : (k + sh) * st;
  }
  FP8MOE__WS_TAKE(small_part, L.small_rows * (2 * in > h ? 2 * in : h) * 4);
#undef FP8MOE__WS_TAKE
  L.total = off;
  return L;
}

/* The layout without shared experts. */
static inline fp8moe_workspace_layout fp8moe_workspace_layout_for(int T, int E, int K, int H, int I) {
  return fp8moe_workspace_layout_shared(T, E, K, H, I, 0);
}

#endif /* FP8MOE_WORKSPACE_H */
