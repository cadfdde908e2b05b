/* tests/gpu_test_permute.cu - permute.cuh (decode_topk, scan, permute_rows) against a CPU model.
 *
 * The front of a run, chained as moe_front chains it (run_front below is the
 * one place that calls the launchers): routed top-k in each form (packed,
 * ids + fp32 weights, ids + bf16 weights, and in place as the non-routed path
 * decodes the router's output) -> slot_expert, slot_weight, expert_count,
 * expert_offset, slot_row, x_perm, x_perm_scale, and with S shared experts
 * the S groups of T rows after the routed ones. The CPU model decodes with
 * fp8moe_ref_decode_topk. Row order inside an expert depends on atomics, so
 * the checks are order-free:
 *  - slot_expert: the local expert, or -1 for invalid and non-local ids;
 *    slot_weight: the decoded weight of every local slot, bit for bit; the
 *    invalid-id counter grows by the number of ids outside [0, E);
 *  - expert_count: the rows of each local expert; expert_offset: their
 *    exclusive scan, then total + s*T for the shared groups;
 *  - slot_row: -1 for a slot that is not local, else a row inside its
 *    expert's range, no row taken twice (so each expert holds exactly its
 *    slots' tokens);
 *  - x_perm row r and its scales x_perm_scale[b][r]: the row and scales of
 *    the token whose slot took r, bit for bit; shared rows hold token t.
 *    In the gather form (row_token, every case runs both forms) row_token[r]
 *    is that token and x_perm / x_perm_scale stay untouched.
 * Every output is poisoned first: what must be written must not be poison,
 * rows and scale columns past the used ones and guard words past every
 * buffer must stay poisoned. Shapes: T = 0, 1, odd and large T, one local
 * expert to 512, expert-parallel shards, empty experts, one expert taking
 * every slot, skewed loads, invalid ids. Fresh random data every run: the seed
 * is printed, FP8MOE_SEED=<n> replays one.
 */
#include "gpu_util.h"

#include <fp8moe/reference.h>
#include <fp8moe/detail/permute.cuh>

#include <limits.h>
#include <stdio.h>
#include <vector>

TestSuite(gpu_permute, .init = fp8moe_test_require_gpu);

namespace {

const uint32_t POISON32 = 0xDEADBEEFu; /* int32 -559038737: never an expert, row or count; as fp32 -6.3e18 */
const uint32_t W_POISON = 0x7FC0FFEEu; /* a NaN payload no weight in these tests has */
const uint8_t X_POISON = 0xA5;         /* fp8 rows; a whole poisoned row never equals a random one */
const int GUARD = 64;                  /* poisoned words past every output */

/* ---- the stage under test ------------------------------------------------ */

/* Device buffers of the front, as moe_front passes them. */
struct front_bufs {
  int T, E_loc, offset, S;
  const int32_t *packed, *ids; /* routed input: packed, or ids + weights */
  const void *weights;
  fp8moe_dtype wdt;
  int *invalid;                /* optional counter */
  int *slot_expert;
  float *slot_weight;
  int *expert_count;           /* [E_loc] */
  int *expert_offset;          /* [E_loc + 1 + S] */
  int *slot_row;
  const uint8_t *x;
  const float *x_scale;
  uint8_t *x_perm;
  float *x_perm_scale;
  long long scale_ld;
  int *row_token;              /* NULL, or the gather form: each row's token, no copies */
};

/* decode -> scan -> permute, as detail::moe_front (fp8moe.cuh) chains them.
 * The only calls of the launchers: a signature change is fixed here. */
template <int E, int K, int H>
void run_front(const front_bufs &b, const char *what) {
  using namespace fp8moe::detail;
  CUDA_OK(cudaMemsetAsync(b.expert_count, 0, sizeof(int) * (size_t)b.E_loc, 0));
  decode_params dp{};
  dp.num_slots = b.T * K;
  dp.local_expert_offset = b.offset;
  dp.local_num_experts = b.E_loc;
  dp.packed = b.packed;
  dp.ids = b.ids;
  dp.weights = b.weights;
  dp.weights_dtype = b.wdt;
  dp.slot_expert = b.slot_expert;
  dp.slot_weight = b.slot_weight;
  dp.expert_count = b.expert_count;
  dp.slot_rank = b.slot_row;
  dp.invalid_id_count = b.invalid;
  fp8moe_status st = decode_topk_launch<E>(dp, 0);
  cr_assert_eq(st, FP8MOE_OK, "%s: decode_topk_launch: %s", what, fp8moe_status_string(st));
  st = scan_expert_counts_launch(b.expert_count, b.expert_offset, b.E_loc, 0, false, b.S, b.T);
  cr_assert_eq(st, FP8MOE_OK, "%s: scan_expert_counts_launch: %s", what, fp8moe_status_string(st));
  permute_params pp{};
  pp.num_tokens = b.T;
  pp.num_local_experts = b.E_loc;
  pp.num_shared = b.S;
  pp.x = b.x;
  pp.x_scale = b.x_scale;
  pp.slot_expert = b.slot_expert;
  pp.expert_offset = b.expert_offset;
  pp.slot_row = b.slot_row;
  pp.x_perm = b.x_perm;
  pp.x_perm_scale = b.x_perm_scale;
  pp.scale_ld = b.scale_ld;
  pp.row_token = b.row_token;
  st = permute_rows_launch<K, H>(pp, 0);
  cr_assert_eq(st, FP8MOE_OK, "%s: permute_rows_launch: %s", what, fp8moe_status_string(st));
  CUDA_OK(cudaDeviceSynchronize());
  CUDA_OK(cudaGetLastError());
}

/* ---- cases --------------------------------------------------------------- */

enum form { PACKED, IDS_FP32, IDS_BF16, IN_PLACE };
const char *const form_name[] = {"packed", "ids+fp32", "ids+bf16", "in place"};

enum pattern {
  UNIFORM,    /* distinct experts per token, uniform over all E */
  LOCAL_ONLY, /* distinct experts per token, all local */
  SKEWED,     /* most slots on two hot local experts */
  ONE_EXPERT, /* every slot on one local expert (a token repeats it) */
  SPARSE,     /* two local experts used, the others empty */
  HOSTILE,    /* a mix of local, non-local and invalid ids */
  NONE_LOCAL  /* every id valid and non-local (needs E_loc < E) */
};
const char *const pattern_name[] = {"uniform", "local only", "skewed", "one expert", "sparse", "hostile",
                                    "none local"};

struct front_case {
  int T, E_loc, offset, S;
  form f;
  pattern pat;
  bool counter;
  bool gather; /* the gather form (FP8MOE_GATHER_A): row_token instead of x_perm */
};

/* An id outside [0, E): packed ids are 16 bits (E..65535), unpacked ones any int. */
int32_t invalid_id(fp8moe_rng *r, int E, form f) {
  switch (rng_next(r) % (f == PACKED ? 3 : 7)) {
  case 0: return E;
  case 1: return 65535;
  case 2: return E + (int32_t)(rng_next(r) % (uint64_t)(65536 - E));
  case 3: return -1;
  case 4: return INT_MIN;
  case 5: return INT_MAX;
  default: return 65536 + (int32_t)(rng_next(r) % 1000000);
  }
}

/* Global ids [T*K] for the case's pattern. */
void make_ids(fp8moe_rng *r, int E, int K, const front_case &c, std::vector<int32_t> &ids) {
  const int T = c.T, lo = c.offset, n = c.E_loc;
  ids.assign((size_t)T * K, 0);
  const int hot0 = lo + (int)(rng_next(r) % (uint64_t)n), hot1 = lo + (int)(rng_next(r) % (uint64_t)n);
  for (int t = 0; t < T; t++) {
    int32_t *row = &ids[(size_t)t * K];
    for (int k = 0; k < K; k++) {
      int32_t id;
      bool distinct = true;
      int tries = 0;
      do {
        switch (c.pat) {
        case UNIFORM: id = (int32_t)(rng_next(r) % (uint64_t)E); break;
        case LOCAL_ONLY: id = lo + (int32_t)(rng_next(r) % (uint64_t)n); break;
        case SKEWED: {
          uint64_t u = rng_next(r) % 10;
          id = u < 5 ? hot0 : u < 8 ? hot1 : (int32_t)(rng_next(r) % (uint64_t)E);
          break;
        }
        case ONE_EXPERT: id = hot0; distinct = false; break;
        case SPARSE: id = (rng_next(r) & 1) ? lo : lo + n - 1; break;
        case HOSTILE: {
          uint64_t u = rng_next(r) % 3;
          id = u == 0 ? invalid_id(r, E, c.f) : u == 1 ? lo + (int32_t)(rng_next(r) % (uint64_t)n)
                                                        : (int32_t)(rng_next(r) % (uint64_t)E);
          distinct = false; /* duplicates are routed input too */
          break;
        }
        default: { /* NONE_LOCAL: below or above the shard */
          int32_t outside = E - n;
          int32_t j = (int32_t)(rng_next(r) % (uint64_t)outside);
          id = j < lo ? j : j + n;
          break;
        }
        }
        if (!distinct || ++tries > 64) break; /* skewed/sparse may run out of distinct choices */
        bool dup = false;
        for (int j = 0; j < k; j++) dup |= row[j] == id;
        if (!dup) break;
      } while (true);
      row[k] = id;
    }
  }
}

/* Build the case, run the front on the device, check everything. */
template <int E, int K, int H>
void check_front(fp8moe_rng *rng, const front_case &c) {
  const int T = c.T, S = c.S, HB = H / FP8MOE_BLOCK;
  const size_t TK = (size_t)T * K, rows_cap = (size_t)T * (K + S);
  char what[256];
  snprintf(what, sizeof what, "E=%d K=%d H=%d T=%d E_loc=%d offset=%d S=%d %s %s%s%s", E, K, H, T, c.E_loc, c.offset,
           S, form_name[c.f], pattern_name[c.pat], c.counter ? " +counter" : "", c.gather ? " gather" : "");

  /* ---- inputs ---- */
  std::vector<int32_t> gid;
  make_ids(rng, E, K, c, gid);
  std::vector<float> w(TK);
  for (size_t i = 0; i < TK; i++) w[i] = (rng_uniform(rng) - 0.25f) * 4.0f; /* negative weights too */
  std::vector<int32_t> packed(TK);
  std::vector<uint16_t> w16(TK);
  for (size_t i = 0; i < TK; i++) {
    packed[i] = fp8moe_topk_pack(gid[i], w[i]);
    w16[i] = fp8moe_bf16_from_float(w[i]);
  }
  std::vector<uint8_t> x((size_t)T * H);
  for (auto &v : x) v = (uint8_t)rng_next(rng);
  std::vector<float> xs((size_t)HB * T);
  for (auto &v : xs) v = ldexpf(0.5f + rng_uniform(rng), (int)(rng_next(rng) % 40) - 20);

  /* ---- the CPU model ---- */
  std::vector<int32_t> mid(TK);
  std::vector<float> mw(TK);
  fp8moe_ref_decode_topk(T, K, c.f == PACKED ? packed.data() : NULL, gid.data(),
                         c.f == IDS_BF16 ? (const void *)w16.data() : (const void *)w.data(),
                         c.f == IDS_BF16 ? FP8MOE_DTYPE_BF16 : FP8MOE_DTYPE_FP32, mid.data(), mw.data());
  std::vector<int> local(TK), count(c.E_loc, 0), offs(c.E_loc + 1 + S);
  int invalid = 0;
  for (size_t i = 0; i < TK; i++) {
    const int32_t id = mid[i];
    local[i] = -1;
    if (id < 0 || id >= E) invalid++;
    else if (id - c.offset >= 0 && id - c.offset < c.E_loc) local[i] = id - c.offset;
    if (local[i] >= 0) count[local[i]]++;
  }
  offs[0] = 0;
  for (int e = 0; e < c.E_loc; e++) offs[e + 1] = offs[e] + count[e];
  const int total = offs[c.E_loc];
  for (int g = 1; g <= S; g++) offs[c.E_loc + g] = total + g * T;
  const size_t used_rows = (size_t)total + (size_t)S * T;

  /* ---- device buffers, outputs poisoned ---- */
  const long long ld = (long long)((rows_cap + 3) / 4 * 4 + 4); /* not the row count: the kernel must use ld */
  std::vector<uint32_t> p_slots(TK + GUARD, POISON32), p_w(TK + GUARD, W_POISON);
  std::vector<uint32_t> p_off(c.E_loc + 1 + S + GUARD, POISON32), p_cnt(c.E_loc + GUARD, POISON32);
  std::vector<uint32_t> p_xs((size_t)HB * ld + GUARD, POISON32);
  std::vector<uint8_t> p_x(rows_cap * H + GUARD * 16, X_POISON);
  int32_t *d_packed = NULL, *d_ids = NULL;
  void *d_w = NULL;
  int *d_slot_expert = (int *)dev_upload(p_slots.data(), p_slots.size());
  float *d_slot_weight = (float *)dev_upload(p_w.data(), p_w.size());
  if (c.f == PACKED) d_packed = dev_upload(packed.data(), TK);
  if (c.f == IDS_FP32 || c.f == IDS_BF16) d_ids = dev_upload(gid.data(), TK);
  if (c.f == IDS_FP32) d_w = dev_upload(w.data(), TK);
  if (c.f == IDS_BF16) d_w = dev_upload(w16.data(), TK);
  if (c.f == IN_PLACE) { /* the non-routed path: the router wrote global ids and fp32 weights into the slots */
    if (TK) CUDA_OK(cudaMemcpy(d_slot_expert, gid.data(), TK * 4, cudaMemcpyHostToDevice));
    if (TK) CUDA_OK(cudaMemcpy(d_slot_weight, w.data(), TK * 4, cudaMemcpyHostToDevice));
    d_ids = d_slot_expert;
    d_w = d_slot_weight;
  }
  const int counter0 = 3; /* the counter is added to, never overwritten */
  int *d_invalid = c.counter ? dev_upload(&counter0, 1) : NULL;
  int *d_cnt = (int *)dev_upload(p_cnt.data(), p_cnt.size());
  int *d_off = (int *)dev_upload(p_off.data(), p_off.size());
  int *d_row = (int *)dev_upload(p_slots.data(), p_slots.size());
  uint8_t *d_x = dev_upload(x.data(), x.size());
  float *d_xs = dev_upload(xs.data(), xs.size());
  uint8_t *d_xp = dev_upload(p_x.data(), p_x.size());
  float *d_xps = (float *)dev_upload(p_xs.data(), p_xs.size());
  std::vector<uint32_t> p_rt(rows_cap + GUARD, POISON32);
  int *d_rt = c.gather ? (int *)dev_upload(p_rt.data(), p_rt.size()) : NULL;

  front_bufs b;
  b.T = T;
  b.E_loc = c.E_loc;
  b.offset = c.offset;
  b.S = S;
  b.packed = d_packed;
  b.ids = d_ids;
  b.weights = d_w;
  b.wdt = c.f == IDS_BF16 ? FP8MOE_DTYPE_BF16 : FP8MOE_DTYPE_FP32;
  b.invalid = d_invalid;
  b.slot_expert = d_slot_expert;
  b.slot_weight = d_slot_weight;
  b.expert_count = d_cnt;
  b.expert_offset = d_off;
  b.slot_row = d_row;
  b.x = d_x;
  b.x_scale = d_xs;
  b.x_perm = d_xp;
  b.x_perm_scale = d_xps;
  b.scale_ld = ld;
  b.row_token = d_rt;
  run_front<E, K, H>(b, what);

  std::vector<int32_t> g_se(TK + GUARD), g_row(TK + GUARD), g_cnt(c.E_loc + GUARD), g_off(c.E_loc + 1 + S + GUARD);
  std::vector<uint32_t> g_w(TK + GUARD), g_xs(p_xs.size());
  std::vector<uint8_t> g_x(p_x.size());
  int g_invalid = 0;
  dev_download(g_se.data(), d_slot_expert, g_se.size());
  dev_download(g_w.data(), (const uint32_t *)d_slot_weight, g_w.size());
  dev_download(g_row.data(), d_row, g_row.size());
  dev_download(g_cnt.data(), d_cnt, g_cnt.size());
  dev_download(g_off.data(), d_off, g_off.size());
  dev_download(g_xs.data(), (const uint32_t *)d_xps, g_xs.size());
  dev_download(g_x.data(), d_xp, g_x.size());
  if (d_invalid) dev_download(&g_invalid, d_invalid, 1);
  std::vector<int32_t> g_rt(c.gather ? p_rt.size() : 0);
  if (d_rt) {
    dev_download(g_rt.data(), d_rt, g_rt.size());
    CUDA_OK(cudaFree(d_rt));
  }
  if (c.f != IN_PLACE) { /* in place, they are the slot buffers */
    CUDA_OK(cudaFree(d_ids));
    CUDA_OK(cudaFree(d_w));
  }
  for (void *p : {(void *)d_packed, (void *)d_slot_expert, (void *)d_slot_weight, (void *)d_invalid, (void *)d_cnt,
                  (void *)d_off, (void *)d_row, (void *)d_x, (void *)d_xs, (void *)d_xp, (void *)d_xps})
    CUDA_OK(cudaFree(p));

  /* ---- decode ---- */
  for (int i = 0; i < GUARD; i++) {
    cr_assert_eq((uint32_t)g_se[TK + i], POISON32, "%s: slot_expert written past [T*K] at +%d", what, i);
    cr_assert_eq(g_w[TK + i], W_POISON, "%s: slot_weight written past [T*K] at +%d", what, i);
    cr_assert_eq((uint32_t)g_row[TK + i], POISON32, "%s: slot_row written past [T*K] at +%d", what, i);
    cr_assert_eq((uint32_t)g_cnt[c.E_loc + i], POISON32, "%s: expert_count written past [E_loc] at +%d", what, i);
    cr_assert_eq((uint32_t)g_off[c.E_loc + 1 + S + i], POISON32, "%s: expert_offset written past [E_loc+1+S] at +%d",
                 what, i);
  }
  for (size_t i = 0; i < TK; i++) {
    cr_assert_eq(g_se[i], local[i], "%s: slot %zu (token %zu, id %d): slot_expert %d, want %d", what, i, i / K, mid[i],
                 g_se[i], local[i]);
    if (local[i] >= 0)
      cr_assert_eq(g_w[i], fp8moe__float_bits(mw[i]), "%s: slot %zu: slot_weight 0x%08x, want 0x%08x (%g)", what, i, g_w[i],
                   fp8moe__float_bits(mw[i]), (double)mw[i]);
  }
  if (c.counter)
    cr_assert_eq(g_invalid, counter0 + invalid, "%s: invalid-id counter %d, want %d + %d", what, g_invalid, counter0,
                 invalid);

  /* ---- scan: the counts (left as decode made them) and offsets ---- */
  for (int e = 0; e < c.E_loc; e++)
    cr_assert_eq(g_cnt[e], count[e], "%s: expert %d: count %d after permute, want %d", what, e, g_cnt[e], count[e]);
  for (int e = 0; e <= c.E_loc + S; e++)
    cr_assert_eq(g_off[e], offs[e], "%s: expert_offset[%d] = %d, want %d", what, e, g_off[e], offs[e]);

  /* ---- permute: rows inside their expert's range, each row taken once ---- */
  std::vector<long long> row_token(rows_cap, -1);
  for (size_t i = 0; i < TK; i++) {
    const int r = g_row[i], e = local[i];
    if (e < 0) {
      cr_assert_eq(r, -1, "%s: slot %zu is not local, slot_row %d", what, i, r);
      continue;
    }
    cr_assert(r >= offs[e] && r < offs[e + 1], "%s: slot %zu of expert %d: row %d outside [%d, %d)", what, i, e, r,
              offs[e], offs[e + 1]);
    cr_assert_eq(row_token[r], -1, "%s: row %d taken by slots of tokens %lld and %zu", what, r, row_token[r], i / K);
    row_token[r] = (long long)(i / K);
  }
  for (int s = 0; s < S; s++)
    for (int t = 0; t < T; t++) row_token[(size_t)total + (size_t)s * T + t] = t;

  if (c.gather) { /* each used row's token; nothing else written, nothing copied */
    for (size_t r = 0; r < used_rows; r++)
      cr_assert_eq(g_rt[r], row_token[r], "%s: row_token[%zu] = %d, want %lld", what, r, g_rt[r], row_token[r]);
    for (size_t r = used_rows; r < g_rt.size(); r++)
      cr_assert_eq((uint32_t)g_rt[r], POISON32, "%s: row_token[%zu] written, past the %zu used rows", what, r,
                   used_rows);
    for (size_t i = 0; i < g_x.size(); i++)
      if (g_x[i] != X_POISON) cr_assert_fail("%s: x_perm byte %zu written by the gather form", what, i);
    for (size_t i = 0; i < g_xs.size(); i++)
      cr_assert_eq(g_xs[i], POISON32, "%s: x_perm_scale word %zu written by the gather form", what, i);
    return;
  }

  /* ---- x_perm, x_perm_scale: each used row is its token's; the rest untouched ---- */
  for (size_t r = 0; r < rows_cap; r++) {
    const uint8_t *got = &g_x[r * H];
    if (r < used_rows) {
      const long long t = row_token[r];
      cr_assert(t >= 0, "test bug: row %zu of %zu used rows has no token", r, used_rows);
      if (memcmp(got, &x[(size_t)t * H], H) != 0) {
        size_t h = 0;
        while (got[h] == x[(size_t)t * H + h]) h++;
        cr_assert_fail("%s: x_perm row %zu (token %lld%s) differs at column %zu: 0x%02x, want 0x%02x", what, r, t,
                       r >= (size_t)total ? ", shared" : "", h, got[h], x[(size_t)t * H + h]);
      }
      for (int bb = 0; bb < HB; bb++)
        cr_assert_eq(g_xs[(size_t)bb * ld + r], fp8moe__float_bits(xs[(size_t)bb * T + t]),
                     "%s: x_perm_scale[%d][%zu] (token %lld) 0x%08x, want 0x%08x", what, bb, r, t,
                     g_xs[(size_t)bb * ld + r], fp8moe__float_bits(xs[(size_t)bb * T + t]));
    }
  }
  /* rows past the used ones, and the guard after the buffer */
  for (size_t i = used_rows * H; i < g_x.size(); i++)
    if (g_x[i] != X_POISON)
      cr_assert_fail("%s: x_perm byte %zu (row %zu) written, past the %zu used rows of %zu", what, i, i / H, used_rows,
                     rows_cap);
  for (int bb = 0; bb < HB; bb++)
    for (long long r = (long long)used_rows; r < ld; r++)
      cr_assert_eq(g_xs[(size_t)bb * ld + r], POISON32, "%s: x_perm_scale[%d][%lld] written, past the %zu used rows",
                   what, bb, r, used_rows);
  for (int i = 0; i < GUARD; i++)
    cr_assert_eq(g_xs[(size_t)HB * ld + i], POISON32, "%s: x_perm_scale written past [H/128, ld]", what);
}

/* Every form and pattern for one shape; the forms rotate with the patterns. */
template <int E, int K, int H>
void front_matrix(const char *name, const int *Ts, int nT, int E_loc, int offset, int S) {
  fp8moe_rng rng = {fp8moe_test_announce_seed(name)};
  int cases = 0;
  for (int ti = 0; ti < nT; ti++)
    for (int p = UNIFORM; p <= NONE_LOCAL; p++) {
      if (p == NONE_LOCAL && E_loc == E) continue;
      for (int f = PACKED; f <= IN_PLACE; f++)
        for (int g = 0; g < 2; g++) { /* the copy, and the gather form */
          front_case c = {Ts[ti], E_loc, offset, S, (form)f, (pattern)p, ((ti + p + f) & 1) != 0, g == 1};
          check_front<E, K, H>(&rng, c);
          cases++;
        }
    }
  fprintf(stderr, "[%s] %d cases passed\n", name, cases);
}

} // namespace

/* ---- shapes ---------------------------------------------------------------- */

Test(gpu_permute, e8_k2_all_local) {
  static const int Ts[] = {1, 2, 7, 333};
  front_matrix<8, 2, 128>("E=8 K=2 H=128, all local", Ts, 4, 8, 0, 0);
}

Test(gpu_permute, e8_k2_shard) {
  static const int Ts[] = {1, 9, 100};
  front_matrix<8, 2, 128>("E=8 K=2 H=128, 3 local at 4", Ts, 3, 3, 4, 0);
}

Test(gpu_permute, e1_k1) {
  static const int Ts[] = {1, 5, 64};
  front_matrix<1, 1, 256>("E=1 K=1 H=256", Ts, 3, 1, 0, 0);
}

Test(gpu_permute, e256_k8_deepseek_shard) {
  static const int Ts[] = {1, 77, 1000};
  front_matrix<256, 8, 7168>("E=256 K=8 H=7168, 32 local at 64", Ts, 3, 32, 64, 0);
}

Test(gpu_permute, e256_k8_one_local) {
  static const int Ts[] = {3, 129};
  front_matrix<256, 8, 1024>("E=256 K=8 H=1024, 1 local at 255", Ts, 2, 1, 255, 0);
}

Test(gpu_permute, e512_k16_every_expert) { /* the scan over all 512 experts */
  static const int Ts[] = {1, 31, 513};
  front_matrix<512, 16, 384>("E=512 K=16 H=384, all local", Ts, 3, 512, 0, 0);
}

Test(gpu_permute, e128_k8_large_t) {
  static const int Ts[] = {4096};
  front_matrix<128, 8, 2048>("E=128 K=8 H=2048, all local", Ts, 1, 128, 0, 0);
}

Test(gpu_permute, shared_experts) {
  static const int Ts[] = {1, 7, 200};
  front_matrix<8, 2, 256>("E=8 K=2 H=256, 1 shared", Ts, 3, 8, 0, 1);
  front_matrix<256, 8, 7168>("E=256 K=8 H=7168, 32 local at 64, 2 shared", Ts, 3, 32, 64, 2);
}

/* T = 0: decode and permute launch nothing; the scan gives zero offsets. */
Test(gpu_permute, zero_tokens) {
  fp8moe_rng rng = {fp8moe_test_announce_seed("T=0")};
  for (int f = PACKED; f <= IN_PLACE; f++) {
    front_case c = {0, 8, 0, 0, (form)f, UNIFORM, f % 2 == 0, f == PACKED};
    check_front<8, 2, 128>(&rng, c);
    c.S = 2;
    check_front<8, 2, 128>(&rng, c);
  }
}
