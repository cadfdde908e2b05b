/* fp8moe/tunables.h - every compile-time knob of fp8moe, in one place.
 *
 * Each is a macro you may define before including any fp8moe header (or on
 * the compiler's command line, -DFP8MOE_MMA_MAX_STAGES=3); each comment says
 * what the knob trades. One naming scheme: FP8MOE_<part>_<knob>, the part
 * being SM90 (the Hopper wgmma GEMM), MMA (the portable mma.sync GEMM),
 * SMALL (the small-T layer) or ROUTING. None of them changes the result of
 * the Hopper or the portable GEMM for a given row: they change tile sizes,
 * pipeline depths and which path runs, and the paths add in different
 * orders (docs/design.md); FP8MOE_SMALL_TASKS also sets how the small-T
 * layer splits its K loops, and with it the order of their additions.
 * docs/performance.md has the measurements behind the defaults.
 *
 * This header is plain C (macros only) and compiles as C11 and C++.
 */
#ifndef FP8MOE_TUNABLES_H
#define FP8MOE_TUNABLES_H

/* Names used before 0.3: refuse them rather than ignore them silently. */
#if defined(FP8MOE_GEMM_MMA_MAX_STAGES) || defined(FP8MOE_GEMM_MMA_SMALL_M_ROWS)
#error "fp8moe 0.3 renamed FP8MOE_GEMM_MMA_* to FP8MOE_MMA_* (tunables.h)"
#endif

/* ---- which GEMM runs ----------------------------------------------------- */

/* Define FP8MOE_DISABLE_SM90 to compile the Hopper path out: the portable
 * path then runs on Hopper too (the tests build the layer this way to cover
 * that path on Hopper). Costs the Hopper path's speed above decode sizes. */

/* Mean rows per group from which the Hopper path takes over on cc 9.0 (a
 * run with batch_invariant set takes it at every size). The host knows only
 * the upper bound m_total = T*K (no sync), so this bounds the mean, exactly
 * without expert parallelism. Decode-sized groups stream the weights faster
 * through the portable path's 16-row tiles; from about 16 rows the Hopper
 * path's 128-row tiles win by far. Cost of a wrong value: 5-10% of the
 * layer below the boundary, up to 40% above it. */
#ifndef FP8MOE_SM90_MIN_ROWS_PER_GROUP
#define FP8MOE_SM90_MIN_ROWS_PER_GROUP 16
#endif

/* Weight elements per expert (3 * I * H: both GEMMs) from which a layer runs
 * both GEMMs on the Hopper path at every size, decode included, as
 * batch_invariant does: large experts stream faster through its deep TMA
 * pipeline (4 stages of 48 KiB in flight per SM, both warpgroups on the
 * short tiles, FP8MOE_SM90_HALF_TILES) and its persistent grid than through
 * the portable 16-row tiles (DeepSeek-V3, 44M: T = 16 3-6% faster; Mixtral-
 * style, 176M: T = 1 24% faster); smaller ones (Qwen3-MoE 235B, 19M; 30B,
 * 4.7M) do not gain. 0 turns the rule off. */
#ifndef FP8MOE_SM90_DECODE_MIN_EXPERT_WEIGHTS
#define FP8MOE_SM90_DECODE_MIN_EXPERT_WEIGHTS (32LL << 20)
#endif

/* ---- the small-T layer (detail/small.cuh) --------------------------------- */

/* Largest T (0..128) that runs the layer as one cooperative kernel (after
 * the routing kernel, non-routed) instead of the general pipeline of 6-7
 * launches; batch_invariant runs never take it, nor runs with T * K above
 * 8 * max(16, this) (512).
 * Experts of FP8MOE_SMALL_LARGE_EXPERT_WEIGHTS or more (3 I H) take it up
 * to T = 8, and up to FP8MOE_SMALL_LARGE_EXPERT_MAX_TOKENS only where few
 * of them are local (detail/small.cuh, small_takes): elsewhere the general
 * path's GEMMs stream their weights as fast and the launches it saves weigh
 * less. Above T = 64 the general path is as fast or faster for small
 * experts too (H100: Qwen3-30B T = 96..128, Qwen3-235B T = 80..128;
 * docs/performance.md). Costs workspace: (K + S) * max(8, min(T, L))
 * rows of max(2I, H) floats, L = fp8moe_small_token_limit(K, H, I)
 * (workspace.h), and one kernel per instantiated shape to compile. 0
 * compiles the path out. */
#ifndef FP8MOE_SMALL_MAX_TOKENS
#define FP8MOE_SMALL_MAX_TOKENS 64
#endif
#ifndef FP8MOE_SMALL_LARGE_EXPERT_WEIGHTS
#define FP8MOE_SMALL_LARGE_EXPERT_WEIGHTS (32LL << 20)
#endif
#ifndef FP8MOE_SMALL_LARGE_EXPERT_MAX_TOKENS
#define FP8MOE_SMALL_LARGE_EXPERT_MAX_TOKENS 16
#endif

/* About the most warp tasks the small-T layer splits a GEMM's K loop
 * into: with few active experts the loop is split across warps so that
 * every SM streams weights; within this bound (and the partial sums'
 * workspace) each GEMM takes the split whose busiest warp has the fewest K
 * blocks. More tasks mean shorter streams per warp and more partial sums
 * to add. */
#ifndef FP8MOE_SMALL_TASKS
#define FP8MOE_SMALL_TASKS 4096
#endif

/* K blocks in each warp's ring of the small-T layer (2..6): STAGES - 1
 * blocks of 5 KiB per warp in flight while one is multiplied; the ring of 12
 * warps takes 12 x STAGES x 5.5 KiB of shared memory (fewer warps where the
 * device has less). */
#ifndef FP8MOE_SMALL_STAGES
#define FP8MOE_SMALL_STAGES 3
#endif

/* 1: in the small-T layer's cooperative launch each warp copies the
 * weights of its first GEMM2 K blocks (FP8MOE_SMALL_STAGES - 1 of them)
 * into its ring as soon as its GEMM1 tasks are done, so they stream during
 * the finalize and the barriers around it, in runs where those are at least
 * a quarter of GEMM2's K blocks (Qwen3-30B T = 1..4). 0: GEMM2 starts its
 * copies after the barrier. */
#ifndef FP8MOE_SMALL_PREISSUE
#define FP8MOE_SMALL_PREISSUE 1
#endif

/* 1: the small-T layer is one cooperative launch (grid-wide barriers
 * between its phases; every CTA must be resident, so a kernel on another
 * stream that holds SMs until this one ends would deadlock it). 0: four
 * launches of the same kernel, one per phase, PDL between them with
 * enable_pdl: no residency requirement, a few microseconds more. */
#ifndef FP8MOE_SMALL_COOPERATIVE
#define FP8MOE_SMALL_COOPERATIVE 1
#endif

/* ---- the Hopper GEMM (detail/gemm/sm90_e4m3_blockscale.cuh) ------------- */

/* Column chunks of 128 per tile for the store epilogues (swiglu_quant always
 * takes 2): 2 gives BN = 256, half the re-reads of A from L2 and 192
 * accumulator registers per consumer thread; 1 gives BN = 128 with 128. 2 is
 * used where N is a multiple of 256. */
#ifndef FP8MOE_SM90_STORE_CHUNKS
#define FP8MOE_SM90_STORE_CHUNKS 2
#endif

/* GEMM1 reads the tokens' activations where they are (hidden_states,
 * gathered row by row in the Hopper kernel's producer warps) instead of a
 * permuted copy, wherever GEMM1 takes the Hopper path: the permutation then
 * only records each row's token (permute.cuh, index_rows), which saves the
 * copy's pass over T * (TOP_K + shared experts) rows. The bits are the same
 * either way. 0: the permuted copy. */
#ifndef FP8MOE_GATHER_A
#define FP8MOE_GATHER_A 0
#endif

/* How the Hopper kernel's gather warps hand a stage of copied A rows to the
 * wgmmas, which read shared memory through the async proxy. 1: each lane
 * waits for its copies of the stage (cp.async.wait_group), fences them into
 * the async proxy and arrives on the stage's full barrier, one stage late
 * (once the next stage's copies are issued; an item's last stage at once).
 * 0: the copies arrive on completion (cp.async.mbarrier.arrive.noinc) and
 * every consumer thread fences after its wait on a full stage, before its
 * wgmmas (a fence per consumer thread and K block in every call, gathered
 * or not). */
#ifndef FP8MOE_SM90_GATHER_LAG
#define FP8MOE_SM90_GATHER_LAG 1
#endif

/* Tiles of at most 64 rows (decode-sized groups, and the short last tile of
 * a larger group) split by columns between the two consumer warpgroups,
 * instead of one warpgroup running them while the other idles: 1 in calls
 * whose groups average at most 64 rows, 2 in every call, 0 never. The bits
 * of every element are the same either way. */
#ifndef FP8MOE_SM90_HALF_TILES
#define FP8MOE_SM90_HALF_TILES 1
#endif

/* Pipeline stages (K blocks in flight) for tiles of 256 and of 128 columns.
 * A stage is 16 KiB of A plus 16 KiB per chunk of B; more stages hide more
 * load latency and cost shared memory (4 x 48 KiB and 6 x 32 KiB are about
 * the 227 KiB an SM gives one CTA). */
#ifndef FP8MOE_SM90_STAGES_BN256
#define FP8MOE_SM90_STAGES_BN256 4
#endif
#ifndef FP8MOE_SM90_STAGES_BN128
#define FP8MOE_SM90_STAGES_BN128 6
#endif

/* Decode-sized store calls (GEMM2): where the default tile gives the call
 * fewer work items (column tiles x m-tiles, each group with rows counting as
 * one m-tile) than this percentage of the SMs, the store GEMM takes
 * 128-column tiles, or 64-column ones where those are still too few, so that
 * more SMs stream the few experts' weights (Mixtral-style at T = 1: 2 experts,
 * 32 tiles of 256 columns for 132 SMs). A narrower tile keeps fewer bytes in
 * flight per SM, so it loses wherever the default already reaches about one
 * item per SM. Every width gives the same bits. Costs two more kernel
 * instances per store shape (compile time); 0 keeps the default tile. */
#ifndef FP8MOE_SM90_NARROW_TILE_PCT
#define FP8MOE_SM90_NARROW_TILE_PCT 50
#endif
/* Pipeline stages of the 64-column tile (16 KiB of A, 8 KiB of B each). */
#ifndef FP8MOE_SM90_STAGES_BN64
#define FP8MOE_SM90_STAGES_BN64 8
#endif

/* How the Hopper GEMM's persistent CTAs share out the work items inside a
 * run (the standalone grouped GEMM always uses the static order): 1, each
 * CTA claims its next item from a counter in the workspace as it frees up,
 * so the CTAs that read one weight tile (the m-tiles of one expert and
 * column tile) start it together whatever their earlier items cost, and
 * the tile is read from HBM once and from L2 by the rest; 0, CTA b runs
 * items b, b + grid, ... , and CTAs that drew cheaper items (a group's
 * short last tile) run ahead of the others and read shared weight tiles
 * out of step. Either way every item is computed alike: the bits do not
 * depend on it. Costs one global atomic per item (about 60 us of work). */
#ifndef FP8MOE_SM90_DYNAMIC_SCHEDULE
#define FP8MOE_SM90_DYNAMIC_SCHEDULE 1
#endif

/* The same for the portable GEMM (mma.sync: decode-sized calls on Hopper,
 * every call on other GPUs), given a counter (the MoE layer passes its
 * workspace's where FP8MOE_SM90_DYNAMIC_SCHEDULE is 1): 1, each CTA claims
 * its next tile as its loads reach it (one global atomic and one block
 * barrier per tile), so the CTAs whose tiles hit L2 (the m-tiles of a hot
 * expert after the first, a group's short last tile) take more of them;
 * 0, CTA b runs tiles b, b + grid, ... Same bits either way. On an H100
 * the claimed tiles take 0.90-0.98 of the static order's time on skewed
 * loads (Qwen3-235B T = 80-224, Qwen3-30B T = 128-224) and 0.90-0.97 on
 * near-uniform ones where the static order leaves a ragged last wave
 * (T = 192-224); 0.99-1.02 elsewhere (Qwen3-30B T = 80-160;
 * docs/performance.md). */
#ifndef FP8MOE_MMA_CLAIMED
#define FP8MOE_MMA_CLAIMED 1
#endif

/* 1: in the MoE layer launched with PDL, each grouped-GEMM CTA (the
 * Hopper kernel, and the portable kernel's 16-row tiles) reads the group
 * offsets and loads the weights of its first tile's first stages before it
 * waits for the kernel ahead of it, so they stream while that kernel's
 * last CTAs run (GEMM2's during GEMM1's tail, GEMM1's during the
 * permute's); the activations follow once that kernel is done. 0: every
 * load waits. The bits are the same either way. */
#ifndef FP8MOE_EARLY_WEIGHTS
#define FP8MOE_EARLY_WEIGHTS 1
#endif

/* Tiles of at most this many rows (a group's short last tile, a decode
 * group) computed with the operands swapped: the weight tile on wgmma M
 * (each consumer warpgroup 64-row blocks of its half) and the tile's rows
 * on N (32 or 64 wide), so such a tile costs in proportion to its width
 * rather than a whole 64-row wgmma per warpgroup per 128 columns; its
 * stores are per element. It takes precedence over the half tiles. The bits
 * of every element are the same either way. 0 (the default) turns it off,
 * 32 and 64 are the other values; off by default because the layer gains
 * no more than its run-to-run spread (performance.md, tried and rejected). */
#ifndef FP8MOE_SM90_SWAP_TAIL_ROWS
#define FP8MOE_SM90_SWAP_TAIL_ROWS 0
#endif

/* 2: calls whose groups average more than 64 rows (prefill sizes) run the
 * Hopper GEMM in 2-CTA clusters: the two CTAs of a cluster take the two
 * m-tiles of a pair at the same column tile and, when both are of one
 * group, each loads half of the weight tile and multicasts it to both, so
 * the pair reads it from L2 once. 1 (the default): no clusters, because the
 * pairs' coupled pipelines cost more than the L2 reads they save
 * (performance.md, tried and rejected). The bits are the same either way. */
#ifndef FP8MOE_SM90_CLUSTER
#define FP8MOE_SM90_CLUSTER 1
#endif

/* Consumer warpgroups of the Hopper store GEMM (GEMM2) in calls whose
 * groups average more than 64 rows: 2, tiles of 128 rows x 256 columns; 3,
 * tiles of 192 x 128, one warpgroup per 64 rows (same bits; 3-7% slower in
 * the layer at T >= 4096: the 192-row tiles read 11% more bytes per FLOP
 * and pad groups of about 128 rows, docs/performance.md). */
#ifndef FP8MOE_SM90_STORE_CONSUMERS
#define FP8MOE_SM90_STORE_CONSUMERS 2
#endif
#if FP8MOE_SM90_STORE_CONSUMERS != 2 && FP8MOE_SM90_STORE_CONSUMERS != 3
#error "FP8MOE_SM90_STORE_CONSUMERS: 2 or 3"
#endif

/* Hopper GEMM main loop of the 256-column tiles: 0 runs each K block as two
 * 128-column slices, each waited for and then promoted; 1 runs it as four
 * 64-column slices with two temporaries, one slice's wgmmas in flight while
 * the one before is promoted (same bits; 4-7% slower on an H100: each
 * slice reads its A rows from shared memory again, docs/performance.md). */
#ifndef FP8MOE_SM90_PIPELINE
#define FP8MOE_SM90_PIPELINE 0
#endif
#if FP8MOE_SM90_PIPELINE != 0 && FP8MOE_SM90_PIPELINE != 1
#error "FP8MOE_SM90_PIPELINE: 0 or 1"
#endif

/* Register split between the producer warpgroup and each of the two
 * consumer warpgroups after setmaxnreg (multiples of 8; producer + 2 x
 * consumer <= 504 so three warpgroups fit 64K registers). The consumers
 * hold the accumulators (up to 128 fp32) and the promotion temporary (64),
 * the producer an item's TMA coordinates: 40/232 is free of spills (48/224
 * too, and no faster). */
#ifndef FP8MOE_SM90_PRODUCER_REGS
#define FP8MOE_SM90_PRODUCER_REGS 40
#endif
#ifndef FP8MOE_SM90_CONSUMER_REGS
#define FP8MOE_SM90_CONSUMER_REGS 232
#endif

/* ---- the portable GEMM (detail/gemm/mma_e4m3_blockscale.cuh) ------------ */

/* Deepest cp.async ring the host may choose (2..4). Each stage is 18-24 KiB
 * (store) or 34-40 KiB (swiglu) of shared memory; deeper hides more load
 * latency. The host takes fewer stages where the device has less shared
 * memory (sm_89: 99 KiB), or where one stage less lets two CTAs share an SM. */
#ifndef FP8MOE_MMA_MAX_STAGES
#define FP8MOE_MMA_MAX_STAGES 4
#endif

/* Mean rows per group (m_total / groups) under which 16-row tiles run
 * instead of 64-row ones: less of the tensor cores spent on zero rows of
 * small groups, but B streamed once per 16 rows instead of per 64. */
#ifndef FP8MOE_MMA_SMALL_M_ROWS
#define FP8MOE_MMA_SMALL_M_ROWS 32
#endif

/* ---- routing (detail/routing.cuh) ---------------------------------------- */

/* 1: exp in fp64, rounded once, so sigmoid and softmax match a correctly
 * rounded expf and ignore --use_fast_math; costs N fp64 exps per lane
 * (DeepSeekV3, Default, RenormalizeNaive): microseconds at T = 16384 on
 * Hopper, ~10x that on GPUs with 1/64-rate fp64 (sm_89). 0: CUDA's expf
 * (2 ulp), so selection may differ from the reference where keys are within
 * a few ulp. */
#ifndef FP8MOE_ROUTING_EXACT_EXP
#define FP8MOE_ROUTING_EXACT_EXP 1
#endif

/* Tokens (warps) per routing CTA: small CTAs spread T = 1..16 over few SMs'
 * launch work and large T evenly; 4 is a good middle. */
#ifndef FP8MOE_ROUTING_WARPS
#define FP8MOE_ROUTING_WARPS 4
#endif

#endif /* FP8MOE_TUNABLES_H */
